"""What an account may read of the payment log: which payments it sees (the ones it made,
and those it received once committed) and its history, newest first, in pages with opaque
cursors. Read only; the coordinator writes the log (``payment_log``)."""

from __future__ import annotations

import base64
import dataclasses
import enum

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.orm import Session

from minipay.errors import ErrorReason
from server.common import validation
from server.common.errors import InvalidArgument
from server.common.vocabulary import Status
from server.gateway.models import Payment
from server.gateway.payment_log import view
from server.gateway.payment_state import PaymentView, states_of

# A payee sees an incoming payment once it is committed, never while the payer's bank may
# still refuse it, and never why the payer's side failed.
VISIBLE_TO_PAYEE = states_of(Status.COMMITTED)


class Direction(enum.Enum):
    OUTGOING = "outgoing"  # the account paid
    INCOMING = "incoming"  # the account was paid


@dataclasses.dataclass(frozen=True)
class HistoryQuery:
    """One page of an account's history: which payments, from where."""

    bank: str
    account: str
    page_size: int
    page_token: str = ""
    status: Status | None = None  # any
    direction: Direction | None = None  # both
    created_from: float | None = None  # inclusive, seconds since the epoch
    created_before: float | None = None  # exclusive


def visible_to(payment: PaymentView, bank: str, account: str) -> bool:
    """Whether the owner of BANK/ACCOUNT may see PAYMENT: one they made, or one they
    received once it committed."""
    if (payment.from_bank, payment.from_account) == (bank, account):
        return True
    paid = (payment.to_bank, payment.to_account) == (bank, account)
    return paid and payment.state in VISIBLE_TO_PAYEE


def history(session: Session, query: HistoryQuery) -> tuple[list[PaymentView], str]:
    """The account's payments, newest first, keyset-paginated: the payments it made, and
    those it received that committed; filtered by QUERY's status, direction and times.

    Outgoing and incoming payments are read apart, each along its own (bank, account,
    created_at) index newest first and stopping after a page, then merged: one query with
    an OR would read and sort every payment the account ever made."""
    outgoing = and_(Payment.from_bank == query.bank, Payment.from_account == query.account)
    incoming = and_(
        Payment.to_bank == query.bank,
        Payment.to_account == query.account,
        Payment.state.in_(VISIBLE_TO_PAYEE),
    )
    sides = {Direction.OUTGOING: outgoing, Direction.INCOMING: incoming}
    wanted = [query.direction] if query.direction is not None else list(Direction)
    rows = [row for side in wanted for row in session.scalars(_page(sides[side], query))]
    rows.sort(key=lambda row: (row.created_at, row.id), reverse=True)
    more = len(rows) > query.page_size
    rows = rows[: query.page_size]
    next_token = _encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else ""
    return [view(row) for row in rows], next_token


def _page(side: ColumnElement[bool], query: HistoryQuery) -> Select[tuple[Payment]]:
    """One side's next page (and one more row, to tell whether there is a next page)."""
    statement = select(Payment).where(side)
    if query.status is not None:
        statement = statement.where(Payment.state.in_(states_of(query.status)))
    if query.created_from is not None:
        statement = statement.where(Payment.created_at >= query.created_from)
    if query.created_before is not None:
        statement = statement.where(Payment.created_at < query.created_before)
    if query.page_token:
        created_at, payment_id = _decode_cursor(query.page_token)
        statement = statement.where(
            or_(
                Payment.created_at < created_at,
                and_(Payment.created_at == created_at, Payment.id < payment_id),
            )
        )
    ordered = statement.order_by(Payment.created_at.desc(), Payment.id.desc())
    return ordered.limit(query.page_size + 1)


def _encode_cursor(created_at: float, payment_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at!r}|{payment_id}".encode()).decode()


def _decode_cursor(token: str) -> tuple[float, str]:
    try:
        created_at, payment_id = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
        return float(created_at), validation.payment_id(payment_id)
    except (ValueError, UnicodeDecodeError, InvalidArgument):
        raise InvalidArgument(
            "page_token is not one this server gave out",
            ErrorReason.INVALID_PAGE_TOKEN,
            field="page_token",
        ) from None
