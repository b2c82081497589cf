"""Refunds, as domain rules and in the payment log on a real (temporary) SQLite database: what
is left to refund, who may refund, the request a refund makes; the reservation (one
conditional UPDATE in the recording transaction) never lets refunds add up to more than the
payment, and the decision releases or counts each refund's amount exactly once, whoever
decides it (a take-over's abort) and whatever a fenced replica tries after; and a refund
through the coordinator whose payee lacks the funds aborts and leaves the amount refundable."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from minipay.errors import ErrorReason
from server.common.db import Database
from server.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from server.common.vocabulary import Reason, Status
from server.gateway import history, payment_log, refunds
from server.gateway.coordinator import Coordinator
from server.gateway.payment_log import RecordKind
from server.gateway.payment_state import (
    COMMIT,
    CoordinatorState,
    PaymentKind,
    PaymentOrder,
    PaymentView,
    abort,
    no_vote,
)
from server.gateway.replicas import Replica
from tests.unit.conftest import FakeBanks
from tests.unit.test_payment_log import OWNER, decide, record

# alice (alpha/A-1) pays bob (beta/B-1) 10.00 USD.
PAID = PaymentOrder("alice", "alpha", "A-1", "beta", "B-1", 1_000, "USD", "pay-1")


def paid(db: Database, order: PaymentOrder = PAID, commit: bool = True) -> PaymentView:
    """A payment recorded and decided (committed unless told otherwise)."""
    [recorded] = record(db, order)
    assert recorded.payment is not None
    [stored] = decide(db, (recorded.payment.id, COMMIT if commit else abort(Reason.TIMEOUT)))
    return stored


def refund_of(
    original: PaymentView, amount: int | None, key: str = "r-1", payer: str = "bob"
) -> PaymentOrder:
    return refunds.refund_order(original, payer, key, amount, "USD" if amount else "")


def current(db: Database, payment_id: str) -> PaymentView:
    return db.run_statements(lambda c: payment_log.by_ids(c, [payment_id]))[payment_id]


def refund_rows(db: Database, original: str) -> list[PaymentView]:
    return db.run_sync(lambda s: history.refunds_of(s, original))


# -- what is left to refund, and who may refund -------------------------------------------------


def view(state: CoordinatorState, reserved: int = 0, refund_of: str | None = None) -> PaymentView:
    return PaymentView(
        id="pay_1",
        payer="alice",
        from_bank="alpha",
        from_account="A-1",
        to_bank="beta",
        to_account="B-1",
        amount=1_000,
        currency="USD",
        state=state,
        reason_code="",
        reason="",
        deadline=0.0,
        created_at=0.0,
        refund_of=refund_of,
        refund_reserved=reserved,
    )


def test_refundable_is_the_amount_less_every_refund_committed_or_in_flight() -> None:
    assert view(CoordinatorState.COMMITTED).refundable == 1_000
    assert view(CoordinatorState.COMMITTING, reserved=999).refundable == 1
    assert view(CoordinatorState.COMMITTED, reserved=1_000).refundable == 0
    for state in (CoordinatorState.PREPARING, CoordinatorState.ABORTING, CoordinatorState.ABORTED):
        assert view(state).refundable == 0, state
    assert view(CoordinatorState.COMMITTED, refund_of="pay_0").refundable == 0
    assert view(CoordinatorState.COMMITTED, refund_of="pay_0").kind is PaymentKind.REFUND


def test_only_the_payee_of_a_committed_payment_may_refund_it() -> None:
    committed = view(CoordinatorState.COMMITTED)
    assert refunds.check_customer_may_refund(committed, "pay_1", "beta", "B-1") is committed
    with pytest.raises(PermissionDenied) as payer:
        refunds.check_customer_may_refund(committed, "pay_1", "alpha", "A-1")
    assert payer.value.reason is ErrorReason.REFUND_NOT_ALLOWED
    # Anyone else, and the payee of what has not committed, learn nothing of it.
    for found, bank, account in (
        (committed, "gamma", "G-1"),
        (view(CoordinatorState.PREPARING), "beta", "B-1"),
        (view(CoordinatorState.ABORTED), "beta", "B-1"),
        (None, "beta", "B-1"),
    ):
        with pytest.raises(NotFound) as hidden:
            refunds.check_customer_may_refund(found, "pay_1", bank, account)
        assert hidden.value.reason is ErrorReason.PAYMENT_NOT_FOUND
    # A refund received cannot be refunded in turn.
    with pytest.raises(FailedPrecondition) as twice:
        refunds.check_customer_may_refund(
            view(CoordinatorState.COMMITTED, refund_of="pay_0"), "pay_1", "beta", "B-1"
        )
    assert twice.value.reason is ErrorReason.PAYMENT_NOT_REFUNDABLE
    assert twice.value.metadata == {"payment_id": "pay_1", "status": "COMMITTED"}


def test_an_admin_refunds_only_a_committed_payment() -> None:
    for state, status in (
        (CoordinatorState.PREPARING, "PENDING"),
        (CoordinatorState.ABORTING, "ABORTED"),
    ):
        with pytest.raises(FailedPrecondition) as refused:
            refunds.check_refundable(view(state))
        assert refused.value.metadata["status"] == status


def test_a_refund_goes_from_the_payee_back_to_the_payer_in_the_payment_s_currency() -> None:
    original = view(CoordinatorState.COMMITTED)
    order = refunds.refund_order(original, "bob", "k", 250, "USD")
    assert (order.from_bank, order.from_account, order.to_bank, order.to_account) == (
        "beta",
        "B-1",
        "alpha",
        "A-1",
    )
    assert (order.refund_of, order.amount, order.whole_rest) == ("pay_1", 250, False)
    rest = refunds.refund_order(original, "bob", "k")
    assert (rest.amount, rest.whole_rest, rest.currency) == (0, True, "USD")
    with pytest.raises(InvalidArgument) as other:
        refunds.refund_order(original, "bob", "k", 250, "EUR")
    assert other.value.field == "amount.currency"


def test_a_key_tells_a_refund_from_a_payment_and_the_rest_from_an_amount() -> None:
    original = view(CoordinatorState.COMMITTED)
    prints = {
        refunds.refund_order(original, "bob", "k", 250, "USD").fingerprint,
        refunds.refund_order(original, "bob", "k", 251, "USD").fingerprint,
        refunds.refund_order(original, "bob", "k").fingerprint,
        refunds.refund_order(dataclasses.replace(original, id="pay_2"), "bob", "k").fingerprint,
        dataclasses.replace(PAID, amount=250).fingerprint,
    }
    assert len(prints) == 5


# -- the reservation, in the transaction that records the refund --------------------------------


def test_partial_refunds_to_the_cent_then_the_rest(gateway_db: Database) -> None:
    original = paid(gateway_db)
    first, second = record(
        gateway_db, refund_of(original, 333, "r-1"), refund_of(original, 333, "r-2")
    )
    assert first.kind is second.kind is RecordKind.NEW
    assert current(gateway_db, original.id).refund_reserved == 666
    [rest] = record(gateway_db, refund_of(original, None, "r-3"))
    assert rest.kind is RecordKind.NEW and rest.payment is not None
    assert rest.payment.amount == 334, "all that is left, found when recorded"
    assert current(gateway_db, rest.payment.id).amount == 334
    assert current(gateway_db, original.id).refund_reserved == 1_000
    [nothing] = record(gateway_db, refund_of(original, 1, "r-4"))
    assert nothing.kind is RecordKind.REFUSED and nothing.payment is None
    error = refunds.refused(refund_of(original, 1, "r-4"), nothing.original)
    assert error.reason is ErrorReason.REFUND_EXCEEDS_PAYMENT
    assert error.metadata == {"payment_id": original.id, "refundable_minor_units": "0"}


def test_a_refund_over_what_is_left_is_refused_and_nothing_is_recorded(
    gateway_db: Database,
) -> None:
    original = paid(gateway_db)
    record(gateway_db, refund_of(original, 600, "r-1"))
    [over] = record(gateway_db, refund_of(original, 401, "r-2"))
    assert over.kind is RecordKind.REFUSED
    assert over.original is not None and over.original.refundable == 400
    assert current(gateway_db, original.id).refund_reserved == 600
    assert len(refund_rows(gateway_db, original.id)) == 1, "the refused refund is gone"
    # Its key was never used: it may be used again for what fits.
    [fits] = record(gateway_db, refund_of(original, 400, "r-2"))
    assert fits.kind is RecordKind.NEW


def test_refunds_in_one_round_reserve_only_what_fits(gateway_db: Database) -> None:
    original = paid(gateway_db)
    results = record(gateway_db, *(refund_of(original, 300, f"r-{i}") for i in range(5)))
    assert [r.kind for r in results].count(RecordKind.NEW) == 3
    assert [r.kind for r in results].count(RecordKind.REFUSED) == 2
    assert current(gateway_db, original.id).refund_reserved == 900
    [rest] = record(gateway_db, refund_of(original, None, "rest"))
    assert rest.payment is not None and rest.payment.amount == 100


def test_a_refund_of_what_did_not_commit_or_of_a_refund_is_refused(gateway_db: Database) -> None:
    aborted = paid(gateway_db, dataclasses.replace(PAID, idempotency_key="p-2"), commit=False)
    [pending] = record(gateway_db, dataclasses.replace(PAID, idempotency_key="p-3"))
    assert pending.payment is not None
    committed = paid(gateway_db)
    [refund] = record(gateway_db, refund_of(committed, 100))
    assert refund.payment is not None
    [back] = decide(gateway_db, (refund.payment.id, COMMIT))
    for original, reason in (
        (aborted, ErrorReason.PAYMENT_NOT_REFUNDABLE),
        (pending.payment, ErrorReason.PAYMENT_NOT_REFUNDABLE),
        (back, ErrorReason.PAYMENT_NOT_REFUNDABLE),
    ):
        # Built by hand, as if the checks before had been passed: the database refuses.
        order = dataclasses.replace(
            refund_of(committed, 10, f"of-{original.id}"),
            refund_of=original.id,
            from_bank=original.to_bank,
            from_account=original.to_account,
        )
        [result] = record(gateway_db, order)
        assert result.kind is RecordKind.REFUSED, original.state
        assert refunds.refused(order, result.original).reason is reason
        assert current(gateway_db, original.id).refund_reserved == 0


def test_only_the_payee_s_account_reserves(gateway_db: Database) -> None:
    original = paid(gateway_db)
    stolen = dataclasses.replace(refund_of(original, 10), from_bank="gamma", from_account="G-1")
    [result] = record(gateway_db, stolen)
    assert result.kind is RecordKind.REFUSED
    assert isinstance(refunds.refused(stolen, result.original), NotFound)
    other_currency = dataclasses.replace(refund_of(original, 10), currency="EUR")
    assert record(gateway_db, other_currency)[0].kind is RecordKind.REFUSED
    assert current(gateway_db, original.id).refund_reserved == 0


def test_a_replayed_refund_reserves_nothing_more(gateway_db: Database) -> None:
    original = paid(gateway_db)
    [first] = record(gateway_db, refund_of(original, 400))
    [again] = record(gateway_db, refund_of(original, 400))
    assert again.kind is RecordKind.REPLAY
    assert again.payment is not None and first.payment is not None
    assert again.payment.id == first.payment.id
    [reused] = record(gateway_db, refund_of(original, 401))
    assert reused.kind is RecordKind.KEY_REUSED
    [rest_under_the_key] = record(gateway_db, refund_of(original, None))
    assert rest_under_the_key.kind is RecordKind.KEY_REUSED
    assert current(gateway_db, original.id).refund_reserved == 400


# -- the decision: released on abort, counted on commit, exactly once ---------------------------


def test_an_abort_releases_and_a_commit_counts(gateway_db: Database) -> None:
    original = paid(gateway_db)
    kept, dropped = (
        r.payment
        for r in record(gateway_db, refund_of(original, 300, "a"), refund_of(original, 200, "b"))
    )
    assert kept is not None and dropped is not None
    decide(gateway_db, (kept.id, COMMIT), (dropped.id, abort(Reason.INSUFFICIENT_FUNDS)))
    now = current(gateway_db, original.id)
    assert (now.refund_reserved, now.refunded, now.refundable) == (300, 300, 700)
    # The same decisions again (a retry, a repeated round): nothing changes.
    decide(gateway_db, (kept.id, COMMIT), (dropped.id, abort(Reason.INSUFFICIENT_FUNDS)))
    again = current(gateway_db, original.id)
    assert (again.refund_reserved, again.refunded) == (300, 300)


def test_a_take_over_releases_once_and_the_fenced_replica_changes_nothing(
    gateway_db: Database,
) -> None:
    original = paid(gateway_db)
    [recorded] = record(gateway_db, refund_of(original, 250))
    assert recorded.payment is not None
    refund_id = recorded.payment.id
    # The recording replica (OWNER) has no lease: another replica takes the refund over and
    # aborts it (presumed abort), releasing the amount.
    survivor = OWNER + 1
    claimed = gateway_db.run_statements(lambda c: payment_log.claim_orphans(c, survivor))
    assert refund_id in {p.id for p in claimed}
    decide(gateway_db, (refund_id, abort(Reason.TIMEOUT)), owner=survivor)
    assert current(gateway_db, original.id).refund_reserved == 0
    # The first replica wakes up and stores its own decision: fenced, it changes nothing.
    [lost] = decide(gateway_db, (refund_id, COMMIT), owner=OWNER)
    assert lost.state is CoordinatorState.ABORTING and lost.owner_token == survivor
    assert current(gateway_db, original.id).refund_reserved == 0
    assert current(gateway_db, original.id).refunded == 0
    # The survivor's abort once more (a bank's question, a later pass): still released once.
    decide(gateway_db, (refund_id, abort(Reason.TIMEOUT)), owner=survivor)
    assert current(gateway_db, original.id).refund_reserved == 0


def test_a_completed_refund_keeps_its_count(gateway_db: Database) -> None:
    original = paid(gateway_db)
    [recorded] = record(gateway_db, refund_of(original, 1_000))
    assert recorded.payment is not None
    decide(gateway_db, (recorded.payment.id, COMMIT))
    finished = [(recorded.payment.id, OWNER), (original.id, OWNER)]
    gateway_db.run_statements(lambda c: payment_log.complete(c, finished))
    done = current(gateway_db, original.id)
    assert (done.state, done.refunded, done.refundable) == (CoordinatorState.COMMITTED, 1_000, 0)


# -- through the coordinator --------------------------------------------------------------------


def test_a_refund_the_payee_cannot_fund_aborts_and_the_amount_is_refundable_again(
    gateway_db: Database, replica: Replica
) -> None:
    banks = FakeBanks()

    async def work() -> tuple[Status, Status, PaymentView]:
        coordinator = Coordinator(gateway_db, banks, replica, ("alpha", "beta"), 1.0, 16)
        try:
            payment = (await coordinator.pay(PAID)).payment
            banks.votes["beta"] = no_vote(Reason.INSUFFICIENT_FUNDS)
            refused = await coordinator.pay(refund_of(payment, None, "r-1"))
            banks.votes.pop("beta")
            done = await coordinator.pay(refund_of(payment, None, "r-2"))
            return refused.status, done.status, done.payment
        finally:
            await coordinator.stop()

    first, second, refund = asyncio.run(work())
    assert (first, second) == (Status.ABORTED, Status.COMMITTED)
    assert refund.amount == 1_000, "the aborted refund's amount was released"
    assert refund.refund_of is not None
    assert current(gateway_db, refund.refund_of).refunded == 1_000
    # The refund's legs: a debit of the payee at beta, a credit of the payer at alpha.
    legs = {
        (bank, leg.side.value, leg.account)
        for bank, prepared in banks.prepared
        for leg in prepared
        if leg.payment_id == refund.id
    }
    assert legs == {("beta", "debit", "B-1"), ("alpha", "credit", "A-1")}


def test_a_refused_refund_is_answered_with_its_reason(
    gateway_db: Database, replica: Replica
) -> None:
    banks = FakeBanks()

    async def work() -> BaseException:
        coordinator = Coordinator(gateway_db, banks, replica, ("alpha", "beta"), 1.0, 16)
        try:
            payment = (await coordinator.pay(PAID)).payment
            with pytest.raises(FailedPrecondition) as caught:
                await coordinator.pay(refund_of(payment, 1_001))
            return caught.value
        finally:
            await coordinator.stop()

    error = asyncio.run(work())
    assert isinstance(error, FailedPrecondition)
    assert error.reason is ErrorReason.REFUND_EXCEEDS_PAYMENT
    assert error.metadata["refundable_minor_units"] == "1000"
