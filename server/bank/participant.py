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

from sqlalchemy import Connection, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session

from server.bank.models import BankPayment, Base, ParticipantState
from server.common.clock import now
from server.common.validation import MAX_BALANCE
from server.common.vocabulary import Leg, Reason, Side

log = logging.getLogger(__name__)

# Core tables: a round works in set-based statements, not per-row ORM units of work.
PAYMENTS = Base.metadata.tables["bank_payments"]
LEGS = Base.metadata.tables["legs"]
ACCOUNTS = Base.metadata.tables["accounts"]
CUSTOMERS = Base.metadata.tables["customers"]
LEDGER = Base.metadata.tables["ledger_entries"]


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
    legs: dict[str, list[tuple[str, str, int]]]  # id -> [(side, account, amount)]
    accounts: dict[str, AccountState]
    new_payments: list[dict[str, Any]] = field(default_factory=list)
    new_legs: list[dict[str, Any]] = field(default_factory=list)
    new_entries: list[dict[str, Any]] = field(default_factory=list)
    decided: dict[ParticipantState, list[str]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def load(
        cls, connection: Connection, payment_ids: Iterable[str], account_numbers: Iterable[str] = ()
    ) -> Round:
        ids = sorted(set(payment_ids))
        payments = {
            row.payment_id: (row.state, row.reason_code, row.reason)
            for row in connection.execute(SELECT_PAYMENTS, {"ids": ids})
        }
        legs: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        if payments:
            for row in connection.execute(SELECT_LEGS, {"ids": list(payments)}):
                legs[row.payment_id].append((row.side, row.account_number, row.amount))
        numbers = set(account_numbers)
        numbers.update(account for rows in legs.values() for _, account, _ in rows)
        accounts = {
            row.number: AccountState(
                row.number, row.currency, row.balance, row.held, row.incoming, row.disabled
            )
            for row in connection.execute(SELECT_ACCOUNTS, {"numbers": sorted(numbers)})
        }
        return cls(payments, legs, accounts)

    def remember(
        self, payment_id: str, state: ParticipantState, code: Reason | None = None, reason: str = ""
    ) -> None:
        """A payment this bank had not seen: PREPARED with its legs, or ABORTED."""
        self.payments[payment_id] = (state, code.value if code else "", reason)
        self.new_payments.append(
            {
                "payment_id": payment_id,
                "state": state,
                "reason_code": code.value if code else "",
                "reason": reason,
                "created_at": now(),
                "decided_at": None if state is ParticipantState.PREPARED else now(),
            }
        )

    def decide(self, payment_id: str, state: ParticipantState) -> None:
        code = self.payments[payment_id][1]
        self.payments[payment_id] = (state, code, self.payments[payment_id][2])
        self.decided[state].append(payment_id)

    def write(self, connection: Connection) -> None:
        """The round's changes, in a handful of statements."""
        if self.new_payments:
            connection.execute(INSERT_PAYMENTS, self.new_payments)
        if self.new_legs:
            connection.execute(INSERT_LEGS, self.new_legs)
        for state, ids in self.decided.items():
            connection.execute(DECIDE_PAYMENTS[state], {"ids": ids, "at": now()})
        changed = [a for a in self.accounts.values() if a.changed]
        if changed:
            connection.execute(
                UPDATE_ACCOUNT,
                [
                    {
                        "b_number": a.number,
                        "b_balance": a.balance,
                        "b_held": a.held,
                        "b_incoming": a.incoming,
                    }
                    for a in changed
                ],
            )
        if self.new_entries:
            connection.execute(INSERT_LEDGER, self.new_entries)


# Statements are built once: building them per round costs more than running them.
# Rows are locked in a fixed order (payments, then accounts by number) so that concurrent
# rounds wait for each other instead of deadlocking (PostgreSQL); SQLite has one writer.
SELECT_PAYMENTS = (
    select(PAYMENTS.c.payment_id, PAYMENTS.c.state, PAYMENTS.c.reason_code, PAYMENTS.c.reason)
    .where(PAYMENTS.c.payment_id.in_(bindparam("ids", expanding=True)))
    .order_by(PAYMENTS.c.payment_id)
    .with_for_update()
)
SELECT_LEGS = select(LEGS.c.payment_id, LEGS.c.side, LEGS.c.account_number, LEGS.c.amount).where(
    LEGS.c.payment_id.in_(bindparam("ids", expanding=True))
)
SELECT_ACCOUNTS = (
    select(
        ACCOUNTS.c.number,
        ACCOUNTS.c.currency,
        ACCOUNTS.c.balance,
        ACCOUNTS.c.held,
        ACCOUNTS.c.incoming,
        CUSTOMERS.c.disabled,
    )
    .join(CUSTOMERS, CUSTOMERS.c.id == ACCOUNTS.c.customer_id)
    .where(ACCOUNTS.c.number.in_(bindparam("numbers", expanding=True)))
    .order_by(ACCOUNTS.c.number)
    .with_for_update(of=ACCOUNTS)
)
INSERT_PAYMENTS = insert(PAYMENTS)
INSERT_LEGS = insert(LEGS)
INSERT_LEDGER = insert(LEDGER)
_DECIDED = PAYMENTS.c.payment_id.in_(bindparam("ids", expanding=True))
DECIDE_PAYMENTS = {
    ParticipantState.COMMITTED: update(PAYMENTS)
    .where(_DECIDED)
    .values(state=ParticipantState.COMMITTED, decided_at=bindparam("at")),
    # An abort keeps the reason a no vote gave; otherwise it says "aborted".
    ParticipantState.ABORTED: update(PAYMENTS)
    .where(_DECIDED)
    .values(
        state=ParticipantState.ABORTED,
        decided_at=bindparam("at"),
        reason_code=case((PAYMENTS.c.reason_code == "", "aborted"), else_=PAYMENTS.c.reason_code),
    ),
}
UPDATE_ACCOUNT = (
    update(ACCOUNTS)
    .where(ACCOUNTS.c.number == bindparam("b_number"))
    .values(
        balance=bindparam("b_balance"), held=bindparam("b_held"), incoming=bindparam("b_incoming")
    )
)


def prepare(connection: Connection, legs: Sequence[Leg]) -> list[VoteResult]:
    """Votes on every payment in ``legs`` (one or two legs each), in one transaction."""
    by_payment: dict[str, list[Leg]] = defaultdict(list)
    for leg in legs:
        by_payment[leg.payment_id].append(leg)
    round_ = Round.load(connection, by_payment, (leg.account for leg in legs))
    votes: list[VoteResult] = []
    for payment_id, payment_legs in by_payment.items():
        votes.extend(_prepare_payment(round_, payment_id, payment_legs))
    round_.write(connection)
    return votes


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
        accounts = [_check_leg(round_.accounts.get(leg.account), leg) for leg in legs]
    except Refusal as refusal:
        # Voting no is a unilateral abort; remember it so a repeated Prepare is refused too.
        round_.remember(payment_id, ParticipantState.ABORTED, refusal.code, refusal.reason)
        return [
            VoteResult(payment_id, leg.side, False, refusal.code, refusal.reason) for leg in legs
        ]
    round_.remember(payment_id, ParticipantState.PREPARED)
    for leg, account in zip(legs, accounts, strict=True):
        round_.new_legs.append(
            {
                "payment_id": payment_id,
                "side": leg.side,
                "account_number": account.number,
                "amount": leg.amount,
                "currency": leg.currency,
            }
        )
        if leg.side is Side.DEBIT:
            account.held += leg.amount
        else:
            account.incoming += leg.amount
        account.changed = True
    return [VoteResult(payment_id, leg.side, True) for leg in legs]


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


def commit(connection: Connection, payment_ids: Sequence[str]) -> list[str]:
    """Applies every prepared payment: holds become ledger entries. Returns those applied."""
    round_ = Round.load(connection, payment_ids)
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
            round_.decide(payment_id, ParticipantState.COMMITTED)
        applied.append(payment_id)
    round_.write(connection)
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
    round_.new_entries.append(
        {
            "account_number": account.number,
            "amount": change,
            "balance_after": account.balance,
            "payment_id": payment_id,
            "deposit_id": None,
            "created_at": now(),
        }
    )


def abort(connection: Connection, payment_ids: Sequence[str]) -> list[str]:
    """Releases every payment's holds; for an unknown payment, leaves a tombstone."""
    round_ = Round.load(connection, payment_ids)
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
            round_.decide(payment_id, ParticipantState.ABORTED)
        released.append(payment_id)
    round_.write(connection)
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
