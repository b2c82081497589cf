"""Payments in batches (``Payments/PayBatch``) on real clusters, SQLite and PostgreSQL: each
item paid exactly as ``Pay`` would pay it alone (the same outcome, the same error for a bad
one, the same replay and key rules), the results in the items' order, one key twice in a
batch, the bounds on the number of items and on the request's bytes (raised for this method
only), a batch sent again paying nothing twice, and kill -9 of the gateway in the middle of
a batch. The command line's ``pay-batch`` is tested in tests/test_cli.py."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.cluster import GATEWAY, Cluster
from minipay.client.api import ApiError, BatchItem, BatchResults, MinipayError
from minipay.v1 import common_pb2, gateway_pb2
from server.common.settings import GatewaySettings, environment
from tests.conftest import ClusterFactory
from tests.helpers import (
    ABORTED,
    COMMITTED,
    SEED_ACCOUNTS,
    Client,
    aio_channel,
    assert_atomic,
    balances,
    customer,
    gateway_payments,
    ledger_counts,
    moved,
    settle,
    total_money,
    wait_until,
)
from tests.test_payments import BAD_PAYMENTS

ALICE = SEED_ACCOUNTS["alice"]
CAROL, ERIN, BOB = SEED_ACCOUNTS["carol"], SEED_ACCOUNTS["erin"], SEED_ACCOUNTS["bob"]


def item(to: tuple[str, str], amount: int, key: str = "", currency: str = "USD") -> BatchItem:
    return BatchItem(*to, amount, currency, key or f"batch-{uuid.uuid4()}")


def keys_recorded(cluster: Cluster) -> set[str]:
    return {key for _, key in gateway_payments(cluster).values() if key}


def outcomes(results: BatchResults) -> list[tuple[str, str, str] | tuple[str, str]]:
    """(payment id, status, reason code) per paid item, (code, reason) per refused one."""
    found: list[tuple[str, str, str] | tuple[str, str]] = []
    for result in results:
        if result.payment is not None:
            payment = result.payment
            found.append((payment.payment_id, payment.status.value, payment.reason_code))
        else:
            assert result.error is not None
            found.append((result.error.code, result.error.reason))
    return found


# -- each item as if paid alone ---------------------------------------------------------------


@pytest.mark.in_process
def test_a_batch_pays_each_item_as_if_alone(
    make_cluster: ClusterFactory, backend: str, certs: Path
) -> None:
    cluster = make_cluster(backend)
    alice = customer(cluster, certs, "alice")
    before, money = balances(cluster), total_money(cluster)
    bad = [item(case[1:3], case[3], currency=case[4]) for case in BAD_PAYMENTS]
    batch = [
        item(CAROL, 1_000),
        *bad,
        item(ERIN, 2_000),
        item(("omega", "O-1"), 100),  # no such bank
        item(CAROL, 100, key="has space"),  # a key no request may carry
        item(("beta", "B-9999"), 300),  # recorded, and aborted by the bank
        item(BOB, 10**9),  # more than alice has: recorded, and aborted
        item(BOB, 3_000),  # the same bank
    ]
    results = alice.pay_batch(batch)
    assert len(results) == len(batch) and results.request_id
    assert [r.idempotency_key for r in results] == [i.idempotency_key for i in batch], "in order"
    for sent, result in zip(batch, results, strict=True):
        if result.payment is not None:
            assert result.payment.payee.bank == sent.to_bank, "results in the items' order"
            assert result.payment.amount_minor_units == sent.amount_minor_units
    statuses = [(r.payment.status, r.payment.reason_code) if r.payment else None for r in results]
    assert statuses == [
        (COMMITTED, ""),
        *[None] * len(bad),
        (COMMITTED, ""),
        None,
        None,
        (ABORTED, "ACCOUNT_NOT_FOUND"),
        (ABORTED, "INSUFFICIENT_FUNDS"),
        (COMMITTED, ""),
    ]

    # Every refused item got exactly the error Pay gives the same request alone.
    refused = [(sent, r.error) for sent, r in zip(batch, results, strict=True) if r.error]
    assert len(refused) == len(bad) + 2
    for sent, error in refused:
        alone = alice.error("pay", *dataclasses.astuple(sent))
        assert (error.code, error.reason, error.message) == (
            alone.code.name,
            alone.reason,
            alone.message,
        ), sent
        assert error.metadata == alone.metadata, sent
    assert keys_recorded(cluster) == {
        i.idempotency_key for i, r in zip(batch, results, strict=True) if r.payment
    }

    settle(cluster)
    paid = -1_000 - 2_000 - 3_000
    assert moved(before, balances(cluster)) == {ALICE: paid, CAROL: 1_000, ERIN: 2_000, BOB: 3_000}
    assert_atomic(cluster, money)
    committed = [
        r.payment.payment_id for r in results if r.payment and r.payment.status == COMMITTED
    ]
    counts = ledger_counts(cluster)
    assert all(counts[payment_id] == 2 for payment_id in committed)

    # The whole batch again: every item replays its first outcome; nothing moves twice.
    again = alice.pay_batch(batch)
    assert outcomes(again) == outcomes(results)
    assert all(r.payment.replayed for r in again if r.payment)
    settle(cluster)
    assert moved(before, balances(cluster)) == {ALICE: paid, CAROL: 1_000, ERIN: 2_000, BOB: 3_000}
    # And each item's key alone, through Pay, replays the same payment.
    replay = alice.pay(*dataclasses.astuple(batch[0]))
    assert results[0].payment is not None
    assert (replay.payment_id, replay.replayed) == (results[0].payment.payment_id, True)


@pytest.mark.in_process
def test_one_key_twice_in_a_batch(make_cluster: ClusterFactory, backend: str, certs: Path) -> None:
    """The same body twice: one payment, both results name it, the second replayed. Another
    body under the key: the later item is refused with IDEMPOTENCY_KEY_REUSED. Either way
    whatever lies between them, even a whole round's worth of items."""
    cluster = make_cluster(backend, env=environment(GatewaySettings, batch_max=8))
    alice = customer(cluster, certs, "alice")
    before = balances(cluster)
    filler = [item(ERIN, 1) for _ in range(20)]
    batch = [
        item(CAROL, 500, key="twice-same"),
        item(CAROL, 700, key="twice-other"),
        *filler,
        item(CAROL, 500, key="twice-same"),
        item(CAROL, 701, key="twice-other"),
    ]
    results = alice.pay_batch(batch)
    same, other, same_again, other_again = results[0], results[1], results[-2], results[-1]
    assert same.payment and same_again.payment and other.payment
    assert same_again.payment.payment_id == same.payment.payment_id
    assert (same.payment.replayed, same_again.payment.replayed) == (False, True)
    assert same.payment.status == same_again.payment.status == COMMITTED
    assert other.payment.status == COMMITTED and other_again.payment is None
    assert other_again.error is not None
    assert (other_again.error.code, other_again.error.reason) == (
        "INVALID_ARGUMENT",
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert other_again.error.metadata == {"field": "idempotency_key"}
    settle(cluster)
    assert moved(before, balances(cluster)) == {ALICE: -1_220, CAROL: 1_200, ERIN: 20}
    recorded = [key for _, key in gateway_payments(cluster).values()]
    assert recorded.count("twice-same") == recorded.count("twice-other") == 1


# -- bounds ---------------------------------------------------------------------------------------


@pytest.mark.in_process
def test_a_batch_has_one_to_a_thousand_items(
    make_cluster: ClusterFactory, backend: str, certs: Path
) -> None:
    cluster = make_cluster(backend)
    alice = customer(cluster, certs, "alice")
    for count in (0, 1001):
        error = alice.error("pay_batch", [item(CAROL, 1) for _ in range(count)])
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
        assert [name for name, _ in error.field_violations] == ["items"], error
        assert f"1 to 1000 items, not {count}" in error.message
    assert not gateway_payments(cluster), "nothing was recorded"
    before = balances(cluster)
    results = alice.pay_batch([item(CAROL if i % 2 else ERIN, 1) for i in range(1000)])
    assert [r.payment.status if r.payment else r.error for r in results] == [COMMITTED] * 1000
    settle(cluster)
    assert moved(before, balances(cluster)) == {ALICE: -1000, CAROL: 500, ERIN: 500}


def large_items(count: int) -> list[BatchItem]:
    """COUNT valid items, nearly as large as an item can be: a key of 255 characters, and
    (nine in ten) an account number of 34, which beta does not have."""
    return [
        item(CAROL if i % 10 == 0 else ("beta", "B-" + "9" * 32), 1, key=f"{i:06d}-" + "k" * 248)
        for i in range(count)
    ]


def request_bytes(items: list[BatchItem]) -> int:
    request = gateway_pb2.PayBatchRequest(
        items=[
            gateway_pb2.PayBatchItem(
                to=common_pb2.AccountRef(bank=i.to_bank, account=i.to_account),
                amount=common_pb2.Money(minor_units=i.amount_minor_units, currency=i.currency),
                idempotency_key=i.idempotency_key,
            )
            for i in items
        ]
    )
    return int(request.ByteSize())


def test_only_pay_batch_takes_more_than_64_kib(cluster: Cluster, certs: Path) -> None:
    """A 100 KiB Pay is refused unread (before its token is even looked at), a 300 KiB
    PayBatch is paid, and one past the batch's own limit is refused by gRPC itself."""
    alice = customer(cluster, certs, "alice")
    big_key = "k" * (100 * 1024)
    nobody = Client(cluster, certs)  # no token: refused for its size first
    for who in (alice, nobody):
        error = who.error("pay", *CAROL, 100, "USD", big_key)
        assert (error.code, error.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "REQUEST_TOO_LARGE",
        ), error
        assert error.metadata == {"limit_bytes": "65536", "method": "/minipay.v1.Payments/Pay"}
        assert "takes at most 65536 bytes" in error.message
        assert error.retry_after is None, "waiting does not make it smaller"
    assert not gateway_payments(cluster)

    items = large_items(1000)
    assert request_bytes(items) > 300 * 1024
    results = alice.pay_batch(items)
    assert [r.payment.reason_code if r.payment else r.error for r in results] == [
        "" if i % 10 == 0 else "ACCOUNT_NOT_FOUND" for i in range(1000)
    ]

    too_many_bytes = large_items(1700)
    assert request_bytes(too_many_bytes) > 512 * 1024
    error = alice.error("pay_batch", too_many_bytes)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert len(keys_recorded(cluster)) == 1000

    # The refusals are in the gateway's call records, with their reason.
    log = cluster.log_file(GATEWAY)
    wait_until(lambda: log.read_text().count('"reason": "REQUEST_TOO_LARGE"') >= 2, 10)


@pytest.mark.in_process
def test_a_streaming_method_keeps_the_64_kib_limit(cluster: Cluster, certs: Path) -> None:
    async def watch() -> Any:
        async with aio_channel(cluster, certs, GATEWAY, "client-1") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            call = stub.Watch(health_pb2.HealthCheckRequest(service="s" * (100 * 1024)))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in call:
                    pass
            return refused.value

    error = ApiError.from_rpc_error(asyncio.run(watch()), "")
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "REQUEST_TOO_LARGE")
    assert error.metadata["method"] == "/grpc.health.v1.Health/Watch"


