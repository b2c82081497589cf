"""Payments in batches (``Payments/PayBatch``) on real clusters, SQLite and PostgreSQL: each
item paid exactly as ``Pay`` would pay it alone (the same outcome, the same error for a bad
one, the same replay and key rules), the results in the items' order, one key twice in a
batch, the bounds on the number of items and on the request's bytes (raised for this method
only), a batch sent again paying nothing twice, and kill -9 of the gateway in the middle of
a batch; an atomic batch (``atomic``: its items the payees of one split payment) on the
generated stubs. The command line's ``pay-batch`` is tested in tests/test_cli.py."""

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
from minipay.client.api import (
    ApiError,
    BatchItem,
    BatchResults,
    GatewayClient,
    MinipayError,
    SplitShare,
)
from minipay.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from server.common.settings import GatewaySettings, environment
from tests.conftest import ClusterFactory
from tests.helpers import (
    ABORTED,
    COMMITTED,
    SEED_ACCOUNTS,
    Client,
    admin,
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


# -- atomic: one split payment -------------------------------------------------------------------


def atomic_batch(
    items: list[BatchItem], idempotency_key: str, atomic: bool = True
) -> gateway_pb2.PayBatchRequest:
    """The request as a script with the generated stubs alone would send it: each item a
    payee, its own key (if any) carried, the batch's key for the one payment."""
    return gateway_pb2.PayBatchRequest(
        items=[
            gateway_pb2.PayBatchItem(
                to=common_pb2.AccountRef(bank=i.to_bank, account=i.to_account),
                amount=common_pb2.Money(minor_units=i.amount_minor_units, currency=i.currency),
                idempotency_key=i.idempotency_key,
            )
            for i in items
        ],
        atomic=atomic,
        idempotency_key=idempotency_key,
    )


def stub_pay_batch(
    cluster: Cluster, certs: Path, token: str, request: gateway_pb2.PayBatchRequest
) -> gateway_pb2.PayBatchResponse | grpc.aio.AioRpcError:
    """PayBatch on the generated stub, no library in between: its answer, or its error."""

    async def call() -> gateway_pb2.PayBatchResponse | grpc.aio.AioRpcError:
        async with aio_channel(cluster, certs, GATEWAY, "client-1") as channel:
            stub = gateway_pb2_grpc.PaymentsStub(channel)
            try:
                answer: gateway_pb2.PayBatchResponse = await stub.PayBatch(
                    request, metadata=(("authorization", f"Bearer {token}"),), timeout=30
                )
            except grpc.aio.AioRpcError as error:
                return error
            return answer

    return asyncio.run(call())


def refusal(client: Client, request: gateway_pb2.PayBatchRequest) -> ApiError:
    """The error PayBatch answers REQUEST with, through the library's error reading."""

    async def send(gateway: GatewayClient) -> Any:
        return await gateway._call(gateway.payments.PayBatch, request)

    try:
        client.run(send)
    except ApiError as error:
        return error
    raise AssertionError("PayBatch accepted it")


def payee(to: tuple[str, str], amount: int, own_key: str = "") -> BatchItem:
    """A payee of an atomic batch: no key of its own unless OWN_KEY."""
    return BatchItem(*to, amount, "USD", own_key)


def new_key() -> str:
    return f"atomic-{uuid.uuid4()}"


@pytest.mark.in_process
def test_an_atomic_batch_is_one_split_payment(
    make_cluster: ClusterFactory, backend: str, certs: Path
) -> None:
    """atomic: the items are the payees of one split payment: one id in every result, one
    debit of the total, one credit per payee; the key replays it, from PayBatch or from Pay
    with the same shares; a bank's no moves nothing anywhere; the key rules of the mode."""
    cluster = make_cluster(backend)
    alice, boss = customer(cluster, certs, "alice"), admin(cluster, certs)
    money, before = total_money(cluster), balances(cluster)
    payees = [payee(BOB, 1_000), payee(CAROL, 2_000), payee(ERIN, 3_000)]
    split_key = new_key()
    answer = stub_pay_batch(cluster, certs, alice.token, atomic_batch(payees, split_key))
    assert isinstance(answer, gateway_pb2.PayBatchResponse), answer
    assert len(answer.results) == 3
    first = answer.results[0]
    assert all(result == first for result in answer.results), "every result names the payment"
    payment = first.payment
    assert (payment.status, payment.amount.minor_units, first.replayed) == (
        gateway_pb2.PAYMENT_STATUS_COMMITTED,
        6_000,
        False,
    )
    assert [(s.payee.account, s.amount.minor_units) for s in payment.shares] == [
        (BOB[1], 1_000),
        (CAROL[1], 2_000),
        (ERIN[1], 3_000),
    ]
    settle(cluster)
    paid = {ALICE: -6_000, BOB: 1_000, CAROL: 2_000, ERIN: 3_000}
    assert moved(before, balances(cluster)) == paid
    assert ledger_counts(cluster)[payment.payment_id] == 4, "one debit, one credit per payee"
    assert len(gateway_payments(cluster)) == 1

    # The same key and items replay it; so does Pay with the same shares and key.
    again = stub_pay_batch(cluster, certs, alice.token, atomic_batch(payees, split_key))
    assert isinstance(again, gateway_pb2.PayBatchResponse), again
    assert [(r.payment.payment_id, r.replayed) for r in again.results] == [
        (payment.payment_id, True)
    ] * 3
    shares = [SplitShare(i.to_bank, i.to_account, i.amount_minor_units) for i in payees]
    assert alice.pay_split(shares, idempotency_key=split_key).replayed
    # Another body under the key: refused, whole.
    for other in (payees[:2], [*payees[:2], payee(ERIN, 3_001)], [payees[1], payees[0], payees[2]]):
        reused = refusal(alice, atomic_batch(other, split_key))
        assert (reused.code, reused.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "IDEMPOTENCY_KEY_REUSED",
        )
    reused_alone = alice.error("pay", *BOB, 1_000, idempotency_key=split_key)
    assert reused_alone.reason == "IDEMPOTENCY_KEY_REUSED"

    # The keys: the batch's for an atomic batch, the items' otherwise; never both.
    refusals = [
        # An item's own key in an atomic batch.
        (
            "items[1].idempotency_key",
            atomic_batch([payee(BOB, 1), payee(CAROL, 1, "mine")], new_key()),
        ),
        ("idempotency_key", atomic_batch(payees, "")),  # atomic without the batch's key
        ("idempotency_key", atomic_batch([item(BOB, 1)], new_key(), atomic=False)),  # not atomic
    ]
    for field, request in refusals:
        error = refusal(alice, request)
        assert (error.code, error.reason, error.metadata.get("field")) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            field,
        ), error
        assert "idempotency_key" in error.message, error
    settle(cluster)
    assert moved(before, balances(cluster)) == paid
    assert len(gateway_payments(cluster)) == 1, "nothing recorded for a refusal"

    # One payee's bank votes no (erin disabled): ABORTED in every result, nothing moves.
    boss.set_disabled("gamma", "erin", True)
    no = stub_pay_batch(cluster, certs, alice.token, atomic_batch(payees, new_key()))
    boss.set_disabled("gamma", "erin", False)
    assert isinstance(no, gateway_pb2.PayBatchResponse), no
    assert {(r.payment.status, r.payment.reason_code) for r in no.results} == {
        (gateway_pb2.PAYMENT_STATUS_ABORTED, "ACCOUNT_DISABLED")
    }
    settle(cluster)
    assert moved(before, balances(cluster)) == paid
    assert ledger_counts(cluster)[no.results[0].payment.payment_id] == 0
    assert_atomic(cluster, money)


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
