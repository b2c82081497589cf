"""Split payments' domain rules: the checks of a split request (each with its field, nothing
ordered), the key's fingerprint covering every payee, the legs each bank is asked to hold,
what each side sees, the event's readers; on real SQLite databases, the payees recorded with
the payment and read back with it, a share's refund reserved within that share and settled
once, and a bank holding several credits of one payment (and refusing two legs of one
account on one side)."""

from __future__ import annotations

import dataclasses

import pytest

from server.bank import participant
from server.common.db import Database
from server.common.errors import InvalidArgument, NotFound
from server.common.vocabulary import Leg, Reason, Side
from server.gateway import events, payment_log, refunds
from server.gateway.payment_log import Deciding, RecordKind
from server.gateway.payment_state import (
    COMMIT,
    CoordinatorState,
    PaymentView,
    Share,
    abort,
    legs_by_bank,
)
from server.gateway.splits import AskedShare, split_order

BANKS = ("alpha", "beta", "gamma")
OWNER = 7


def asked(*shares: tuple[str, str, int], currency: str = "USD") -> list[AskedShare]:
    return [AskedShare(bank, account, amount, currency) for bank, account, amount in shares]


def order(*shares: tuple[str, str, int], key: str = "k-1") -> object:
    return split_order("alice", "alpha", "A-1", asked(*shares), key, BANKS)


THREE = (("alpha", "A-2", 100), ("beta", "B-1", 200), ("gamma", "G-1", 300))


# -- the request's checks ------------------------------------------------------------------------


def test_a_split_order_debits_the_total_and_names_each_payee() -> None:
    made = split_order("alice", "alpha", "A-1", asked(*THREE), "k-1", BANKS)
    assert (made.amount, made.currency, made.to_bank, made.to_account) == (600, "USD", "", "")
    assert made.shares == tuple(Share(b, a, n) for b, a, n in THREE)


