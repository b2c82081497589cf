"""A bank as a 2PC participant, on a real (temporary) SQLite database: holds, available
funds, tombstones, replayed votes, idempotent commit and abort."""

from __future__ import annotations

from sqlalchemy import func, select

from server.bank import accounts, participant
from server.bank.models import Account, BankPayment, LedgerEntry, ParticipantState
from server.common.db import Database
from server.common.validation import MAX_BALANCE
from server.common.vocabulary import Leg, Reason, Side
from tests.unit.conftest import OPENING


def debit(payment_id: str, account: str, amount: int, currency: str = "USD") -> Leg:
    return Leg(payment_id, Side.DEBIT, account, amount, currency)


def credit(payment_id: str, account: str, amount: int, currency: str = "USD") -> Leg:
    return Leg(payment_id, Side.CREDIT, account, amount, currency)


def prepare(db: Database, *legs: Leg) -> list[participant.VoteResult]:
    return db.run_statements(lambda c: participant.prepare(c, list(legs)))


def commit(db: Database, *ids: str) -> list[str]:
    return db.run_statements(lambda c: participant.commit(c, list(ids)))


def abort(db: Database, *ids: str) -> list[str]:
    return db.run_statements(lambda c: participant.abort(c, list(ids)))


def account(db: Database, number: str) -> tuple[int, int, int]:
    """(balance, held, available)."""
    row = db.run_sync(lambda s: s.get(Account, number))
    assert row is not None
    return row.balance, row.held, row.available


def state(db: Database, payment_id: str) -> ParticipantState | None:
    row = db.run_sync(lambda s: s.get(BankPayment, payment_id))
    return row.state if row else None


def ledger(db: Database, number: str) -> int:
    total = select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
        LedgerEntry.account_number == number
    )
    return int(db.run_sync(lambda s: s.scalar(total)) or 0)


def test_a_yes_vote_holds_the_funds_and_leaves_the_balance(bank_db: Database) -> None:
    [vote] = prepare(bank_db, debit("p1", "A-1", 3_000))
    assert vote.yes
    assert account(bank_db, "A-1") == (10_000, 3_000, 7_000)
    assert state(bank_db, "p1") is ParticipantState.PREPARED


def test_available_funds_count_holds_of_earlier_rounds(bank_db: Database) -> None:
    # Two payments from one account that together exceed its balance, in separate rounds:
    # the second must see the first one's hold (the double spend).
    assert prepare(bank_db, debit("p1", "A-1", 6_000))[0].yes
    [second] = prepare(bank_db, debit("p2", "A-1", 6_000))
    assert not second.yes
    assert second.reason_code is Reason.INSUFFICIENT_FUNDS
    assert account(bank_db, "A-1") == (10_000, 6_000, 4_000)


def test_payments_in_one_round_are_checked_one_after_the_other(bank_db: Database) -> None:
    votes = prepare(bank_db, debit("p1", "A-1", 6_000), debit("p2", "A-1", 6_000))
    assert [vote.yes for vote in votes] == [True, False]


def test_a_no_vote_names_its_reason(bank_db: Database) -> None:
    cases = {
        "unknown": (debit("p1", "Z-9", 1), Reason.ACCOUNT_NOT_FOUND),
        "currency": (debit("p2", "A-1", 1, "EUR"), Reason.CURRENCY_MISMATCH),
        "credit currency": (credit("p3", "J-1", 1, "USD"), Reason.CURRENCY_MISMATCH),
        "funds": (debit("p4", "A-3", 1), Reason.INSUFFICIENT_FUNDS),
    }
    for name, (leg, reason) in cases.items():
        [vote] = prepare(bank_db, leg)
        assert not vote.yes, name
        assert vote.reason_code is reason, name
        assert vote.reason, name
        assert state(bank_db, leg.payment_id) is ParticipantState.ABORTED, name


def test_a_disabled_account_votes_no(bank_db: Database) -> None:
    bank_db.run_sync(lambda s: accounts.set_disabled(s, "user-A-2", True))
    [vote] = prepare(bank_db, credit("p1", "A-2", 1))
    assert vote.reason_code is Reason.ACCOUNT_DISABLED


def test_a_credit_that_would_overflow_the_account_votes_no(bank_db: Database) -> None:
    big = MAX_BALANCE - OPENING["A-1"]
    [fits] = prepare(bank_db, credit("p1", "A-1", 1_000))
    assert fits.yes
    # Credits voted yes on count too: the next one must fit beside them.
    [vote] = prepare(bank_db, credit("p2", "A-1", big))
    assert not vote.yes
    assert vote.reason_code is Reason.BALANCE_LIMIT