# -- kill -9 in the middle of a batch ---------------------------------------------------------

# (the process that dies, how: a crash point of its first round, or kill -9 a moment in)
KILLS = [
    (GATEWAY, "crash_after_record"),
    (GATEWAY, "crash_after_decision"),
    (GATEWAY, "kill-9"),
    ("alpha", "crash_after_vote_yes"),  # the payer's bank
    ("beta", "kill-9"),  # a payee's bank
]


@pytest.mark.parametrize(("victim", "kill"), KILLS, ids=[f"{v}-{k}" for v, k in KILLS])
def test_a_process_killed_mid_batch(
    shared_cluster: ClusterFactory, backend: str, certs: Path, victim: str, kill: str
) -> None:
    """The gateway or a bank dies in the middle of a batch of many rounds. Once it is back,
    the batch sent again answers every item with a final outcome (the one the first answer
    gave, if it came), a third time the same outcomes replayed; each committed item is in
    both ledgers once, each aborted one in none, one payment per key, and money is
    conserved. (The ways to die take turns on one cluster per backend: small amounts, so
    that alice can pay every batch.)"""
    cluster = shared_cluster(backend, env=environment(GatewaySettings, batch_max=16))
    alice = customer(cluster, certs, "alice", register=False)
    money = total_money(cluster)
    earlier = set(gateway_payments(cluster))
    if kill != "kill-9":
        cluster.restart(victim, faults=kill)
    batch = [item(CAROL if i % 2 else ERIN, 1 + i % 40) for i in range(400)]
    first: dict[str, Any] = {}

    def send() -> None:
        try:
            first["results"] = alice.pay_batch(batch)
        except MinipayError as error:
            first["error"] = error

    payer = threading.Thread(target=send)
    payer.start()
    if kill == "kill-9":
        wait_until(
            lambda: len(gateway_payments(cluster)) >= len(earlier) + 16, 30, "a round recorded"
        )
        cluster.kill(victim)
    else:
        assert cluster.wait_exit(victim, timeout=30) == 97  # died at the crash point
    payer.join(60)
    assert not payer.is_alive()
    if victim == GATEWAY:
        assert isinstance(first.get("error"), ApiError), first  # the answer never came
    cluster.start_process(victim)
    cluster.wait_ready(victim)

    def final() -> BatchResults:
        results: BatchResults = alice.pay_batch(batch)
        assert all(r.payment for r in results), [r.error for r in results if r.error]
        return results

    wait_until(
        lambda: all(r.payment.status in (COMMITTED, ABORTED) for r in final()),  # type: ignore[union-attr]
        30,
        "every item decided",
    )
    settled_results, replayed = final(), final()
    assert outcomes(replayed) == outcomes(settled_results)
    assert all(r.payment and r.payment.replayed for r in replayed)
    if "results" in first:  # a bank died: the gateway answered; those outcomes stand
        answered = first["results"]
        for before, after in zip(outcomes(answered), outcomes(settled_results), strict=True):
            assert before[1] not in ("COMMITTED", "ABORTED") or before == after, (before, after)
    statuses = {r.payment.status for r in settled_results if r.payment}
    if victim == GATEWAY:
        assert COMMITTED in statuses, "the items nothing had recorded were paid on the retry"
    if kill in ("crash_after_record", "crash_after_vote_yes"):
        assert ABORTED in statuses, "the round whose decision was never made was aborted"
    settle(cluster)
    assert_atomic(cluster, money)
    counts = ledger_counts(cluster)
    for result in settled_results:
        assert result.payment is not None
        expected = 2 if result.payment.status == COMMITTED else 0
        assert counts[result.payment.payment_id] == expected, result
    recorded = [
        key or "" for pid, (_, key) in gateway_payments(cluster).items() if pid not in earlier
    ]
    assert sorted(recorded) == sorted(i.idempotency_key for i in batch), "one payment per key"
