"""What an account may read of the payment log: which payments it sees (the ones it made,
and those it received once committed), its history, newest first, in pages with opaque
cursors, and a payment's refunds; and what an admin reads: every payment, filtered and
paged. Read only; the coordinator writes the log (``payment_log``).

A refund follows the same rule as any payment: its payer (the refunding payee) sees it in
every state, with its reasons; its payee (the original's payer) once it committed."""

from __future__ import annotations

import base64
import dataclasses
import enum
from collections.abc import Callable, Sequence

from sqlalchemy import ColumnElement, Select, and_, or_, select, true
from sqlalchemy.orm import Session

from minipay.errors import ErrorReason
from server.common import validation
from server.common.errors import InvalidArgument, NotFound
from server.common.vocabulary import Status
from server.gateway.models import Payment, PaymentPayee
from server.gateway.payment_log import view, with_shares
from server.gateway.payment_state import PaymentKind, PaymentView, states_of

# A payee sees an incoming payment once it is committed, never while the payer's bank may
# still refuse it, and never why the payer's side failed.
VISIBLE_TO_PAYEE = states_of(Status.COMMITTED)
# The refunds of a payment shown with it: the newest ones (ListHistory has them all).
MAX_REFUNDS_SHOWN = 100
# Rows one page of every payment reads at most from each index it reads: with filters that
# few payments pass, a page may come back short (even empty), with a token to read on.
SCAN_ROWS = 1000


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
    kind: PaymentKind | None = None  # payments and refunds


def not_found(payment_id: str, words: str = "that you made or received") -> NotFound:
    """Someone else's payment is answered exactly like one that does not exist."""
    return NotFound(
        f"no payment with this id {words}".strip(),
        ErrorReason.PAYMENT_NOT_FOUND,
        metadata={"payment_id": payment_id},
    )


def visible_to(payment: PaymentView, bank: str, account: str) -> bool:
    """Whether the owner of BANK/ACCOUNT may see PAYMENT: one they made, or one they
    received once it committed."""
    if (payment.from_bank, payment.from_account) == (bank, account):
        return True
    return payment.pays(bank, account) and payment.state in VISIBLE_TO_PAYEE


def history(session: Session, query: HistoryQuery) -> tuple[list[PaymentView], str]:
    """The account's payments, newest first, keyset-paginated: the payments it made, and
    those it received that committed; filtered by QUERY's status, direction and times.

    Outgoing and incoming payments are read apart, each along its own (bank, account,
    created_at) index newest first and stopping after a page, then merged: one query with
    an OR would read and sort every payment the account ever made."""
    outgoing = select(Payment).where(
        Payment.from_bank == query.bank, Payment.from_account == query.account
    )
    incoming = select(Payment).where(
        Payment.to_bank == query.bank,
        Payment.to_account == query.account,
        Payment.state.in_(VISIBLE_TO_PAYEE),
    )
    # The split payments paying the account, found by their payees' (bank, account) index.
    split = (
        select(Payment)
        .join(PaymentPayee, PaymentPayee.payment_id == Payment.id)
        .where(
            PaymentPayee.bank == query.bank,
            PaymentPayee.account == query.account,
            Payment.state.in_(VISIBLE_TO_PAYEE),
        )
    )
    sides = {Direction.OUTGOING: [outgoing], Direction.INCOMING: [incoming, split]}
    wanted = [query.direction] if query.direction is not None else list(Direction)
    rows = [
        row
        for side in wanted
        for source in sides[side]
        for row in session.scalars(_page(source, query))
    ]
    rows.sort(key=lambda row: (row.created_at, row.id), reverse=True)
    more = len(rows) > query.page_size
    rows = rows[: query.page_size]
    next_token = _encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else ""
    return with_shares(session.connection(), [view(row) for row in rows]), next_token


def _page(statement: Select[tuple[Payment]], query: HistoryQuery) -> Select[tuple[Payment]]:
    """One side's next page (and one more row, to tell whether there is a next page)."""
    if query.status is not None:
        statement = statement.where(Payment.state.in_(states_of(query.status)))
    if query.kind is not None:
        statement = statement.where(_of_kind(query.kind))
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


def _of_kind(kind: PaymentKind) -> ColumnElement[bool]:
    if kind is PaymentKind.REFUND:
        return Payment.refund_of.is_not(None)
    return Payment.refund_of.is_(None)


