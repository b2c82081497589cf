"""Delivering decisions on its own, against a fake of the banks and a real (temporary) SQLite
payment log: every bank of a payment hears its decision and the payment completes; a decision
a bank refuses is retried alone, with backoff, and holds up no other; a bank that does not
answer gets the same calls again; calls stay bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from server.common.db import Database
from server.gateway import payment_log
from server.gateway.delivery import MAX_PER_CALL, Delivery, Outbox
from server.gateway.payment_log import Deciding
from server.gateway.payment_state import COMMIT, CoordinatorState, PaymentView
from tests.unit.conftest import FakeBanks
from tests.unit.test_payment_log import ORDER

T = TypeVar("T")
BANKS = ("alpha", "beta")
OWNER = 7
LATER = 1e9  # a moment past every backoff


def run(db: Database, banks: FakeBanks, work: Callable[[Delivery], Awaitable[T]]) -> T:
    async def go() -> T:
        delivery = Delivery(db, banks, BANKS, timeout=1.0)
        delivery.start()
        try:
            return await asyncio.wait_for(work(delivery), 10)
        finally:
            await delivery.stop()

    return asyncio.run(go())


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def committing(db: Database, count: int) -> list[PaymentView]:
    """COUNT payments from alpha to beta, recorded and decided commit by OWNER."""
    orders = [dataclasses.replace(ORDER, idempotency_key=f"k{i}") for i in range(count)]
    recorded = db.run_statements(lambda c: payment_log.record(c, orders, 5, OWNER))
    decisions = [Deciding(r.payment.id, COMMIT, OWNER) for r in recorded if r.payment]
    return db.run_statements(lambda c: payment_log.store_decisions(c, decisions))


def states(db: Database, payments: list[PaymentView]) -> set[CoordinatorState]:
    ids = [payment.id for payment in payments]
    return {p.state for p in db.run_statements(lambda c: payment_log.by_ids(c, ids)).values()}


def test_a_decision_reaches_every_bank_of_its_payment_and_completes(
    gateway_db: Database,
) -> None:
    banks = FakeBanks()
    [payment] = committing(gateway_db, 1)

    async def post(delivery: Delivery) -> None:
        delivery.post(payment)
        delivery.post(payment)  # once is enough
        await until(lambda: delivery.quiet)

    run(gateway_db, banks, post)
    assert sorted(banks.decisions_for(payment.id)) == [("alpha", True), ("beta", True)]
    assert states(gateway_db, [payment]) == {CoordinatorState.COMMITTED}


def test_one_decision_a_bank_refuses_holds_up_no_other(gateway_db: Database) -> None:
    """The bank refuses every call naming one payment: the others get through in the halves
    of the refused calls, and the one at fault is retried alone, with backoff, until the
    bank takes it."""
    banks = FakeBanks()
    payments = committing(gateway_db, 9)
    refused = payments[4]
    banks.poison.add(refused.id)

    async def post(delivery: Delivery) -> None:
        for payment in payments:
            delivery.post(payment)
        await until(lambda: delivery.undelivered == 1)
        banks.poison.clear()
        await until(lambda: delivery.quiet)

    run(gateway_db, banks, post)
    assert states(gateway_db, payments) == {CoordinatorState.COMMITTED}
    sizes = [len(ids) for bank, _, ids in banks.calls if bank == "beta" and refused.id in ids]
    alone = sizes.index(1)
    assert sizes[0] == 9, sizes
    assert all(b <= a // 2 for a, b in itertools.pairwise(sizes[: alone + 1])), sizes
    assert set(sizes[alone:]) == {1}, "once alone, it stays alone"
    assert len(sizes) > alone + 1, "and it is retried until the bank takes it"


def test_a_bank_that_does_not_answer_gets_the_whole_call_again(gateway_db: Database) -> None:
    banks = FakeBanks()
    banks.unacknowledged["beta"] = 2
    payments = committing(gateway_db, 5)

    async def post(delivery: Delivery) -> None:
        for payment in payments:
            delivery.post(payment)
        await until(lambda: delivery.quiet)

    run(gateway_db, banks, post)
    assert [len(ids) for bank, _, ids in banks.calls if bank == "beta"] == [5, 5, 5]
    assert states(gateway_db, payments) == {CoordinatorState.COMMITTED}


def test_a_decision_that_went_unacknowledged_no_longer_rides_on_prepares() -> None:
    """So that a decision a bank cannot take never fails a round's new payments."""
    outbox = Outbox()
    outbox.add("p1", True)
    assert outbox.riders() == (["p1"], [])
    outbox.answered(["p1"], set(), refused=False)
    outbox.add("p2", False)
    assert outbox.riders() == ([], ["p2"])
    assert outbox.calls(LATER, round_under_way=False) == [(True, ["p1"])]


def test_a_refused_call_is_halved_until_the_decision_at_fault_goes_alone() -> None:
    outbox = Outbox()
    for number in range(8):
        outbox.add(f"p{number}", commit=True)
    sizes: list[int] = []
    while set(outbox.pending) != {"p3"} or not sizes or sizes[-1] != 1:
        for _, ids in outbox.calls(LATER, round_under_way=False):
            if "p3" in ids:
                sizes.append(len(ids))
                outbox.answered(ids, set(), refused=True)
            else:
                outbox.answered(ids, set(ids), refused=False)
    assert sizes == [8, 4, 2, 1]


def test_calls_carry_a_bounded_number_of_decisions() -> None:
    outbox = Outbox()
    for number in range(MAX_PER_CALL + 10):
        outbox.add(f"p{number}", commit=number % 2 == 0)
    calls = outbox.calls(LATER, round_under_way=False)
    assert all(len(ids) <= MAX_PER_CALL for _, ids in calls)
    assert sum(len(ids) for _, ids in calls) == MAX_PER_CALL + 10
    riders = outbox.riders()
    assert riders == ([], []), "every decision is on its way already"


def test_fresh_decisions_wait_for_a_round_under_way_but_not_for_long() -> None:
    outbox = Outbox()
    outbox.add("p1", commit=True)
    now = time.monotonic()
    assert outbox.calls(now, round_under_way=True) == [], "a Prepare may carry it"
    assert outbox.calls(now + 0.5, round_under_way=True) == [(True, ["p1"])]