def test_a_repeated_prepare_gets_the_vote_already_given(bank_db: Database) -> None:
    assert prepare(bank_db, debit("p1", "A-1", 1_000))[0].yes
    again = prepare(bank_db, debit("p1", "A-1", 1_000))
    assert again[0].yes
    assert account(bank_db, "A-1") == (10_000, 1_000, 9_000), "held twice"
    # A no stays a no, even once the money is there.
    assert not prepare(bank_db, debit("p2", "A-3", 100))[0].yes
    bank_db.run_sync(lambda s: accounts.deposit(s, "A-3", 1_000, "USD", "top-up"))
    replay = prepare(bank_db, debit("p2", "A-3", 100))
    assert not replay[0].yes
    assert replay[0].reason_code is Reason.INSUFFICIENT_FUNDS


def test_commit_turns_holds_into_ledger_entries_once(bank_db: Database) -> None:
    prepare(bank_db, debit("p1", "A-1", 2_500), credit("p1", "A-2", 2_500))
    assert commit(bank_db, "p1") == ["p1"]
    assert commit(bank_db, "p1") == ["p1"], "a repeated commit is acknowledged"
    assert account(bank_db, "A-1") == (7_500, 0, 7_500)
    assert account(bank_db, "A-2") == (3_000, 0, 3_000)
    assert ledger(bank_db, "A-1") == 7_500
    assert ledger(bank_db, "A-2") == 3_000
    assert state(bank_db, "p1") is ParticipantState.COMMITTED


def test_abort_releases_the_hold_once(bank_db: Database) -> None:
    prepare(bank_db, debit("p1", "A-1", 2_500))
    assert abort(bank_db, "p1") == ["p1"]
    assert abort(bank_db, "p1") == ["p1"]
    assert account(bank_db, "A-1") == (10_000, 0, 10_000)
    assert ledger(bank_db, "A-1") == 10_000
    assert state(bank_db, "p1") is ParticipantState.ABORTED


def incoming(db: Database, number: str) -> int:
    row = db.run_sync(lambda s: s.get(Account, number))
    assert row is not None
    return row.incoming


def test_an_abort_releases_the_payee_s_incoming_credit(bank_db: Database) -> None:
    """An aborted payment leaves nothing behind at the payee's bank: its credit no longer
    counts against the balance limit. (Else enough payments from an empty account, each
    aborted at the payer's bank, would block the payee from ever being paid again.)"""
    room = MAX_BALANCE - OPENING["A-1"]
    assert prepare(bank_db, credit("p1", "A-1", room))[0].yes
    assert incoming(bank_db, "A-1") == room
    assert abort(bank_db, "p1") == ["p1"]
    assert incoming(bank_db, "A-1") == 0
    [again] = prepare(bank_db, credit("p2", "A-1", room))
    assert again.yes, again
    assert abort(bank_db, "p2") == ["p2"]
    bank_db.run_sync(lambda s: accounts.deposit(s, "A-1", room, "USD", "top-up"))
    assert account(bank_db, "A-1") == (MAX_BALANCE, 0, MAX_BALANCE)


def test_an_abort_before_the_prepare_leaves_a_tombstone(bank_db: Database) -> None:
    assert abort(bank_db, "late") == ["late"]
    [vote] = prepare(bank_db, debit("late", "A-1", 100))
    assert not vote.yes
    assert account(bank_db, "A-1") == (10_000, 0, 10_000)


def test_commit_of_a_payment_never_voted_yes_is_not_acknowledged(bank_db: Database) -> None:
    prepare(bank_db, debit("p1", "A-3", 100))  # votes no
    assert commit(bank_db, "p1", "never-seen") == []
    assert account(bank_db, "A-3") == (0, 0, 0)


def test_abort_of_a_committed_payment_is_not_acknowledged(bank_db: Database) -> None:
    prepare(bank_db, debit("p1", "A-1", 100))
    commit(bank_db, "p1")
    assert abort(bank_db, "p1") == []
    assert account(bank_db, "A-1") == (9_900, 0, 9_900)


def test_payments_waiting_for_a_decision_are_in_doubt(bank_db: Database) -> None:
    prepare(bank_db, debit("p1", "A-1", 100), debit("p2", "A-1", 100))
    commit(bank_db, "p2")
    waiting = bank_db.run_sync(lambda s: participant.in_doubt(s, older_than=float("inf")))
    assert waiting == ["p1"]