@pytest.mark.parametrize(
    ("shares", "field"),
    [
        ((("beta", "B-1", 1),), "shares"),
        (tuple(("beta", f"B-{n}", 1) for n in range(101)), "shares"),
        ((("beta", "B-1", 1), ("alpha", "A-1", 1)), "shares[1].payee"),
        ((("beta", "B-1", 1), ("gamma", "G-1", 1), ("beta", "B-1", 2)), "shares[2].payee"),
        ((("beta", "B-1", 10**15), ("gamma", "G-1", 1)), "shares"),
        ((("beta", "B-1", 0), ("gamma", "G-1", 1)), "shares[0].amount.minor_units"),
        ((("beta", "B-1", 1), ("gamma", "G-1", -1)), "shares[1].amount.minor_units"),
        ((("beta", "B-1", 2**63 - 1), ("gamma", "G-1", 2**63 - 1)), "shares[0].amount.minor_units"),
        ((("beta", "", 1), ("gamma", "G-1", 1)), "shares[0].payee"),
        ((("beta", "B 1", 1), ("gamma", "G-1", 1)), "shares[0].payee.account"),
        ((("Beta!", "B-1", 1), ("gamma", "G-1", 1)), "shares[0].payee.bank"),
    ],
)
def test_a_bad_split_is_refused_with_its_field(
    shares: tuple[tuple[str, str, int], ...], field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        order(*shares)
    assert refused.value.field == field


def test_mixed_currencies_an_unknown_bank_and_a_missing_key_are_refused() -> None:
    mixed = [AskedShare("beta", "B-1", 1, "USD"), AskedShare("gamma", "G-1", 1, "EUR")]
    with pytest.raises(InvalidArgument) as refused:
        split_order("alice", "alpha", "A-1", mixed, "k", BANKS)
    assert refused.value.field == "shares[1].amount.currency"
    with pytest.raises(NotFound) as unknown:
        order(("beta", "B-1", 1), ("omega", "O-1", 1))
    assert unknown.value.field == "shares[1].payee.bank"
    with pytest.raises(InvalidArgument) as no_key:
        order(*THREE, key="")
    assert no_key.value.field == "idempotency_key"
    no_amount = [
        AskedShare("beta", "B-1", 1, "USD"),
        AskedShare("gamma", "G-1", 0, "", True, False),
    ]
    with pytest.raises(InvalidArgument) as missing:
        split_order("alice", "alpha", "A-1", no_amount, "k", BANKS)
    assert missing.value.field == "shares[1].amount"


def test_the_key_s_fingerprint_covers_every_payee_in_order() -> None:
    base = order(*THREE)
    others = [
        order(*THREE[:2]),
        order(THREE[0], THREE[1], ("gamma", "G-1", 301)),
        order(THREE[1], THREE[0], THREE[2]),
        order(THREE[0], THREE[1], ("gamma", "G-2", 300)),
    ]
    fingerprints = {o.fingerprint for o in [base, *others]}  # type: ignore[attr-defined]
    assert len(fingerprints) == 5
    assert order(*THREE).fingerprint == base.fingerprint  # type: ignore[attr-defined]
    # Not a plain payment's either: the same key with one payee and the total is reused.
    plain = dataclasses.replace(base, to_bank="beta", to_account="B-1", shares=())  # type: ignore[type-var]
    assert plain.fingerprint != base.fingerprint  # type: ignore[attr-defined]


# -- legs, views, events -------------------------------------------------------------------------


def split_view(state: CoordinatorState = CoordinatorState.COMMITTED) -> PaymentView:
    return PaymentView(
        id="pay_1",
        payer="alice",
        from_bank="alpha",
        from_account="A-1",
        to_bank="",
        to_account="",
        amount=600,
        currency="USD",
        state=state,
        reason_code="",
        reason="",
        deadline=0.0,
        created_at=0.0,
        owner_token=OWNER,
        shares=(
            Share("alpha", "A-2", 100, 40, 40),
            Share("beta", "B-1", 200),
            Share("beta", "B-2", 300),
        ),
    )


def test_every_bank_is_asked_for_its_legs_the_payer_s_first() -> None:
    legs = legs_by_bank(split_view())
    assert list(legs) == ["alpha", "beta"]
    assert legs["alpha"] == [
        Leg("pay_1", Side.DEBIT, "A-1", 600, "USD"),
        Leg("pay_1", Side.CREDIT, "A-2", 100, "USD"),
    ]
    assert legs["beta"] == [
        Leg("pay_1", Side.CREDIT, "B-1", 200, "USD"),
        Leg("pay_1", Side.CREDIT, "B-2", 300, "USD"),
    ]
    with pytest.raises(AssertionError):  # read without its shares: never sent to any bank
        legs_by_bank(dataclasses.replace(split_view(), shares=()))


def test_each_payee_sees_their_own_share_and_the_payer_sees_all() -> None:
    payment = split_view()
    assert payment.seen_by("alpha", "A-1") is payment
    mine = payment.seen_by("beta", "B-2")
    assert (mine.to_bank, mine.to_account, mine.amount, mine.shares) == (
        "beta",
        "B-2",
        300,
        (Share("beta", "B-2", 300),),
    )
    bobs = payment.seen_by("alpha", "A-2")
    assert (bobs.refund_reserved, bobs.refundable) == (40, 60)
    assert payment.seen_by("gamma", "G-9") is payment, "a stranger: as it is"
    assert payment.pays("beta", "B-1") and not payment.pays("alpha", "A-1")


def test_a_payee_refunds_their_own_share() -> None:
    mine = split_view().seen_by("beta", "B-1")
    made = refunds.refund_order(mine, "carol", "k", 150, "USD")
    assert (made.from_bank, made.from_account, made.to_bank, made.to_account) == (
        "beta",
        "B-1",
        "alpha",
        "A-1",
    )
    assert made.of_share and made.refund_of == "pay_1"
    refusal = refunds.refused(
        dataclasses.replace(made, amount=250), dataclasses.replace(split_view(), id="pay_1")
    )
    assert refusal.metadata["refundable_minor_units"] == "200"


def test_a_committed_split_s_event_is_read_by_the_payer_and_every_payee() -> None:
    decided = dataclasses.replace(
        split_view(CoordinatorState.COMMITTING), decided_now=True, decided_at=1.0
    )
    [event] = events.of_decisions([decided])
    assert (event.payer_key, event.payee_key) == ("alpha/A-1", None)
    assert event.readers == ("alpha/A-2", "beta/B-1", "beta/B-2")
    stored = events.StoredEvent(1, event.type, 1.0, event.subject)
    assert stored.payment().shares == decided.shares
    aborted = dataclasses.replace(decided, state=CoordinatorState.ABORTING)
    [quiet] = events.of_decisions([aborted])
    assert quiet.readers == () and quiet.payee_key is None, "no payee hears of an abort"


# -- the log, on SQLite ---------------------------------------------------------------------------


def record(db: Database, *orders: object) -> list[payment_log.Recorded]:
    return db.run_statements(lambda c: payment_log.record(c, list(orders), 5, OWNER))  # type: ignore[arg-type]


def test_a_split_is_recorded_with_its_payees_and_read_back_with_them(gateway_db: Database) -> None:
    made = order(*THREE)
    [first] = record(gateway_db, made)
    assert first.kind is RecordKind.NEW and first.payment is not None
    pid = first.payment.id
    found = gateway_db.run_statements(lambda c: payment_log.by_ids(c, [pid]))[pid]
    assert found.shares == tuple(Share(b, a, n) for b, a, n in THREE)
    [again] = record(gateway_db, made)
    assert again.kind is RecordKind.REPLAY and again.payment is not None
    assert again.payment.shares == found.shares
    [reused] = record(gateway_db, order(*THREE[:2]))
    assert reused.kind is RecordKind.KEY_REUSED
    decided = gateway_db.run_statements(
        lambda c: payment_log.store_decisions(c, [Deciding(pid, COMMIT, OWNER)])
    )
    assert decided[0].shares == found.shares and decided[0].decided_now
    # A payee's undelivered decisions include the split paying them.
    waiting = gateway_db.run_statements(lambda c: payment_log.undelivered(c, "gamma", "G-1"))
    assert [p.id for p in waiting] == [pid]


def test_a_share_s_refunds_never_exceed_it_and_settle_once(gateway_db: Database) -> None:
    [first] = record(gateway_db, order(*THREE))
    assert first.payment is not None
    pid = first.payment.id
    gateway_db.run_statements(
        lambda c: payment_log.store_decisions(c, [Deciding(pid, COMMIT, OWNER)])
    )
    original = gateway_db.run_statements(lambda c: payment_log.by_ids(c, [pid]))[pid]
    carol = original.seen_by("beta", "B-1")

    def refund(key: str, amount: int | None) -> payment_log.Recorded:
        made = refunds.refund_order(carol, "carol", key, amount, "USD" if amount else "")
        return record(gateway_db, made)[0]

    part, over = refund("r-1", 150), refund("r-2", 51)
    assert part.kind is RecordKind.NEW and over.kind is RecordKind.REFUSED
    rest = refund("r-3", None)
    assert rest.kind is RecordKind.NEW and rest.payment is not None and rest.payment.amount == 50
    assert refund("r-4", None).kind is RecordKind.REFUSED, "nothing left of carol's share"
    # The bob's and erin's shares are untouched; the payment counts what its shares reserve.
    now = gateway_db.run_statements(lambda c: payment_log.by_ids(c, [pid]))[pid]
    assert [s.refund_reserved for s in now.shares] == [0, 200, 0]
    assert now.refund_reserved == 200
    # One aborts (released), one commits (counted); a second decision changes nothing.
    assert part.payment is not None
    decisions = [Deciding(part.payment.id, abort(Reason.ABORTED), OWNER)]
    decisions.append(Deciding(rest.payment.id, COMMIT, OWNER))
    for _ in range(2):
        gateway_db.run_statements(lambda c: payment_log.store_decisions(c, decisions))
    now = gateway_db.run_statements(lambda c: payment_log.by_ids(c, [pid]))[pid]
    assert [(s.refund_reserved, s.refunded) for s in now.shares] == [(0, 0), (50, 50), (0, 0)]
    assert (now.refund_reserved, now.refunded) == (50, 50)
    assert now.seen_by("beta", "B-1").refundable == 150


# -- a bank's legs --------------------------------------------------------------------------------


def test_a_bank_holds_several_credits_of_one_payment(bank_db: Database) -> None:
    legs = [
        Leg("p1", Side.DEBIT, "A-1", 300, "USD"),
        Leg("p1", Side.CREDIT, "A-2", 100, "USD"),
        Leg("p1", Side.CREDIT, "A-3", 200, "USD"),
    ]
    votes = bank_db.run_statements(lambda c: participant.prepare(c, legs))
    assert all(vote.yes for vote in votes)
    assert bank_db.run_statements(lambda c: participant.commit(c, ["p1"])) == ["p1"]
    twice = [
        Leg("p2", Side.DEBIT, "A-1", 2, "USD"),
        Leg("p2", Side.CREDIT, "A-2", 1, "USD"),
        Leg("p2", Side.CREDIT, "A-2", 1, "USD"),
    ]
    votes = bank_db.run_statements(lambda c: participant.prepare(c, twice))
    assert not any(vote.yes for vote in votes)
