"""The coordinator's durable log: payments, their decisions and idempotency keys, in the
gateway's database. Plain functions over a session; each round of a phase is one call here,
so one transaction covers every payment in the round."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import uuid
from collections.abc import Sequence

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from server.common.clock import now
from server.common.errors import InvalidArgument
from server.gateway.models import Payment, PaymentState
from server.gateway.payment_state import Decision, decided_state, finished_state


@dataclasses.dataclass(frozen=True)
class PaymentOrder:
    """A validated request to pay, with the payer's account taken from their token."""

    payer: str
    from_bank: str
    from_account: str
    to_bank: str
    to_account: str
    amount: int
    currency: str
    idempotency_key: str

    @property
    def fingerprint(self) -> str:
        text = f"{self.to_bank}|{self.to_account}|{self.amount}|{self.currency}"
        return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class PaymentView:
    """A detached snapshot of a payment row."""

    id: str
    payer: str
    from_bank: str
    from_account: str
    to_bank: str
    to_account: str
    amount: int
    currency: str
    state: PaymentState
    reason_code: str
    reason: str
    deadline: float
    created_at: float
    decided_now: bool = False  # set by ``decide`` when this call made the decision

    @property
    def banks(self) -> list[str]:
        return list(dict.fromkeys([self.from_bank, self.to_bank]))


def view(payment: Payment) -> PaymentView:
    return PaymentView(
        payment.id,
        payment.payer,
        payment.from_bank,
        payment.from_account,
        payment.to_bank,
        payment.to_account,
        payment.amount,
        payment.currency,
        payment.state,
        payment.reason_code,
        payment.reason,
        payment.deadline,
        payment.created_at,
    )


@dataclasses.dataclass(frozen=True)
class Recorded:
    payment: PaymentView
    created: bool  # False: the key was seen before and this is that payment


def new_payment_id() -> str:
    return "pay_" + uuid.uuid4().hex


def record(
    session: Session, orders: Sequence[PaymentOrder], timeout: float
) -> list[Recorded | InvalidArgument]:
    """Records each new payment as PREPARING, or finds the payment its key already made."""
    keys = {order.idempotency_key for order in orders}
    known = {
        (payment.payer, payment.idempotency_key): payment
        for payment in session.scalars(select(Payment).where(Payment.idempotency_key.in_(keys)))
    }
    results: list[Recorded | InvalidArgument] = []
    for order in orders:
        existing = known.get((order.payer, order.idempotency_key))
        if existing is not None:
            if existing.fingerprint != order.fingerprint:
                results.append(
                    InvalidArgument(
                        "this idempotency key was already used for a different payment; "
                        "use a new key for a new payment"
                    )
                )
            else:
                results.append(Recorded(view(existing), created=False))
            continue
        created_at = now()
        payment = Payment(
            id=new_payment_id(),
            payer=order.payer,
            from_bank=order.from_bank,
            from_account=order.from_account,
            to_bank=order.to_bank,
            to_account=order.to_account,
            amount=order.amount,
            currency=order.currency,
            state=PaymentState.PREPARING,
            idempotency_key=order.idempotency_key,
            fingerprint=order.fingerprint,
            deadline=created_at + timeout,
            created_at=created_at,
            reason_code="",
            reason="",
        )
        session.add(payment)
        # A duplicate later in this round finds this one.
        known[(order.payer, order.idempotency_key)] = payment
        results.append(Recorded(view(payment), created=True))
    return results


def _locked(session: Session, payment_ids: Sequence[str]) -> dict[str, Payment]:
    rows = session.scalars(
        select(Payment)
        .where(Payment.id.in_(sorted(set(payment_ids))))
        .order_by(Payment.id)
        .with_for_update()
    )
    return {row.id: row for row in rows}


def decide(session: Session, decisions: Sequence[tuple[str, Decision]]) -> list[PaymentView]:
    """Stores each decision unless the payment was already decided; returns what stands."""
    payments = _locked(session, [payment_id for payment_id, _ in decisions])
    stored = []
    for payment_id, decision in decisions:
        payment = payments[payment_id]
        decided_now = payment.state is PaymentState.PREPARING
        if decided_now:
            payment.state = decided_state(decision)
            payment.reason_code = decision.reason_code
            payment.reason = decision.reason
            payment.decided_at = now()
        stored.append(dataclasses.replace(view(payment), decided_now=decided_now))
    return stored


def complete(session: Session, payment_ids: Sequence[str]) -> list[None]:
    for payment in _locked(session, payment_ids).values():
        payment.state = finished_state(payment.state)
        payment.completed_at = now()
    return [None] * len(payment_ids)


def get(session: Session, payment_ids: Sequence[str]) -> dict[str, PaymentView]:
    rows = session.scalars(select(Payment).where(Payment.id.in_(list(payment_ids))))
    return {row.id: view(row) for row in rows}


def in_state(
    session: Session, states: Sequence[PaymentState], limit: int = 1000
) -> list[PaymentView]:
    rows = session.scalars(
        select(Payment)
        .where(Payment.state.in_(list(states)))
        .order_by(Payment.created_at)
        .limit(limit)
    )
    return [view(row) for row in rows]


def forget_keys(session: Session, older_than: float) -> int:
    """Clears idempotency keys past their lifetime so they can be used again."""
    result = session.execute(
        update(Payment)
        .where(
            Payment.idempotency_key.is_not(None),
            Payment.created_at < older_than,
            Payment.state.in_([PaymentState.COMMITTED, PaymentState.ABORTED]),
        )
        .values(idempotency_key=None)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def history(
    session: Session, bank: str, account: str, page_size: int, page_token: str
) -> tuple[list[PaymentView], str]:
    """The account's payments, both directions, newest first; keyset-paginated."""
    mine = or_(
        and_(Payment.from_bank == bank, Payment.from_account == account),
        and_(Payment.to_bank == bank, Payment.to_account == account),
    )
    query = select(Payment).where(mine)
    if page_token:
        created_at, payment_id = _decode_cursor(page_token)
        query = query.where(
            or_(
                Payment.created_at < created_at,
                and_(Payment.created_at == created_at, Payment.id < payment_id),
            )
        )
    rows = list(
        session.scalars(
            query.order_by(Payment.created_at.desc(), Payment.id.desc()).limit(page_size + 1)
        )
    )
    more = len(rows) > page_size
    rows = rows[:page_size]
    next_token = _encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else ""
    return [view(row) for row in rows], next_token


def _encode_cursor(created_at: float, payment_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at!r}|{payment_id}".encode()).decode()


def _decode_cursor(token: str) -> tuple[float, str]:
    try:
        created_at, payment_id = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
        return float(created_at), payment_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not one this server gave out") from None
