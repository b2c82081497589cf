"""The coordinator's durable log: payments, their decisions and idempotency keys, in the
gateway's database. Plain functions over a connection or session; each round of a phase is
one call here, so one transaction covers every payment in the round."""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import hashlib
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    and_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from minipay.errors import ErrorReason
from server.common import fastsql, validation
from server.common.clock import now
from server.common.db import db_now
from server.common.errors import InvalidArgument
from server.common.vocabulary import Reason
from server.gateway.models import Base, CoordinatorState, Payment
from server.gateway.payment_state import Decision, Status, decided_state, status_of

# A payee sees an incoming payment once it is committed, never while the payer's bank may
# still refuse it, and never why the payer's side failed.
VISIBLE_TO_PAYEE = (CoordinatorState.COMMITTING, CoordinatorState.COMMITTED)
OPEN_STATES = (CoordinatorState.PREPARING, CoordinatorState.COMMITTING, CoordinatorState.ABORTING)


@dataclasses.dataclass(frozen=True)
class PaymentOrder:
    """A validated request to pay, with the payer's account taken from their token."""

    payer: str
    from_bank: str
    from_account: str
    to_bank: str
    to_account: str
    amount: int  # minor units
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
    amount: int  # minor units
    currency: str
    state: CoordinatorState
    reason_code: str
    reason: str
    deadline: float
    created_at: float
    owner_token: int | None = None  # the fencing token of the replica driving it
    decided_by: int | None = None  # ... and of the one that decided it
    decided_at: float | None = None
    decided_now: bool = False  # set by ``decide`` when this call made the decision

    @property
    def banks(self) -> list[str]:
        return list(dict.fromkeys([self.from_bank, self.to_bank]))

    @property
    def reason_enum(self) -> Reason | None:
        return Reason.parse(self.reason_code) if self.reason_code else None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a caller of Pay learns: the payment as it stands, and whether this answer
    replays an earlier request with the same key."""

    payment: PaymentView
    replayed: bool = False

    @property
    def payment_id(self) -> str:
        return self.payment.id

    @property
    def status(self) -> Status:
        return status_of(self.payment.state)

    @property
    def reason_code(self) -> Reason | None:
        return self.payment.reason_enum

    @property
    def reason(self) -> str:
        return self.payment.reason


class RecordKind(enum.Enum):
    NEW = "new"  # recorded now, as PREPARING
    REPLAY = "replay"  # the key made this payment before, with the same parameters
    KEY_REUSED = "key_reused"  # the key made another payment: refused


@dataclasses.dataclass(frozen=True)
class Recorded:
    kind: RecordKind
    payment: PaymentView | None  # None for KEY_REUSED: the other payment is not shown


# Core table: each round reads and writes in set-based statements.
PAYMENTS = Base.metadata.tables["payments"]
REPLICAS = Base.metadata.tables["replicas"]
VIEW_FIELDS = [f.name for f in dataclasses.fields(PaymentView) if f.name != "decided_now"]
VIEW_COLUMNS = [PAYMENTS.c[name] for name in VIEW_FIELDS]
INSERTED_COLUMNS = (*VIEW_FIELDS, "idempotency_key", "fingerprint")


def view(payment: Payment | Row[Any]) -> PaymentView:
    return PaymentView(*(getattr(payment, name) for name in VIEW_FIELDS))


def new_payment_id(at: float | None = None, random_bits: int | None = None) -> str:
    """A payment id: "pay_", the creation time in milliseconds and 80 random bits, in hex.

    Time first, as in UUIDv7: ids made together sort together, so a new payment lands on the
    last page of every index on its id instead of on a random page of a large table."""
    millis = int((time.time() if at is None else at) * 1000)
    bits = secrets.randbits(80) if random_bits is None else random_bits
    return f"pay_{millis:012x}{bits:020x}"


def record(
    connection: Connection, orders: Sequence[PaymentOrder], timeout: float, owner: int
) -> list[Recorded]:
    """Records each new payment as PREPARING, owned by the replica with fencing token OWNER,
    or finds the payment its key already made.

    The unique (payer, idempotency key) index decides between racing requests: every new
    row is inserted or skipped in one statement, and a skipped one is looked up after.
    """
    created_at = now()
    fresh: dict[tuple[str, str], PaymentView] = {}
    fingerprints: dict[tuple[str, str], str] = {}
    values: list[Any] = []
    # Rows go in key order: two replicas inserting the same keys then lock them in the same
    # order, so they never deadlock.
    for order in sorted(orders, key=lambda o: (o.payer, o.idempotency_key)):
        key = (order.payer, order.idempotency_key)
        if key in fresh:
            continue  # the same key twice in one round: the later ones refer to the first
        payment = fresh[key] = _new_payment(order, created_at, timeout, owner)
        fingerprints[key] = order.fingerprint
        values.extend(_row_of(payment))
        values.extend((order.idempotency_key, order.fingerprint))
    inserted = {
        row[0] for row in fastsql.execute(connection, _insert_or_nothing(len(fresh)), values)
    }
    taken = [key for key, payment in fresh.items() if payment.id not in inserted]
    known = _by_keys(connection, taken) if taken else {}
    known.update(
        (key, (payment, fingerprints[key]))
        for key, payment in fresh.items()
        if payment.id in inserted
    )
    results = []
    for order in orders:
        key = (order.payer, order.idempotency_key)
        payment, fingerprint = known[key]
        if fingerprint != order.fingerprint:
            results.append(Recorded(RecordKind.KEY_REUSED, None))
        elif payment.id in inserted:
            results.append(Recorded(RecordKind.NEW, payment))
            inserted.discard(payment.id)  # a repeat of the key later in this round replays it
        else:
            results.append(Recorded(RecordKind.REPLAY, payment))
    return results


def _new_payment(order: PaymentOrder, created_at: float, timeout: float, owner: int) -> PaymentView:
    return PaymentView(
        id=new_payment_id(),
        payer=order.payer,
        from_bank=order.from_bank,
        from_account=order.from_account,
        to_bank=order.to_bank,
        to_account=order.to_account,
        amount=order.amount,
        currency=order.currency,
        state=CoordinatorState.PREPARING,
        reason_code="",
        reason="",
        deadline=created_at + timeout,
        created_at=created_at,
        owner_token=owner,
    )


@functools.lru_cache(maxsize=512)
def _insert_or_nothing(count: int) -> str:
    """INSERT of COUNT payment rows, skipping any whose (payer, key) exists, RETURNING the ids
    inserted: one statement for a round's payments."""
    row = "(" + ", ".join("?" * len(INSERTED_COLUMNS)) + ")"
    return (
        f"INSERT INTO payments ({', '.join(INSERTED_COLUMNS)}) VALUES "
        + ", ".join([row] * count)
        + " ON CONFLICT (payer, idempotency_key) DO NOTHING RETURNING id"
    )


