"""The bank as a two-phase-commit participant (voter).

Prepare checks each leg and, for a yes vote, records the payment as PREPARED with a hold on
the debited funds in the same transaction: the vote is durable before it is sent. Commit
turns holds into ledger entries; Abort releases them, or leaves a tombstone for a payment this
bank never saw so that a late Prepare is refused. Both are idempotent. After a yes vote the
bank never decides alone: it waits, and asks the coordinator (see ``recovery``).

Each call handles a whole round (many payments) with a fixed number of set-based statements,
so its cost hardly grows with the number of payments in the round.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from server.bank.models import BankPayment, ParticipantState
from server.common import fastsql
from server.common.clock import now
from server.common.validation import MAX_BALANCE
from server.common.vocabulary import Leg, Reason, Side

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoteResult:
    payment_id: str
    side: Side
    yes: bool
    reason_code: Reason | None = None
    reason: str = ""


class Refusal(Exception):
    """Why this bank votes no on a payment."""

    def __init__(self, code: Reason, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class AccountState:
    """An account as this round sees it, with the changes the round makes to it."""

    number: str
    currency: str
    balance: int
    held: int  # debits voted yes on and not yet decided
    incoming: int  # credits voted yes on and not yet decided
    disabled: bool
    changed: bool = False

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass
class Round:
    """What one round touches, read and locked up front in a fixed order (payments, then
    accounts by number) so that concurrent rounds wait for each other instead of
    deadlocking (PostgreSQL), and the writes it will make."""

    payments: dict[str, tuple[ParticipantState, str, str]]  # id -> (state, reason code, reason)
    legs: dict[str, list[tuple[str, str, int]]]  # id -> [(side, account, amount)], every leg
    accounts: dict[str, AccountState]
    new_payments: list[tuple[Any, ...]] = field(default_factory=list)  # INSERT_PAYMENT rows
    new_legs: list[tuple[Any, ...]] = field(default_factory=list)  # INSERT_LEG rows
    new_entries: list[tuple[Any, ...]] = field(default_factory=list)  # INSERT_LEDGER rows
    applied: dict[ParticipantState, list[str]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def load(
        cls, connection: Connection, payment_ids: Iterable[str], account_numbers: Iterable[str] = ()
    ) -> Round:
        ids = sorted(set(payment_ids))
        payments = (
            {
                payment_id: (ParticipantState(state), code, reason)
                for payment_id, state, code, reason in fastsql.execute(
                    connection, SELECT_PAYMENTS, ids, len(ids)
                )
            }
            if ids
            else {}
        )
        legs: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        if payments:
            for payment_id, side, account, amount in fastsql.execute(
                connection, SELECT_LEGS, list(payments), len(payments)
            ):
                legs[payment_id].append((side, account, amount))
        numbers = set(account_numbers)
        numbers.update(account for rows in legs.values() for _, account, _ in rows)
        ordered = sorted(numbers)
        accounts = (
            {
                row[0]: AccountState(row[0], row[1], row[2], row[3], row[4], bool(row[5]))
                for row in fastsql.execute(connection, SELECT_ACCOUNTS, ordered, len(ordered))
            }
            if ordered
            else {}
        )
        return cls(payments, legs, accounts)

    def remember(
        self, payment_id: str, state: ParticipantState, code: Reason | None = None, reason: str = ""
    ) -> None:
        """A payment this bank had not seen: PREPARED with its legs, or ABORTED."""
        self.payments[payment_id] = (state, code.value if code else "", reason)
        moment = now()
        decided_at = None if state is ParticipantState.PREPARED else moment
        self.new_payments.append(
            (payment_id, state.value, code.value if code else "", reason, moment, decided_at)
        )

    def apply(self, payment_id: str, state: ParticipantState) -> None:
        """The coordinator's decision on a prepared payment, applied: its new state."""
        _, code, reason = self.payments[payment_id]
        self.payments[payment_id] = (state, code, reason)
        self.applied[state].append(payment_id)

    def write(self, connection: Connection) -> None:
        """The round's changes, in a handful of statements."""
        fastsql.execute_many(connection, INSERT_PAYMENT, self.new_payments)
        fastsql.execute_many(connection, INSERT_LEG, self.new_legs)
        moment = now()
        for state, ids in self.applied.items():
            fastsql.execute(connection, APPLY_DECISION[state], [moment, *ids], len(ids))
        fastsql.execute_many(
            connection,
            UPDATE_ACCOUNT,
            [
                (a.balance, a.held, a.incoming, a.number)
                for a in self.accounts.values()
                if a.changed
            ],
        )
        fastsql.execute_many(connection, INSERT_LEDGER, self.new_entries)


