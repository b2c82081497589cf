"""The bank as a two-phase-commit participant (voter).

Prepare checks each leg and, for a yes vote, records the payment as PREPARED with a hold on
the debited funds in the same transaction: the vote is durable before it is sent. Commit
turns holds into ledger entries; Abort releases them, or leaves a tombstone for a payment this
bank never saw so that a late Prepare is refused. Both are idempotent. After a yes vote the
bank never decides alone: it waits, and asks the coordinator (see ``recovery``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from server.bank.models import Account, BankPayment, LedgerEntry, Leg, PaymentState
from server.common.clock import now

log = logging.getLogger(__name__)

DEBIT = "debit"
CREDIT = "credit"


@dataclass(frozen=True)
class LegRequest:
    """One leg of a payment, already validated at the edge."""

    payment_id: str
    side: str  # DEBIT or CREDIT
    account: str
    amount: int
    currency: str


@dataclass(frozen=True)
class VoteResult:
    payment_id: str
    side: str
    yes: bool
    reason_code: str = ""
    reason: str = ""


class Refusal(Exception):
    """Why this bank votes no on a payment."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class Round:
    """What one 2PC round touches, loaded and locked up front: each payment this bank knows
    (with its legs) and each account (with its owner). One query each, in a fixed order, so
    that concurrent rounds wait for each other instead of deadlocking (PostgreSQL)."""

    payments: dict[str, BankPayment]
    accounts: dict[str, Account]

    @classmethod
    def load(
        cls, session: Session, payment_ids: Iterable[str], account_numbers: Iterable[str] = ()
    ) -> Round:
        payments = {
            payment.payment_id: payment
            for payment in session.scalars(
                select(BankPayment)
                .where(BankPayment.payment_id.in_(sorted(set(payment_ids))))
                .options(selectinload(BankPayment.legs))
                .order_by(BankPayment.payment_id)
                .with_for_update()
            )
        }
        numbers = set(account_numbers)
        numbers.update(leg.account_number for p in payments.values() for leg in p.legs)
        accounts = {
            account.number: account
            for account in session.scalars(
                select(Account)
                .where(Account.number.in_(sorted(numbers)))
                .options(joinedload(Account.customer, innerjoin=True))
                .order_by(Account.number)
                .with_for_update(of=Account)
            )
        }
        return cls(payments, accounts)


def prepare(session: Session, legs: Sequence[LegRequest]) -> list[VoteResult]:
    """Votes on every payment in ``legs`` (one or two legs each), in one transaction."""
    by_payment: dict[str, list[LegRequest]] = defaultdict(list)
    for leg in legs:
        by_payment[leg.payment_id].append(leg)
    round_ = Round.load(session, by_payment, (leg.account for leg in legs))
    votes: list[VoteResult] = []
    for payment_id, payment_legs in by_payment.items():
        votes.extend(_prepare_payment(session, round_, payment_id, payment_legs))
    return votes


def _prepare_payment(
    session: Session, round_: Round, payment_id: str, legs: list[LegRequest]
) -> list[VoteResult]:
    record = round_.payments.get(payment_id)
    if record is not None:
        # A repeated Prepare gets the vote this bank already gave: votes are never changed.
        yes = record.state is not PaymentState.ABORTED
        return [
            VoteResult(payment_id, leg.side, yes, record.reason_code, record.reason) for leg in legs
        ]
    try:
        accounts = [_check_leg(round_.accounts.get(leg.account), leg) for leg in legs]
    except Refusal as refusal:
        # Voting no is a unilateral abort; remember it so a repeated Prepare is refused too.
        record = BankPayment(
            payment_id=payment_id,
            state=PaymentState.ABORTED,
            reason_code=refusal.code,
            reason=refusal.reason,
            decided_at=now(),
        )
        session.add(record)
        round_.payments[payment_id] = record
        return [
            VoteResult(payment_id, leg.side, False, refusal.code, refusal.reason) for leg in legs
        ]
    record = BankPayment(payment_id=payment_id, state=PaymentState.PREPARED)
    session.add(record)
    round_.payments[payment_id] = record
    for leg, account in zip(legs, accounts, strict=True):
        record.legs.append(
            Leg(
                side=leg.side,
                account_number=account.number,
                amount=leg.amount,
                currency=leg.currency,
            )
        )
        if leg.side == DEBIT:
            account.held += leg.amount
    return [VoteResult(payment_id, leg.side, True) for leg in legs]