def _by_keys(
    connection: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[PaymentView, str]]:
    wanted = set(keys)
    payers = sorted({payer for payer, _ in keys})
    idempotency_keys = sorted({key for _, key in keys})
    # Both columns, so the (payer, idempotency_key) unique index serves it.
    rows = connection.execute(
        select(*VIEW_COLUMNS, PAYMENTS.c.idempotency_key, PAYMENTS.c.fingerprint).where(
            PAYMENTS.c.payer.in_(payers), PAYMENTS.c.idempotency_key.in_(idempotency_keys)
        )
    )
    return {
        (row.payer, row.idempotency_key): (view(row), row.fingerprint)
        for row in rows
        if (row.payer, row.idempotency_key) in wanted
    }


@dataclasses.dataclass(frozen=True)
class Deciding:
    """A decision to store, by the replica incarnation whose fencing token is ``owner``."""

    payment_id: str
    decision: Decision
    owner: int


def decide(
    connection: Connection,
    decisions: Sequence[Deciding],
    completed: Sequence[tuple[str, int]] = (),
) -> list[PaymentView]:
    """Stores each decision, if the payment is still undecided and still owned by the one
    deciding (a fencing token: a replica that lost a payment can never decide it); returns
    what stands. COMPLETED payments (every bank acknowledged) are marked finished in the
    same transaction."""
    groups: dict[tuple[int, CoordinatorState, str, str], list[str]] = defaultdict(list)
    for item in decisions:
        decision = item.decision
        code = decision.reason_code.value if decision.reason_code else ""
        key = (item.owner, decided_state(decision), code, decision.reason[:200])
        groups[key].append(item.payment_id)
    decided_now: dict[str, PaymentView] = {}
    moment = now()
    for (owner, state, code, reason), ids in groups.items():
        parameters = [state.value, code, reason, moment, owner, *ids, owner]
        for row in fastsql.execute(connection, DECIDE, parameters, len(ids)):
            decided_now[row[0]] = dataclasses.replace(_view_of(row), decided_now=True)
    if completed:
        complete(connection, completed)
    current = by_ids(
        connection, [d.payment_id for d in decisions if d.payment_id not in decided_now]
    )
    current.update(decided_now)
    return [current[item.payment_id] for item in decisions]