def refunds_of(session: Session, payment_id: str) -> list[PaymentView]:
    """The refunds of a payment, oldest first: its newest MAX_REFUNDS_SHOWN, in any state
    (who may see which is ``visible_to``'s)."""
    newest = session.scalars(
        select(Payment)
        .where(Payment.refund_of == payment_id)
        .order_by(Payment.created_at.desc(), Payment.id.desc())
        .limit(MAX_REFUNDS_SHOWN)
    )
    return with_shares(session.connection(), [view(row) for row in reversed(list(newest))])


@dataclasses.dataclass(frozen=True)
class PaymentsQuery:
    """One page of every payment (an admin's view): which, from where."""

    page_size: int
    page_token: str = ""
    bank: str | None = None  # paid from or to this bank
    account: str | None = None  # ... from or to this account of it
    status: Status | None = None
    kind: PaymentKind | None = None
    created_from: float | None = None  # inclusive, seconds since the epoch
    created_before: float | None = None  # exclusive


def all_payments(session: Session, query: PaymentsQuery) -> tuple[list[PaymentView], str]:
    """Every payment QUERY asks for, newest first, keyset-paginated, each page reading at
    most SCAN_ROWS rows of each index it reads: an account's payments along its two
    (bank, account, created_at) indexes, refunds along their own (created_at, id) index,
    anything else along (created_at, id). Filters no index serves are checked on the rows
    read; a page they leave short ends where the reading stopped, and its token reads on
    from there."""
    checks = _row_checks(query)
    if query.bank is not None and query.account is not None:
        paid_by_split = select(PaymentPayee.payment_id).where(
            PaymentPayee.bank == query.bank, PaymentPayee.account == query.account
        )
        sources = [
            and_(Payment.from_bank == query.bank, Payment.from_account == query.account),
            and_(Payment.to_bank == query.bank, Payment.to_account == query.account),
            Payment.id.in_(paid_by_split),
        ]
    elif query.kind is PaymentKind.REFUND:
        sources = [_of_kind(PaymentKind.REFUND)]  # the refunds' own (created_at, id) index
    else:
        sources = [true()]
    window = max(SCAN_ROWS, query.page_size + 1) if checks else query.page_size + 1
    found: list[PaymentView] = []
    frontier: tuple[float, str] | None = None  # the newest place a full window stopped at
    for source in sources:
        rows = list(session.scalars(_window(source, query, window)))
        if len(rows) == window:
            frontier = max(frontier or _key(rows[-1]), _key(rows[-1]))
        views = with_shares(session.connection(), [view(row) for row in rows])
        found += [row for row in views if all(check(row) for check in checks)]
    # Below the frontier, a source that stopped there may hold rows not read yet.
    found = [row for row in found if frontier is None or _key(row) >= frontier]
    found.sort(key=_key, reverse=True)
    page = found[: query.page_size]
    if len(found) > query.page_size:
        next_token = _encode_cursor(*_key(page[-1]))
    else:
        next_token = _encode_cursor(*frontier) if frontier is not None else ""
    return page, next_token


def _window(source: ColumnElement[bool], query: PaymentsQuery, rows: int) -> Select[tuple[Payment]]:
    """ROWS rows of one index after the page token, within the time range."""
    statement = select(Payment).where(source)
    if query.created_from is not None:
        statement = statement.where(Payment.created_at >= query.created_from)
    if query.created_before is not None:
        statement = statement.where(Payment.created_at < query.created_before)
    if query.page_token:
        created_at, payment_id = _decode_cursor(query.page_token)
        # The first condition bounds the index range; the second breaks ties.
        statement = statement.where(
            Payment.created_at <= created_at,
            or_(Payment.created_at < created_at, Payment.id < payment_id),
        )
    return statement.order_by(Payment.created_at.desc(), Payment.id.desc()).limit(rows)


def _row_checks(query: PaymentsQuery) -> Sequence[Callable[[PaymentView], bool]]:
    """The filters QUERY's index does not serve, as checks of a payment read."""
    checks: list[Callable[[PaymentView], bool]] = []
    if query.bank is not None and query.account is None:
        bank = query.bank
        checks.append(
            lambda row: (
                bank in (row.from_bank, row.to_bank)
                or any(share.bank == bank for share in row.shares)
            )
        )
    if query.status is not None:
        states = states_of(query.status)
        checks.append(lambda row: row.state in states)
    if query.kind is not None:
        refunds = query.kind is PaymentKind.REFUND
        checks.append(lambda row: (row.refund_of is not None) == refunds)
    return checks


def _key(row: Payment | PaymentView) -> tuple[float, str]:
    return (row.created_at, row.id)


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