# Rows are read and locked in a fixed order (payments, then accounts by number) so that
# concurrent rounds wait for each other instead of deadlocking (PostgreSQL).
SELECT_PAYMENTS = (
    "SELECT payment_id, state, reason_code, reason FROM bank_payments "
    "WHERE payment_id IN ({in}) ORDER BY payment_id{for_update}"
)
SELECT_LEGS = "SELECT payment_id, side, account_number, amount FROM legs WHERE payment_id IN ({in})"
SELECT_ACCOUNTS = (
    "SELECT a.number, a.currency, a.balance, a.held, a.incoming, c.disabled "
    "FROM accounts a JOIN customers c ON c.id = a.customer_id "
    "WHERE a.number IN ({in}) ORDER BY a.number{for_update_of_a}"
)
INSERT_PAYMENT = (
    "INSERT INTO bank_payments (payment_id, state, reason_code, reason, created_at, decided_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_LEG = (
    "INSERT INTO legs (payment_id, side, number, account_number, amount, currency) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_LEDGER = (
    "INSERT INTO ledger_entries (account_number, amount, balance_after, payment_id, deposit_id, "
    "created_at) VALUES (?, ?, ?, ?, NULL, ?)"
)
APPLY_DECISION = {
    ParticipantState.COMMITTED: (
        "UPDATE bank_payments SET state = 'COMMITTED', decided_at = ? WHERE payment_id IN ({in})"
    ),
    # An abort keeps the reason a no vote gave; otherwise it says ABORTED.
    ParticipantState.ABORTED: (
        "UPDATE bank_payments SET state = 'ABORTED', decided_at = ?, reason_code = CASE "
        "WHEN reason_code = '' THEN 'ABORTED' ELSE reason_code END WHERE payment_id IN ({in})"
    ),
}
UPDATE_ACCOUNT = "UPDATE accounts SET balance = ?, held = ?, incoming = ? WHERE number = ?"


@dataclass(frozen=True)
class RoundResult:
    votes: list[VoteResult]
    committed: list[str]  # decisions applied (or applied before), in the order asked
    aborted: list[str]


def run_round(
    connection: Connection,
    legs: Sequence[Leg] = (),
    commit: Sequence[str] = (),
    abort: Sequence[str] = (),
) -> RoundResult:
    """One transaction: apply the decisions on earlier payments (their holds released first,
    so the funds count for the new ones), then vote on every payment in ``legs`` (one or
    two legs each). The coordinator sends both in one call when it can."""
    by_payment: dict[str, list[Leg]] = defaultdict(list)
    for leg in legs:
        by_payment[leg.payment_id].append(leg)
    round_ = Round.load(connection, [*commit, *abort, *by_payment], (leg.account for leg in legs))
    committed = _commit(round_, commit)
    aborted = _abort(round_, abort)
    votes: list[VoteResult] = []
    for payment_id, payment_legs in by_payment.items():
        votes.extend(_prepare_payment(round_, payment_id, payment_legs))
    round_.write(connection)
    return RoundResult(votes, committed, aborted)


def prepare(connection: Connection, legs: Sequence[Leg]) -> list[VoteResult]:
    """Votes on every payment in ``legs``, in one transaction."""
    return run_round(connection, legs=legs).votes


def commit(connection: Connection, payment_ids: Sequence[str]) -> list[str]:
    """Applies every prepared payment: holds become ledger entries. Returns those applied."""
    return run_round(connection, commit=payment_ids).committed


def abort(connection: Connection, payment_ids: Sequence[str]) -> list[str]:
    """Releases every payment's holds; for an unknown payment, leaves a tombstone."""
    return run_round(connection, abort=payment_ids).aborted


def _prepare_payment(round_: Round, payment_id: str, legs: list[Leg]) -> list[VoteResult]:
    known = round_.payments.get(payment_id)
    if known is not None:
        # A repeated Prepare gets the vote this bank already gave: votes are never changed.
        state, code, reason = known
        if state is not ParticipantState.ABORTED:
            return [VoteResult(payment_id, leg.side, True) for leg in legs]
        no = Reason.parse(code)
        return [VoteResult(payment_id, leg.side, False, no, reason) for leg in legs]
    try:
        _check_distinct(legs)
        accounts = [_check_leg(round_.accounts.get(leg.account), leg) for leg in legs]
    except Refusal as refusal:
        # Voting no is a unilateral abort; remember it so a repeated Prepare is refused too.
        round_.remember(payment_id, ParticipantState.ABORTED, refusal.code, refusal.reason)
        return [
            VoteResult(payment_id, leg.side, False, refusal.code, refusal.reason) for leg in legs
        ]
    round_.remember(payment_id, ParticipantState.PREPARED)
    for number, (leg, account) in enumerate(zip(legs, accounts, strict=True)):
        round_.new_legs.append(
            (payment_id, leg.side.value, number, account.number, leg.amount, leg.currency)
        )
        if leg.side is Side.DEBIT:
            account.held += leg.amount
        else:
            account.incoming += leg.amount
        account.changed = True
    return [VoteResult(payment_id, leg.side, True) for leg in legs]