def undelivered(connection: Connection, bank: str, account: str) -> list[PaymentView]:
    """The account's decided payments that not every bank has acknowledged yet."""
    rows = fastsql.execute(connection, SELECT_UNDELIVERED, [bank, account, bank, account])
    return [_view_of(row) for row in rows]


def by_ids(connection: Connection, payment_ids: Sequence[str]) -> dict[str, PaymentView]:
    if not payment_ids:
        return {}
    ids = sorted(set(payment_ids))
    return {row[0]: _view_of(row) for row in fastsql.execute(connection, BY_IDS, ids, len(ids))}


def complete(connection: Connection, finished: Sequence[tuple[str, int]]) -> None:
    """Marks decided payments finished once every bank acknowledged the decision: each
    (payment id, owner) only while that owner still holds it."""
    by_owner: dict[int, list[str]] = defaultdict(list)
    for payment_id, owner in finished:
        by_owner[owner].append(payment_id)
    moment = now()
    for owner, ids in by_owner.items():
        fastsql.execute(connection, COMPLETE, [moment, *ids, owner], len(ids))


def claim_orphans(
    connection: Connection, owner: int, payment_ids: Sequence[str] | None = None, limit: int = 500
) -> list[PaymentView]:
    """Takes over open payments whose owner's lease has passed (those among PAYMENT_IDS, or
    any): they are OWNER's from now, and their old owner's writes are refused. A row another
    transaction holds is skipped (PostgreSQL) and taken on a later pass."""
    orphans = select(PAYMENTS.c.id).where(PAYMENTS.c.state.in_(OPEN_STATES), _ownerless())
    if payment_ids is not None:
        orphans = orphans.where(PAYMENTS.c.id.in_(list(payment_ids)))
    orphans = orphans.order_by(PAYMENTS.c.created_at).limit(limit).with_for_update(skip_locked=True)
    ids = list(connection.execute(orphans).scalars())
    if not ids:
        return []
    claimed = list(
        connection.execute(
            update(PAYMENTS)
            .where(PAYMENTS.c.id.in_(ids), PAYMENTS.c.state.in_(OPEN_STATES), _ownerless())
            .values(owner_token=owner)
            .returning(PAYMENTS.c.id)
        ).scalars()
    )
    return list(by_ids(connection, claimed).values())


def owned_open(connection: Connection, owner: int, limit: int = 500) -> list[PaymentView]:
    """OWNER's own open payments (after a restart of the coordinator, say)."""
    rows = connection.execute(
        select(*VIEW_COLUMNS)
        .where(PAYMENTS.c.state.in_(OPEN_STATES), PAYMENTS.c.owner_token == owner)
        .order_by(PAYMENTS.c.created_at)
        .limit(limit)
    )
    return [view(row) for row in rows]


