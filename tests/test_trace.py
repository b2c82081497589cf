"""A payment's story (``GetPaymentTrace``) from real clusters: committed, aborted for each
cause (a no vote, the timeout, a bank that cannot be reached), recovered (a bank asked after
the gateway was killed) and taken over by another replica (PostgreSQL, kill -9 of the owner
mid-way); each read by its payer, its payee, a stranger and an admin, and through the CLIs.

Judged: the steps a sequence diagram of two-phase commit would draw, in order, each named for
the replica that took it, with sent/answered times that make sense; the payer sees every
step, the payee a committed payment's steps without the payer's bank's votes or the payer's
request details, a stranger the very answer a payment that does not exist gets, an admin
everything.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from devtools.cluster import GATEWAY, Cluster
from minipay.client.api import ApiError, PaymentTrace
from minipay.client.trace import TraceStep
from minipay.client.trace_text import render_text
from server.common.settings import GatewaySettings, environment
from tests import command_lines
from tests.conftest import ClusterFactory
from tests.helpers import (
    ABORTED,
    COMMITTED,
    SEED_ACCOUNTS,
    Client,
    admin,
    assert_atomic,
    customer,
    postgres_available,
    server_env,
    settle,
    total_money,
    wait_until,
)

PAYEE = SEED_ACCOUNTS["carol"]  # the payee of every payment here
STRANGER_CERT = "client-3"
Story = list[tuple[str, str, str]]  # (kind, bank, outcome) of each step


class Readers:
    """The four who may ask for a payment's story: alice (the payer), carol (the payee),
    dave (a stranger, at the payee's bank) and an admin."""

    def __init__(self, cluster: Cluster, certs: Path, gateway: str = "") -> None:
        self.payer = customer(cluster, certs, "alice")
        self.payee = customer(cluster, certs, "carol", cert="client-2")
        self.stranger = customer(cluster, certs, "dave", cert=STRANGER_CERT)
        self.admin = admin(cluster, certs)
        if gateway:  # read through one replica
            for client in (self.payer, self.payee, self.stranger, self.admin):
                client.config = type(client.config)(
                    **{**vars(client.config), "gateway": cluster.address(gateway)}
                )

    def traces(self, payment_id: str) -> dict[str, PaymentTrace | ApiError]:
        def read(work: Callable[[], PaymentTrace]) -> PaymentTrace | ApiError:
            try:
                return work()
            except ApiError as error:
                return error

        return {
            "payer": read(lambda: self.payer.payment_trace(payment_id)),
            "payee": read(lambda: self.payee.payment_trace(payment_id)),
            "stranger": read(lambda: self.stranger.payment_trace(payment_id)),
            "admin": read(lambda: self.admin.admin_payment_trace(payment_id)),
        }


def story(trace: PaymentTrace | ApiError) -> Story:
    assert isinstance(trace, PaymentTrace), trace
    return [(step.kind, step.bank, step.outcome) for step in trace.steps]


# The order two-phase commit takes; steps of one phase (two banks' votes) in any order, and a
# replay or a bank's question whenever it came.
PHASES = ("RECORDED", "VOTED", "DECIDED", "TAKEN_OVER", "NOT_ACKNOWLEDGED", "FINISHED")


def assert_story(trace: PaymentTrace | ApiError, *expected: tuple[str, str, str]) -> None:
    """TRACE has exactly the EXPECTED steps (kind, bank, outcome), in the order of PHASES."""
    told = story(trace)
    assert sorted(told) == sorted(expected), told
    phases = [PHASES.index(kind) for kind, _, _ in told if kind in PHASES]
    assert phases == sorted(phases), told


def steps_of(trace: PaymentTrace | ApiError, kind: str, bank: str = "") -> list[TraceStep]:
    assert isinstance(trace, PaymentTrace), trace
    return [s for s in trace.steps if s.kind == kind and (not bank or s.bank == bank)]


def assert_not_found(error: PaymentTrace | ApiError, payment_id: str) -> None:
    """Exactly what a payment that does not exist gets."""
    assert isinstance(error, ApiError), error
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND")
    assert error.metadata == {"payment_id": payment_id}
    assert error.message == "no payment with this id that you made or received"


def assert_sane_times(trace: PaymentTrace) -> None:
    """Every message is answered after it left; the story starts at the record."""
    assert trace.steps[0].kind == "RECORDED" and trace.steps[0].elapsed_ms == 0
    for step in trace.steps:
        assert step.elapsed_ms >= 0, step
        if step.sent_at is not None:
            assert step.sent_at <= step.at, step
        assert step.replica, step


def assert_payee_view(payer: PaymentTrace | ApiError, payee: PaymentTrace | ApiError) -> None:
    """The payee's story: the payer's without the payer's bank's votes and questions, the
    payer's replays, or the payer's request details."""
    assert isinstance(payer, PaymentTrace) and isinstance(payee, PaymentTrace)
    payer_bank = payer.payer.bank
    expected = [
        step
        for step in payer.steps
        if step.kind != "REPLAYED"
        and not (step.kind in ("VOTED", "NOT_ACKNOWLEDGED", "ASKED") and step.bank == payer_bank)
    ]
    assert [(s.kind, s.bank, s.outcome, s.at) for s in payee.steps] == [
        (s.kind, s.bank, s.outcome, s.at) for s in expected
    ]
    assert all(not step.attributes for step in payee.steps if step.kind == "RECORDED")
    assert payee.reason_code == ""


def paid(client: Client, amount: int, key: str = "") -> Any:
    return client.pay(*PAYEE, amount, idempotency_key=key or str(uuid.uuid4()))


# -- committed ---------------------------------------------------------------------------------


@pytest.mark.in_process
def test_a_committed_payment_as_each_reader_sees_it(
    make_cluster: ClusterFactory, certs: Path, tmp_path: Path
) -> None:
    cluster = make_cluster()
    readers = Readers(cluster, certs)
    key = str(uuid.uuid4())
    payment = paid(readers.payer, 1234, key)
    again = paid(readers.payer, 1234, key)  # a replay of the key
    assert payment.status == COMMITTED and again.replayed
    settle(cluster)
    traces = readers.traces(payment.payment_id)
    payer = traces["payer"]
    assert isinstance(payer, PaymentTrace)
    print(render_text(payer))
    assert_story(
        payer,
        ("RECORDED", "", ""),
        ("VOTED", "alpha", "YES"),
        ("VOTED", "beta", "YES"),
        ("DECIDED", "", "COMMIT"),
        ("REPLAYED", "", "COMMITTED"),
        ("ACKNOWLEDGED", "alpha", "COMMIT"),
        ("ACKNOWLEDGED", "beta", "COMMIT"),
        ("FINISHED", "", ""),
    )
    assert_sane_times(payer)
    assert {step.replica for step in payer.steps} == {GATEWAY}
    recorded = payer.steps[0]
    assert recorded.attributes == {"request_id": payment.request_id, "certificate": "client-1"}
    assert steps_of(payer, "REPLAYED")[0].attributes == {"request_id": again.request_id}
    decided = steps_of(payer, "DECIDED")[0]
    assert decided.detail == "every vote yes" and decided.round
    assert {s.round for s in steps_of(payer, "VOTED")} == {decided.round}
    assert payer.status.value == "COMMITTED" and payer.payment_id == payment.payment_id

    assert_payee_view(payer, traces["payee"])
    assert_not_found(traces["stranger"], payment.payment_id)
    assert_not_found(readers.stranger.error("payment_trace", "pay_" + "0" * 32), "pay_" + "0" * 32)
    admin_view = traces["admin"]
    assert isinstance(admin_view, PaymentTrace)
    assert admin_view.steps == payer.steps and admin_view.reason_code == ""
    assert (
        readers.admin.error("admin_payment_trace", "pay_nobody").code == grpc.StatusCode.NOT_FOUND
    )

    # The command lines print the same story, as a timeline or as JSON.
    cli = TraceCli(cluster, certs, tmp_path)
    text = cli.ok("client", readers.payer.token, "trace", payment.payment_id)
    assert text.splitlines()[0] == f"payment {payment.payment_id} COMMITTED"
    assert "COMMIT (every vote yes)" in text and "finished: every bank acknowledged" in text
    document = json.loads(
        cli.ok("client", readers.payer.token, "trace", payment.payment_id, "--json")
    )
    assert [s["kind"] for s in document["steps"]] == [s.kind for s in payer.steps]
    assert document["request_id"]
    admin_text = cli.ok("admin", readers.admin.token, "trace", payment.payment_id)
    assert admin_text.splitlines()[0] == f"payment {payment.payment_id} COMMITTED"
    refused = cli.run(
        "client", readers.stranger.token, "trace", payment.payment_id, cert=STRANGER_CERT
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: NOT_FOUND (PAYMENT_NOT_FOUND)"), refused.stderr


class TraceCli:
    """The client's and the admin's command lines (their main() in this process:
    tests/command_lines.py) against CLUSTER, logged in with a token."""

    def __init__(self, cluster: Cluster, certs: Path, home: Path) -> None:
        self.cluster, self.certs, self.home = cluster, certs, home

    def run(
        self, tool: str, token: str, *args: str, cert: str = ""
    ) -> subprocess.CompletedProcess[str]:
        cert = cert or ("admin" if tool == "admin" else "client-1")
        home = self.home / f"{tool}-{cert}"
        session = "admin-session.json" if tool == "admin" else "session.json"
        home.mkdir(parents=True, exist_ok=True)
        (home / session).write_text(
            json.dumps({"token": token, "username": "someone", "role": tool, "expires_at": 0})
        )
        given = command_lines.variables(self.certs, self.cluster.gateway_address, home, cert)
        result = command_lines.run_here(tool, args, given)
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result

    def ok(self, tool: str, token: str, *args: str) -> str:
        result = self.run(tool, token, *args)
        assert result.returncode == 0, result.stderr
        return result.stdout


# -- aborted, for each cause ---------------------------------------------------------------------


def assert_aborted_views(traces: dict[str, PaymentTrace | ApiError], payment_id: str) -> None:
    """An aborted payment: the payer and the admin see the same whole story, with the
    reason; the payee and the stranger are told there is no such payment."""
    payer, admin_view = traces["payer"], traces["admin"]
    assert isinstance(payer, PaymentTrace) and isinstance(admin_view, PaymentTrace)
    assert admin_view.steps == payer.steps
    assert payer.status.value == "ABORTED" and payer.reason_code
    assert_sane_times(payer)
    assert_not_found(traces["payee"], payment_id)
    assert_not_found(traces["stranger"], payment_id)


@pytest.mark.in_process
def test_aborted_by_a_no_vote(make_cluster: ClusterFactory, certs: Path) -> None:
    cluster = make_cluster()
    readers = Readers(cluster, certs)
    payment = paid(readers.payer, 10**9)  # far more than alice has
    assert (payment.status, payment.reason_code) == (ABORTED, "INSUFFICIENT_FUNDS")
    settle(cluster)
    traces = readers.traces(payment.payment_id)
    assert_aborted_views(traces, payment.payment_id)
    payer = traces["payer"]
    assert_story(
        payer,
        ("RECORDED", "", ""),
        ("VOTED", "alpha", "INSUFFICIENT_FUNDS"),
        ("VOTED", "beta", "YES"),
        ("DECIDED", "", "ABORT"),
        ("ACKNOWLEDGED", "alpha", "ABORT"),
        ("ACKNOWLEDGED", "beta", "ABORT"),
        ("FINISHED", "", ""),
    )
    assert steps_of(payer, "VOTED", "alpha")[0].detail  # the bank's words
    assert steps_of(payer, "DECIDED")[0].detail == "alpha voted no: INSUFFICIENT_FUNDS"


@pytest.mark.in_process
def test_aborted_by_the_timeout(make_cluster: ClusterFactory, certs: Path) -> None:
    timeout = 2.0
    cluster = make_cluster(
        env=server_env(txn_timeout=timeout), faults={"beta": f"delay_prepare={timeout + 1}"}
    )
    readers = Readers(cluster, certs)
    payment = paid(readers.payer, 500)
    assert (payment.status, payment.reason_code) == (ABORTED, "TIMEOUT")
    settle(cluster)
    traces = readers.traces(payment.payment_id)
    assert_aborted_views(traces, payment.payment_id)
    payer = traces["payer"]
    assert isinstance(payer, PaymentTrace)
    print(render_text(payer))
    told = story(payer)
    assert told[:4] == [
        ("RECORDED", "", ""),
        ("VOTED", "alpha", "YES"),
        ("VOTED", "beta", "TIMEOUT"),
        ("DECIDED", "", "ABORT"),
    ], told
    assert told[-1] == ("FINISHED", "", "")
    assert ("ACKNOWLEDGED", "alpha", "ABORT") in told and ("ACKNOWLEDGED", "beta", "ABORT") in told
    [late] = steps_of(payer, "VOTED", "beta")
    assert late.sent_at is not None
    waited = (late.at - late.sent_at).total_seconds()
    assert timeout - 0.2 <= waited <= timeout + 1, waited
    assert late.detail == f"no vote in {round(waited * 1000)} ms"
    assert steps_of(payer, "DECIDED")[0].detail == "beta did not vote within the timeout"


def test_aborted_as_a_bank_could_not_be_reached(make_cluster: ClusterFactory, certs: Path) -> None:
    cluster = make_cluster()
    readers = Readers(cluster, certs)
    cluster.kill("beta")
    payment = paid(readers.payer, 700)
    assert (payment.status, payment.reason_code) == (ABORTED, "BANK_UNAVAILABLE")
    time.sleep(1.0)  # the Abort to beta goes unacknowledged, and is sent again, and again
    cluster.start_process("beta")
    cluster.wait_ready("beta")
    settle(cluster)
    traces = readers.traces(payment.payment_id)
    assert_aborted_views(traces, payment.payment_id)
    payer = traces["payer"]
    assert isinstance(payer, PaymentTrace)
    print(render_text(payer))
    assert_story(
        payer,
        ("RECORDED", "", ""),
        ("VOTED", "alpha", "YES"),
        ("VOTED", "beta", "BANK_UNAVAILABLE"),
        ("DECIDED", "", "ABORT"),
        ("ACKNOWLEDGED", "alpha", "ABORT"),
        ("NOT_ACKNOWLEDGED", "beta", "ABORT"),  # once: later failures are only counted
        ("ACKNOWLEDGED", "beta", "ABORT"),
        ("FINISHED", "", ""),
    )
    assert steps_of(payer, "DECIDED")[0].detail == "beta could not be reached"
    resent = steps_of(payer, "ACKNOWLEDGED", "beta")[0]
    assert int(resent.attributes["attempts"]) >= 2, resent
    missing = steps_of(payer, "NOT_ACKNOWLEDGED", "beta")[0]
    assert missing.sent_at is not None and missing.at < resent.at


# -- recovered: banks ask after the gateway was killed --------------------------------------------


def test_recovered_after_the_gateway_was_killed(make_cluster: ClusterFactory, certs: Path) -> None:
    """The gateway dies once its decision is stored, before any bank hears it. Back (and, to
    be sure the banks must ask, keeping its decisions to itself), it takes its payment over
    after the restart; the banks, in doubt, ask it and commit. Back once more as usual, it
    delivers the decision and the payment finishes."""
    cluster = make_cluster(env=server_env(txn_timeout=1))
    readers = Readers(cluster, certs)
    before = total_money(cluster)
    cluster.restart(GATEWAY, faults="crash_after_decision")
    with pytest.raises(ApiError):
        paid(readers.payer, 900)
    assert cluster.wait_exit(GATEWAY) == 97
    cluster.start_process(GATEWAY, faults="withhold_decisions")
    cluster.wait_ready(GATEWAY)
    asked = {"alpha", "beta"}
    wait_until(
        lambda: all(log_has(cluster, bank, "recovered_commit") for bank in asked),
        20,
        "both banks to ask and commit",
    )
    time.sleep(0.5)  # the questions' steps wait for a write: the completion loop's
    cluster.restart(GATEWAY)
    assert_atomic(cluster, before)
    [payment_id] = payments_of(readers.payer)
    traces = readers.traces(payment_id)
    payer = traces["payer"]
    assert isinstance(payer, PaymentTrace)
    print(render_text(payer))
    assert payer.status.value == "COMMITTED"
    told = story(payer)
    assert told[:4] == [
        ("RECORDED", "", ""),
        ("VOTED", "alpha", "YES"),
        ("VOTED", "beta", "YES"),
        ("DECIDED", "", "COMMIT"),
    ], told
    assert ("ASKED", "alpha", "COMMIT") in told and ("ASKED", "beta", "COMMIT") in told
    taken = steps_of(payer, "TAKEN_OVER")
    assert len(taken) == 2 and all(s.attributes == {"from_replica": GATEWAY} for s in taken)
    assert told[-3:] == sorted(told[-3:], key=lambda s: s[0] == "FINISHED")
    assert sorted(told[-3:]) == [
        ("ACKNOWLEDGED", "alpha", "COMMIT"),
        ("ACKNOWLEDGED", "beta", "COMMIT"),
        ("FINISHED", "", ""),
    ]
    assert_payee_view(payer, traces["payee"])
    assert_not_found(traces["stranger"], payment_id)
    admin_view = traces["admin"]
    assert isinstance(admin_view, PaymentTrace) and admin_view.steps == payer.steps


def log_has(cluster: Cluster, name: str, *words: str) -> bool:
    text = cluster.log_file(name).read_text()
    return any(all(word in line for word in words) for line in text.splitlines())


def payments_of(client: Client) -> list[str]:
    return [p.payment_id for p in client.history(page_size=50).payments]


# -- taken over by another replica -----------------------------------------------------------------

SECOND = "gateway-2"
LEASE = 1.5


@pytest.mark.skipif(not postgres_available(), reason="replicas need PostgreSQL")
@pytest.mark.parametrize(
    ("fault", "outcome"),
    [("crash_after_record", ABORTED), ("crash_after_decision", COMMITTED)],
    ids=["undecided", "decided"],
)
def test_taken_over_by_another_replica(
    make_cluster: ClusterFactory, certs: Path, fault: str, outcome: Any
) -> None:
    """The owner is killed (-9) mid-way: after recording (the survivor presumes abort) or
    after deciding (the survivor delivers the decision)."""
    cluster = make_cluster(
        "postgres",
        env=environment(GatewaySettings, lease=LEASE),
        gateways=2,
        faults={GATEWAY: fault},
    )
    readers = Readers(cluster, certs, gateway=SECOND)
    key = str(uuid.uuid4())
    owner = Client(cluster, certs, token=readers.payer.token, gateway=cluster.address(GATEWAY))
    with pytest.raises(ApiError):
        paid(owner, 2500, key)
    assert cluster.wait_exit(GATEWAY) == 97
    wait_until(lambda: paid(readers.payer, 2500, key).status == outcome, 30, "the take-over")
    settle(cluster)
    [payment_id] = payments_of(readers.payer)
    traces = readers.traces(payment_id)
    payer = traces["payer"]
    assert isinstance(payer, PaymentTrace)
    print(render_text(payer))
    [taken] = steps_of(payer, "TAKEN_OVER")
    assert (taken.replica, taken.attributes) == (SECOND, {"from_replica": GATEWAY})
    at = payer.steps.index(taken)
    assert {s.kind for s in payer.steps if s.replica == GATEWAY} <= {"RECORDED", "VOTED", "DECIDED"}
    assert all(s.replica == GATEWAY for s in payer.steps[:at] if s.kind != "REPLAYED")
    assert all(s.replica == SECOND for s in payer.steps[at:])
    decided = steps_of(payer, "DECIDED")[0]
    if outcome == ABORTED:
        assert (decided.replica, decided.outcome) == (SECOND, "ABORT")
        assert decided.detail == "presumed abort after a take-over"
        assert not steps_of(payer, "VOTED")  # no Prepare was ever sent
        assert_not_found(traces["payee"], payment_id)
    else:
        assert (decided.replica, decided.outcome) == (GATEWAY, "COMMIT")
        assert [s.kind for s in payer.steps[:4]] == ["RECORDED", "VOTED", "VOTED", "DECIDED"]
        assert_payee_view(payer, traces["payee"])
    for bank in ("alpha", "beta"):
        [ack] = steps_of(payer, "ACKNOWLEDGED", bank)
        assert (ack.replica, ack.outcome) == (SECOND, decided.outcome)
    finished = payer.steps[-1]
    assert (finished.kind, finished.replica) == ("FINISHED", SECOND)
    assert_not_found(traces["stranger"], payment_id)
    admin_view = traces["admin"]
    assert isinstance(admin_view, PaymentTrace) and admin_view.steps == payer.steps