def _check_leg(account: Account | None, leg: LegRequest) -> Account:
    if account is None:
        raise Refusal("account_not_found", f"account {leg.account} does not exist")
    if account.customer.disabled:
        raise Refusal("account_disabled", f"account {leg.account} is disabled")
    if account.currency != leg.currency:
        raise Refusal(
            "currency_mismatch",
            f"account {leg.account} holds {account.currency}, not {leg.currency}",
        )
    if leg.side == DEBIT and account.available < leg.amount:
        raise Refusal("insufficient_funds", f"insufficient funds in account {leg.account}")
    return account


def commit(session: Session, payment_ids: Sequence[str]) -> list[str]:
    """Applies every prepared payment: holds become ledger entries. Returns those applied."""
    round_ = Round.load(session, payment_ids)
    applied = []
    for payment_id in payment_ids:
        record = round_.payments.get(payment_id)
        if record is None or record.state is PaymentState.ABORTED:
            # The coordinator commits only after every yes vote: this is a bug there. Refuse
            # this one without failing the others in the round.
            log.error("refused commit of payment %s: this bank did not vote yes", payment_id)
            continue
        if record.state is PaymentState.PREPARED:
            for leg in record.legs:
                _apply_leg(session, round_.accounts[leg.account_number], payment_id, leg)
            record.state = PaymentState.COMMITTED
            record.decided_at = now()
        applied.append(payment_id)
    return applied


def _apply_leg(session: Session, account: Account, payment_id: str, leg: Leg) -> None:
    if leg.side == DEBIT:
        account.held -= leg.amount
        account.balance -= leg.amount
        change = -leg.amount
    else:
        account.balance += leg.amount
        change = leg.amount
    session.add(
        LedgerEntry(
            account_number=account.number,
            amount=change,
            balance_after=account.balance,
            payment_id=payment_id,
        )
    )


def abort(session: Session, payment_ids: Sequence[str]) -> list[str]:
    """Releases every payment's holds; for an unknown payment, leaves a tombstone."""
    round_ = Round.load(session, payment_ids)
    released = []
    for payment_id in payment_ids:
        record = round_.payments.get(payment_id)
        if record is None:
            record = BankPayment(
                payment_id=payment_id,
                state=PaymentState.ABORTED,
                reason_code="aborted",
                reason="aborted by the coordinator",
                decided_at=now(),
            )
            session.add(record)
            round_.payments[payment_id] = record
        elif record.state is PaymentState.COMMITTED:
            log.error("refused abort of payment %s: it is already committed", payment_id)
            continue
        elif record.state is PaymentState.PREPARED:
            for leg in record.legs:
                if leg.side == DEBIT:
                    round_.accounts[leg.account_number].held -= leg.amount
            record.state = PaymentState.ABORTED
            record.reason_code = record.reason_code or "aborted"
            record.decided_at = now()
        released.append(payment_id)
    return released


def in_doubt(session: Session, older_than: float, limit: int = 500) -> list[str]:
    """Payments this bank voted yes on and has heard no decision for since ``older_than``."""
    return list(
        session.scalars(
            select(BankPayment.payment_id)
            .where(BankPayment.state == PaymentState.PREPARED, BankPayment.created_at < older_than)
            .order_by(BankPayment.created_at)
            .limit(limit)
        )
    )


def count_in_doubt(session: Session) -> int:
    query = select(func.count()).select_from(BankPayment)
    return int(session.scalar(query.where(BankPayment.state == PaymentState.PREPARED)) or 0)