def _ownerless() -> ColumnElement[bool]:
    """SQL: the payment's owner holds no live lease (in the database's clock)."""
    live = select(REPLICAS.c.token).where(REPLICAS.c.lease_expires_at > db_now())
    return or_(PAYMENTS.c.owner_token.is_(None), PAYMENTS.c.owner_token.not_in(live))


# The statements every round runs, in the SQL both dialects speak (see ``fastsql``).
_COLUMNS = ", ".join(VIEW_FIELDS)
BY_IDS = f"SELECT {_COLUMNS} FROM payments WHERE id IN ({{in}})"
DECIDE = (
    "UPDATE payments SET state = ?, reason_code = ?, reason = ?, decided_at = ?, decided_by = ? "
    f"WHERE id IN ({{in}}) AND state = 'PREPARING' AND owner_token = ? RETURNING {_COLUMNS}"
)
COMPLETE = (
    "UPDATE payments SET completed_at = ?, "
    "state = CASE state WHEN 'COMMITTING' THEN 'COMMITTED' ELSE 'ABORTED' END "
    "WHERE id IN ({in}) AND state IN ('COMMITTING', 'ABORTING') AND owner_token = ?"
)
# Both sides of the account, each served by its (bank, account, created_at) index.
SELECT_UNDELIVERED = (
    f"SELECT {_COLUMNS} FROM payments WHERE state IN ('COMMITTING', 'ABORTING') "
    "AND from_bank = ? AND from_account = ? "
    f"UNION ALL SELECT {_COLUMNS} FROM payments WHERE state IN ('COMMITTING', 'ABORTING') "
    "AND to_bank = ? AND to_account = ?"
)


def _row_of(payment: PaymentView) -> tuple[Any, ...]:
    values = [getattr(payment, name) for name in VIEW_FIELDS]
    values[8] = payment.state.value  # the drivers take plain strings
    return tuple(values)


def _view_of(row: Sequence[Any]) -> PaymentView:
    """A view from a row of the columns VIEW_FIELDS names, in that order."""
    values = list(row[: len(VIEW_FIELDS)])
    values[8] = CoordinatorState(values[8])
    return PaymentView(*values)


def get(session: Session, payment_ids: Sequence[str]) -> dict[str, PaymentView]:
    rows = session.scalars(select(Payment).where(Payment.id.in_(list(payment_ids))))
    return {row.id: view(row) for row in rows}


def forget_keys(session: Session, older_than: float, batch: int = 1000) -> int:
    """Clears the keys of finished payments past their lifetime so they can be used again,
    up to BATCH per call. The rows come from the index of remembered keys by age (a plain
    WHERE would let SQLite pick the state index and read every finished payment); an open
    payment keeps its key until it finishes."""
    result = session.execute(FORGET_KEYS, {"cutoff": older_than, "batch": batch})
    return int(getattr(result, "rowcount", 0) or 0)


FORGET_KEYS = text(
    "UPDATE payments SET idempotency_key = CASE WHEN state IN ('COMMITTED', 'ABORTED') "
    "THEN NULL ELSE idempotency_key END WHERE id IN (SELECT id FROM payments "
    "WHERE idempotency_key IS NOT NULL AND created_at < :cutoff ORDER BY created_at "
    "LIMIT :batch)"
)


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


_STATES_OF_STATUS = {
    Status.PENDING: (CoordinatorState.PREPARING,),
    Status.COMMITTED: (CoordinatorState.COMMITTING, CoordinatorState.COMMITTED),
    Status.ABORTED: (CoordinatorState.ABORTING, CoordinatorState.ABORTED),
}


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
        statement = statement.where(Payment.state.in_(_STATES_OF_STATUS[query.status]))
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