def _check_distinct(legs: Sequence[Leg]) -> None:
    """One debit at most, and no account with two legs of one side: the checks of each leg
    below see the account as it was before the payment, so two legs of one account would
    each pass alone. The gateway never asks for either."""
    seen: set[tuple[Side, str]] = set()
    debits = 0
    for leg in legs:
        debits += leg.side is Side.DEBIT
        if (leg.side, leg.account) in seen or debits > 1:
            raise Refusal(
                Reason.ABORTED, f"the payment names account {leg.account} twice on one side"
            )
        seen.add((leg.side, leg.account))


def _check_leg(account: AccountState | None, leg: Leg) -> AccountState:
    if account is None:
        raise Refusal(Reason.ACCOUNT_NOT_FOUND, f"account {leg.account} does not exist")
    if account.disabled:
        raise Refusal(Reason.ACCOUNT_DISABLED, f"account {leg.account} is disabled")
    if account.currency != leg.currency:
        raise Refusal(
            Reason.CURRENCY_MISMATCH,
            f"account {leg.account} holds {account.currency}, not {leg.currency}",
        )
    # Available funds are the balance less every hold: payments in doubt have them already.
    if leg.side is Side.DEBIT and account.available < leg.amount:
        raise Refusal(Reason.INSUFFICIENT_FUNDS, f"insufficient funds in account {leg.account}")
    # Every credit voted yes on may commit: together they must fit in the balance column.
    if leg.side is Side.CREDIT and account.balance + account.incoming + leg.amount > MAX_BALANCE:
        raise Refusal(
            Reason.BALANCE_LIMIT,
            f"account {leg.account} cannot hold more money: {Reason.BALANCE_LIMIT.sentence}",
        )
    return account


def _commit(round_: Round, payment_ids: Sequence[str]) -> list[str]:
    applied = []
    for payment_id in payment_ids:
        state = round_.payments.get(payment_id, (None, "", ""))[0]
        if state is None or state is ParticipantState.ABORTED:
            # The coordinator commits only after every yes vote: this is a bug there. Refuse
            # this one without failing the others in the round.
            log.error("refused commit of payment %s: this bank did not vote yes", payment_id)
            continue
        if state is ParticipantState.PREPARED:
            for side, number, amount in round_.legs[payment_id]:
                _apply_leg(round_, round_.accounts[number], payment_id, side, amount)
            round_.apply(payment_id, ParticipantState.COMMITTED)
        applied.append(payment_id)
    return applied


def _apply_leg(
    round_: Round, account: AccountState, payment_id: str, side: str, amount: int
) -> None:
    change = -amount if side == Side.DEBIT else amount
    if side == Side.DEBIT:
        account.held -= amount
    else:
        account.incoming -= amount
    account.balance += change
    account.changed = True
    round_.new_entries.append((account.number, change, account.balance, payment_id, now()))


def _abort(round_: Round, payment_ids: Sequence[str]) -> list[str]:
    released = []
    for payment_id in payment_ids:
        state = round_.payments.get(payment_id, (None, "", ""))[0]
        if state is None:
            round_.remember(
                payment_id, ParticipantState.ABORTED, Reason.ABORTED, "aborted by the coordinator"
            )
        elif state is ParticipantState.COMMITTED:
            log.error("refused abort of payment %s: it is already committed", payment_id)
            continue
        elif state is ParticipantState.PREPARED:
            for side, number, amount in round_.legs[payment_id]:
                account = round_.accounts[number]
                if side == Side.DEBIT:
                    account.held -= amount
                else:
                    account.incoming -= amount
                account.changed = True
            round_.apply(payment_id, ParticipantState.ABORTED)
        released.append(payment_id)
    return released


def in_doubt(session: Session, older_than: float, limit: int = 500) -> list[str]:
    """Payments this bank voted yes on and has heard no decision for since ``older_than``."""
    return list(
        session.scalars(
            select(BankPayment.payment_id)
            .where(
                BankPayment.state == ParticipantState.PREPARED, BankPayment.created_at < older_than
            )
            .order_by(BankPayment.created_at)
            .limit(limit)
        )
    )


def count_in_doubt(session: Session) -> int:
    query = select(func.count()).select_from(BankPayment)
    return int(session.scalar(query.where(BankPayment.state == ParticipantState.PREPARED)) or 0)
