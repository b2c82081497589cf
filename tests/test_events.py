"""The event stream from outside, on real clusters: what a customer and an admin read of
payments, refunds and admin actions, in one order with no gap; a watcher seeing live events
and resuming from its cursor exactly once; the same stream on every replica, and an event
decided on one replica seen by a watcher on another within a second; retention refusing a
cursor too old with the oldest sequence kept; bad input refused; the command lines, with
Ctrl-C ending --follow cleanly and printing the cursor."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from devtools.cluster import GATEWAY, Cluster
from minipay.client.api import GatewayClient
from minipay.client.events import Event
from minipay.v1 import events_pb2, events_pb2_grpc
from server.common.settings import REPO_ROOT
from tests import command_lines
from tests.conftest import ClusterFactory
from tests.helpers import (
    ABORTED,
    COMMITTED,
    SEED_ACCOUNTS,
    Client,
    admin,
    aio_channel,
    customer,
    postgres_available,
    wait_until,
)

CAROL = SEED_ACCOUNTS["carol"]


def all_events(client: Client, after: int = 0, types: tuple[str, ...] = ()) -> list[Event]:
    found: list[Event] = []
    while True:
        page = client.events(after, 500, types)
        found += page.events
        if not page.events:
            return found
        after = page.next_after_sequence


@pytest.mark.in_process
def test_customers_and_admins_read_their_events_in_one_order(cluster: Cluster, certs: Path) -> None:
    alice, carol, boss = (
        customer(cluster, certs, "alice"),
        customer(cluster, certs, "carol", "client-2"),
        admin(cluster, certs),
    )
    paid = alice.pay(*CAROL, 2_500)
    assert paid.status == COMMITTED
    refund = carol.refund(paid.payment_id, 1_000)
    assert refund.status == COMMITTED
    failed = alice.pay(*CAROL, 10**9)  # more than alice has
    assert failed.status == ABORTED
    boss.set_disabled("beta", "dave", True)
    boss.set_disabled("beta", "dave", False)
    boss.deposit(*CAROL, 5_000, idempotency_key="events-deposit")
    boss.deposit(*CAROL, 5_000, idempotency_key="events-deposit")  # a replay: no second event

    every = all_events(boss)
    sequences = [e.sequence for e in every]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), "a gap"
    kinds = [e.type for e in every if e.type != "key.rotated"]
    assert kinds == [
        "payment.committed",
        "refund.committed",
        "payment.aborted",
        "user.disabled",
        "user.enabled",
        "deposit.applied",
    ]
    assert every[-2].user is not None and every[-2].user.username == "dave"
    deposit = every[-1].deposit
    assert deposit is not None and (deposit.amount_minor_units, deposit.admin) == (5_000, "admin")
    aborted = next(e for e in every if e.type == "payment.aborted")
    assert aborted.payment is not None and aborted.payment.reason_code == "INSUFFICIENT_FUNDS"

    # The payer reads its payments, committed or not, with its reasons; and the refund back.
    mine = all_events(alice)
    assert [(e.type, e.payment.payment_id) for e in mine if e.payment] == [
        ("payment.committed", paid.payment_id),
        ("refund.committed", refund.payment_id),
        ("payment.aborted", failed.payment_id),
    ]
    assert mine[2].payment is not None and mine[2].payment.reason_code == "INSUFFICIENT_FUNDS"
    # The payee never learns of a payment to them that was aborted.
    theirs = all_events(carol)
    assert [e.type for e in theirs] == ["payment.committed", "refund.committed", "deposit.applied"]
    assert theirs[-1].deposit is not None and theirs[-1].deposit.admin == ""  # not an admin
    assert theirs[0].payment is not None and theirs[0].payment.refundable_minor_units == 2_500
    # Filters, and a cursor past others' events.
    only = all_events(boss, types=("refund.committed",))
    assert [e.payment.payment_id for e in only if e.payment] == [refund.payment_id]
    page = carol.events(0, 500)
    assert page.next_after_sequence == every[-1].sequence  # moved past what is not carol's


@pytest.mark.in_process
def test_a_watcher_sees_live_events_and_resumes_exactly_once(cluster: Cluster, certs: Path) -> None:
    alice, boss = customer(cluster, certs, "alice"), admin(cluster, certs)
    first = alice.pay(*CAROL, 100)

    async def watch(after: int, wanted: int) -> list[tuple[int, str, float]]:
        seen: list[tuple[int, str, float]] = []
        async with GatewayClient(boss.config, boss.token) as client:
            async for page in client.watch_events(after, ("payment.committed",)):
                for event in page.events:
                    assert event.payment is not None
                    seen.append((event.sequence, event.payment.payment_id, time.time()))
                if len(seen) >= wanted:
                    return seen
        return seen

    async def scenario() -> tuple[list[tuple[int, str, float]], dict[str, float]]:
        watcher = asyncio.create_task(watch(0, 4))
        await asyncio.sleep(0.5)
        paid_at = {}
        for _ in range(3):
            done = await asyncio.to_thread(alice.pay, *CAROL, 100)
            paid_at[done.payment_id] = time.time()
        return await asyncio.wait_for(watcher, 30), paid_at

    seen, paid_at = asyncio.run(scenario())
    assert seen[0][1] == first.payment_id
    assert [pid for _, pid, _ in seen[1:]] == list(paid_at)
    for _, payment_id, at in seen[1:]:
        assert at - paid_at[payment_id] < 1.0, "a live event took more than a second"
    # Resuming from the second event's cursor gives exactly the ones after it.
    later = asyncio.run(watch(seen[1][0], 2))
    assert [pid for _, pid, _ in later] == [pid for _, pid, _ in seen[2:4]]


@pytest.mark.in_process
def test_bad_cursors_page_sizes_and_types_are_refused(cluster: Cluster, certs: Path) -> None:
    alice = customer(cluster, certs, "alice")
    alice.pay(*CAROL, 100)
    head = all_events(admin(cluster, certs))[-1].sequence

    async def call(request: events_pb2.EventsListRequest) -> grpc.aio.AioRpcError:
        async with aio_channel(cluster, certs, GATEWAY, "client-1") as channel:
            stub = events_pb2_grpc.EventsStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.List(request, metadata=[("authorization", f"Bearer {alice.token}")])
            return raised.value

    cases = [
        (events_pb2.EventsListRequest(after_sequence=-1), "after_sequence"),
        (events_pb2.EventsListRequest(after_sequence=head + 5), "past the last event"),
        (events_pb2.EventsListRequest(page_size=501), "page_size"),
        (events_pb2.EventsListRequest(types=[99]), "types"),  # type: ignore[list-item]
        (
            events_pb2.EventsListRequest(types=[events_pb2.EVENT_TYPE_UNSPECIFIED]),
            "not an event type",
        ),
    ]
    for request, words in cases:
        error = asyncio.run(call(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert words in (error.details() or ""), error.details()
    # A customer does not read the audit log.
    assert alice.error("audit_page").code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.in_process
def test_a_cursor_older_than_what_is_kept_is_out_of_range(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = make_cluster(env={"MINIPAY_EVENT_RETENTION": "1"})
    alice = customer(cluster, certs, "alice")
    for _ in range(3):
        alice.pay(*CAROL, 100)
    boss = admin(cluster, certs)
    wait_until(lambda: not boss.events(0, 10).events, what="events pruned")  # 1 s, then a pass
    error = boss.error("events", 1, 10)
    assert error.code == grpc.StatusCode.OUT_OF_RANGE
    assert error.reason == "CURSOR_EXPIRED"
    oldest = int(error.metadata["oldest_sequence"])
    assert oldest > 3
    # From 0, or from the oldest kept, it goes on: a new event is there.
    fresh = alice.pay(*CAROL, 100)
    found = boss.events(oldest - 1, 10).events
    assert [e.payment.payment_id for e in found if e.payment] == [fresh.payment_id]


@pytest.mark.skipif(not postgres_available(), reason="replicas need PostgreSQL")
def test_every_replica_serves_one_stream_and_watchers_see_the_others_events(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = make_cluster("postgres", gateways=2)
    first, second = cluster.gateway_address, cluster.gateway_addresses.split(",")[1]
    alice = customer(cluster, certs, "alice")
    boss_first = admin(cluster, certs)
    boss_second = Client(cluster, certs, "admin", boss_first.token, gateway=second)

    async def watch_second(wanted: int) -> list[tuple[str, float]]:
        seen: list[tuple[str, float]] = []
        async with GatewayClient(boss_second.config, boss_second.token) as client:
            async for page in client.watch_events(0, ("payment.committed",)):
                seen += [(e.payment.payment_id, time.time()) for e in page.events if e.payment]
                if len(seen) >= wanted:
                    return seen
        return seen

    async def scenario() -> tuple[list[tuple[str, float]], dict[str, float]]:
        watcher = asyncio.create_task(watch_second(5))
        await asyncio.sleep(0.5)
        paid_at = {}
        for _ in range(5):
            done = await asyncio.to_thread(alice.pay, *CAROL, 100)  # through the first replica
            paid_at[done.payment_id] = time.time()
        return await asyncio.wait_for(watcher, 30), paid_at

    assert alice.config.gateway == first
    seen, paid_at = asyncio.run(scenario())
    assert [pid for pid, _ in seen] == list(paid_at)
    assert max(at - paid_at[pid] for pid, at in seen) < 1.0
    listed_first = [(e.sequence, e.type) for e in all_events(boss_first)]
    listed_second = [(e.sequence, e.type) for e in all_events(boss_second)]
    assert listed_first == listed_second


@pytest.mark.in_process
def test_the_command_lines_list_and_follow_events(
    cluster: Cluster, certs: Path, tmp_path: Path
) -> None:
    """The follower runs as a process (Ctrl-C ends it, with the cursor to resume from); the
    other commands run their main() in this process (tests/command_lines.py)."""
    given = command_lines.variables(certs, cluster.gateway_address, tmp_path / "client", "client-1")

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return command_lines.run_here("client", args, given, stdin)

    assert (
        run(
            "register",
            "--bank",
            "alpha",
            "--account",
            "A-1001",
            "--username",
            "alice",
            "--password-stdin",
            stdin="alice-dev-pass\n",
        ).returncode
        == 0
    )
    assert (
        run("login", "--username", "alice", "--password-stdin", stdin="alice-dev-pass\n").returncode
        == 0
    )
    follower = subprocess.Popen(
        [sys.executable, "-m", "client", "events", "--follow", "--json"],
        env=command_lines.process_environment(given),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        paid = json.loads(
            run(
                "--json", "pay", "--to-bank", "beta", "--to-account", "B-2001", "--amount", "1.25"
            ).stdout
        )
        assert follower.stdout is not None
        line: dict[str, Any] = json.loads(follower.stdout.readline())
        assert line["type"] == "payment.committed"
        assert line["payment"]["payment_id"] == paid["payment_id"]
        assert line["payment"]["amount_minor_units"] == 125
    finally:
        follower.send_signal(signal.SIGINT)
        _, errors = follower.communicate(timeout=20)
    assert follower.returncode == 0, errors
    assert f"resume with --after {line['sequence']}" in errors
    assert "Traceback" not in errors

    listed = run("events", "--type", "payment.committed")
    assert listed.returncode == 0, listed.stderr
    assert paid["payment_id"] in listed.stdout and "1.25 USD" in listed.stdout
    assert f"next: --after {line['sequence']}" in listed.stderr
    bad = run("events", "--type", "payment.nothing")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    gone = run("events", "--after", "999999")
    assert gone.returncode == 1 and "past the last event" in gone.stderr
    assert "Traceback" not in gone.stderr
