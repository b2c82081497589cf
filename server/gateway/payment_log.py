"""The coordinator's durable log: payments, their decisions and idempotency keys, in the
gateway's database. Plain functions over a connection or session; each round of a phase is
one call here, so one transaction covers every payment in the round. What an account may read
of it (history, one payment) is ``history``'s.

A refund is a payment like any other, with ``refund_of`` naming the payment it gives back.
The transaction that records it reserves its amount on that payment (``refund_reserved``),
with one conditional UPDATE the database decides, or deletes it again and answers REFUSED;
the transaction that decides it releases the reservation (an abort) or counts it as refunded
(a commit), once: only for the payments that transaction decided.

A split payment is one row here with an empty ``to_bank`` and the total as its amount, and
one row per payee in ``payment_payees``, written in the same INSERT round. Every read that
returns payments loads the shares of the split ones among them (``with_shares``: one more
statement, only when there is a split payment). A refund of a share reserves on the share's
row with one conditional UPDATE, then adds to the payment's own counters (the payment's
totals: its CHECK constraints hold them within its amount); its decision settles both,
the share's first. Every transaction takes share rows before payment rows, each in id order,
so two never wait for each other in a circle."""

from __future__ import annotations

import dataclasses
import enum
import functools
import itertools
import operator
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, or_, select, text, update
from sqlalchemy.orm import Session

from server.common import fastsql
from server.common.clock import now
from server.common.db import db_now
from server.gateway.models import Base, Payment
from server.gateway.payment_state import (
    OPEN_STATES,
    CoordinatorState,
    Decision,
    PaymentOrder,
    PaymentView,
    Share,
    decided_state,
)


class RecordKind(enum.Enum):
    NEW = "new"  # recorded now, as PREPARING
    REPLAY = "replay"  # the key made this payment before, with the same parameters
    KEY_REUSED = "key_reused"  # the key made another payment: refused
    REFUSED = "refused"  # a refund whose amount could not be reserved: nothing was recorded


@dataclasses.dataclass(frozen=True)
class Recorded:
    kind: RecordKind
    payment: PaymentView | None  # None for KEY_REUSED and REFUSED: nothing to show
    # REFUSED: the payment the refund would give back, as the refusing transaction saw it
    # (None if there is none).
    original: PaymentView | None = None


# Core table: each round reads and writes in set-based statements.
PAYMENTS = Base.metadata.tables["payments"]
REPLICAS = Base.metadata.tables["replicas"]
VIEW_FIELDS = [
    f.name for f in dataclasses.fields(PaymentView) if f.name not in ("decided_now", "shares")
]
VIEW_COLUMNS = [PAYMENTS.c[name] for name in VIEW_FIELDS]
INSERTED_COLUMNS = (*VIEW_FIELDS, "idempotency_key", "fingerprint")


def view(payment: Payment | Row[Any]) -> PaymentView:
    """The view of an ORM payment or a row of at least VIEW_COLUMNS (a split payment's
    without its shares: ``with_shares`` adds them)."""
    return PaymentView(**{name: getattr(payment, name) for name in VIEW_FIELDS})


def with_shares(connection: Connection, payments: Sequence[PaymentView]) -> list[PaymentView]:
    """PAYMENTS, the split ones among them with their shares: one statement if there is a
    split payment without them, none otherwise."""
    wanted = sorted({p.id for p in payments if not p.to_bank and not p.shares})
    if not wanted:
        return list(payments)
    found: dict[str, list[Share]] = defaultdict(list)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for payment_id, bank, account, amount, reserved, refunded in fastsql.execute(
            connection, SELECT_SHARES, chunk, len(chunk)
        ):
            found[payment_id].append(Share(bank, account, amount, reserved, refunded))
    return [
        dataclasses.replace(p, shares=tuple(found[p.id])) if p.id in found else p for p in payments
    ]


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
    first: dict[tuple[str, str], PaymentOrder] = {}
    values: list[Any] = []
    # Rows go in key order: two replicas inserting the same keys then lock them in the same
    # order, so they never deadlock.
    for order in sorted(orders, key=lambda o: (o.payer, o.idempotency_key)):
        key = (order.payer, order.idempotency_key)
        if key in fresh:
            continue  # the same key twice in one round: the later ones refer to the first
        payment = fresh[key] = _new_payment(order, created_at, timeout, owner)
        first[key] = order
        values.extend(_row_of(payment))
        values.extend((order.idempotency_key, order.fingerprint))
    inserted = {
        row[0] for row in fastsql.execute(connection, _insert_or_nothing(len(fresh)), values)
    }
    splits = [p for p in fresh.values() if p.shares and p.id in inserted]
    if splits:
        _insert_shares(connection, splits)
    taken = [key for key, payment in fresh.items() if payment.id not in inserted]
    known = _by_keys(connection, taken) if taken else {}
    new_refunds = [
        (first[key], payment)
        for key, payment in fresh.items()
        if payment.id in inserted and first[key].refund_of is not None
    ]
    reserved, refused = _reserve_refunds(connection, new_refunds) if new_refunds else ({}, {})
    known.update(
        (key, (reserved.get(payment.id, payment), first[key].fingerprint))
        for key, payment in fresh.items()
        if payment.id in inserted
    )
    results = []
    for order in orders:
        key = (order.payer, order.idempotency_key)
        payment, fingerprint = known[key]
        if fingerprint != order.fingerprint:
            results.append(Recorded(RecordKind.KEY_REUSED, None))
        elif payment.id in refused:
            results.append(Recorded(RecordKind.REFUSED, None, refused[payment.id]))
        elif payment.id in inserted:
            results.append(Recorded(RecordKind.NEW, payment))
            inserted.discard(payment.id)  # a repeat of the key later in this round replays it
        else:
            results.append(Recorded(RecordKind.REPLAY, payment))
    return results


def _insert_shares(connection: Connection, splits: Sequence[PaymentView]) -> None:
    """The payees of SPLITS, new payments this transaction inserted."""
    rows = [
        (p.id, number, share.bank, share.account, share.amount, p.created_at)
        for p in splits
        for number, share in enumerate(p.shares)
    ]
    # 6 parameters a row: 2000 rows a statement stay within SQLite's and PostgreSQL's limits.
    for start in range(0, len(rows), 2000):
        chunk = rows[start : start + 2000]
        marks = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
        values = list(itertools.chain.from_iterable(chunk))
        fastsql.execute(connection, INSERT_SHARES + marks, values)


def _reserve_refunds(
    connection: Connection, refunds: Sequence[tuple[PaymentOrder, PaymentView]]
) -> tuple[dict[str, PaymentView], dict[str, PaymentView | None]]:
    """Reserves each new refund's amount on the payment it gives back (on the refunder's
    share first, for a share of a split payment), or deletes the refund (nobody saw it: this
    transaction inserted it). Returns the refunds reserved (by id, with the amount found for
    a refund of all that is left) and, for those refused, the payment they would give back
    as it stands (None if there is none)."""
    reserved: dict[str, PaymentView] = {}
    refused: dict[str, str] = {}  # refund id -> the payment it would give back
    # Shares first, then payments, each in the order of the payments given back: the rows
    # are locked in the same order by every transaction, last in each, so two rounds never
    # wait for each other in a circle.
    ordered = sorted(refunds, key=lambda item: (item[0].refund_of or "", item[1].id))
    shares = [(order, refund) for order, refund in ordered if order.of_share]
    for order, refund in shares:
        amount = _reserve_share(connection, order)
        if amount is None:
            refused[refund.id] = order.refund_of or ""
        else:
            reserved[refund.id] = dataclasses.replace(refund, amount=amount)
    for order, refund in ordered:
        if order.of_share:
            if refund.id in reserved:  # the share granted it: the payment's totals follow
                amount = reserved[refund.id].amount
                fastsql.execute(connection, ADD_RESERVED, [amount, order.refund_of])
                if order.whole_rest:
                    fastsql.execute(connection, SET_AMOUNT, [amount, refund.id])
            continue
        original = order.refund_of or ""
        amount = order.amount
        if order.whole_rest:
            # Locked (PostgreSQL) until the transaction ends, so what is left stays left.
            rows = fastsql.execute(connection, LEFT_TO_REFUND, [original])
            amount = int(rows[0][0]) if rows else 0
        parameters = [amount, original, order.from_bank, order.from_account, order.currency]
        if amount <= 0 or not fastsql.execute(connection, RESERVE_REFUND, [*parameters, amount]):
            refused[refund.id] = original
            continue
        if order.whole_rest:
            fastsql.execute(connection, SET_AMOUNT, [amount, refund.id])
        reserved[refund.id] = dataclasses.replace(refund, amount=amount)
    if not refused:
        return reserved, {}
    fastsql.execute(connection, DELETE_PAYMENTS, list(refused), len(refused))
    originals = by_ids(connection, list(refused.values()))
    return reserved, {refund: originals.get(original) for refund, original in refused.items()}


def _reserve_share(connection: Connection, order: PaymentOrder) -> int | None:
    """Reserves ORDER's amount (or all that is left) on the refunder's share of the split
    payment it gives back: the amount reserved, or None if the database refused it."""
    original = order.refund_of or ""
    share = [original, order.from_bank, order.from_account]
    amount = order.amount
    if order.whole_rest:
        rows = fastsql.execute(connection, LEFT_OF_SHARE, share)
        amount = int(rows[0][0]) if rows else 0
    if amount <= 0:
        return None
    granted = fastsql.execute(connection, RESERVE_SHARE, [amount, *share, amount, order.currency])
    return amount if granted else None


def _settle_refunds(connection: Connection, decided: Sequence[PaymentView]) -> None:
    """For each refund among DECIDED (decided in this transaction, so once): its amount
    released on the payment it gives back if it aborted, counted as refunded if it
    committed; on the refunder's share too, for a refund of a split payment's share (a
    refund of a plain payment has no share row: that statement changes nothing)."""
    changes: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # id -> [release, refunded]
    shares: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for refund in decided:
        if refund.refund_of is not None:
            committed = refund.state is CoordinatorState.COMMITTING
            changes[refund.refund_of][1 if committed else 0] += refund.amount
            share = (refund.refund_of, refund.from_bank, refund.from_account)
            shares[share][1 if committed else 0] += refund.amount
    if not changes:
        return
    share_rows = [(release, refunded, *key) for key, (release, refunded) in sorted(shares.items())]
    fastsql.execute_many(connection, SETTLE_SHARE, share_rows)
    rows = [(release, refunded, pid) for pid, (release, refunded) in sorted(changes.items())]
    fastsql.execute_many(connection, SETTLE_REFUND, rows)


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
        refund_of=order.refund_of,
        shares=order.shares,
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
    found = [
        (row.idempotency_key, view(row), row.fingerprint)
        for row in rows
        if (row.payer, row.idempotency_key) in wanted
    ]
    payments = with_shares(connection, [payment for _, payment, _ in found])
    return {
        (payment.payer, key): (payment, fingerprint)
        for (key, _, fingerprint), payment in zip(found, payments, strict=True)
    }


@dataclasses.dataclass(frozen=True)
class Deciding:
    """A decision to store, by the replica incarnation whose fencing token is ``owner``."""

    payment_id: str
    decision: Decision
    owner: int


def store_decisions(connection: Connection, decisions: Sequence[Deciding]) -> list[PaymentView]:
    """Stores each decision, if the payment is still undecided and still owned by the one
    deciding (a fencing token: a replica that lost a payment can never decide it); returns
    what stands."""
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
        for row in fastsql.execute(connection, STORE_DECISION, parameters, len(ids)):
            stored = _view_of(row, decided_now=True)
            decided_now[stored.id] = stored
    _settle_refunds(connection, list(decided_now.values()))
    current = by_ids(
        connection, [d.payment_id for d in decisions if d.payment_id not in decided_now]
    )
    current.update((p.id, p) for p in with_shares(connection, list(decided_now.values())))
    return [current[item.payment_id] for item in decisions]


def undelivered(connection: Connection, bank: str, account: str) -> list[PaymentView]:
    """The account's decided payments that not every bank has acknowledged yet (those of
    split payments paying it too)."""
    parameters = [bank, account, bank, account, bank, account]
    rows = fastsql.execute(connection, SELECT_UNDELIVERED, parameters)
    return [_view_of(row) for row in rows]


def by_ids(connection: Connection, payment_ids: Sequence[str]) -> dict[str, PaymentView]:
    """The payments with these ids, those that exist: the one way to read payments by id."""
    if not payment_ids:
        return {}
    ids = sorted(set(payment_ids))
    rows = fastsql.execute(connection, BY_IDS, ids, len(ids))
    return {payment.id: payment for payment in with_shares(connection, list(map(_view_of, rows)))}


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
    connection: Connection,
    owner: int,
    payment_ids: Sequence[str] | None = None,
    limit: int = 500,
    previous_owners: dict[str, int | None] | None = None,
) -> list[PaymentView]:
    """Takes over open payments whose owner's lease has passed (those among PAYMENT_IDS, or
    any): they are OWNER's from now, and their old owner's writes are refused. A row another
    transaction holds is skipped (PostgreSQL) and taken on a later pass. PREVIOUS_OWNERS, if
    given, gets each orphan's owner before the claim."""
    orphans = select(PAYMENTS.c.id, PAYMENTS.c.owner_token).where(
        PAYMENTS.c.state.in_(OPEN_STATES), _ownerless()
    )
    if payment_ids is not None:
        orphans = orphans.where(PAYMENTS.c.id.in_(list(payment_ids)))
    orphans = orphans.order_by(PAYMENTS.c.created_at).limit(limit).with_for_update(skip_locked=True)
    found = {row.id: row.owner_token for row in connection.execute(orphans)}
    if previous_owners is not None:
        previous_owners.update(found)
    ids = list(found)
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
    return with_shares(connection, [view(row) for row in rows])


def _ownerless() -> ColumnElement[bool]:
    """SQL: the payment's owner holds no live lease (in the database's clock)."""
    live = select(REPLICAS.c.token).where(REPLICAS.c.lease_expires_at > db_now())
    return or_(PAYMENTS.c.owner_token.is_(None), PAYMENTS.c.owner_token.not_in(live))


# The statements every round runs, in the SQL both dialects speak (see ``fastsql``).
_COLUMNS = ", ".join(VIEW_FIELDS)
BY_IDS = f"SELECT {_COLUMNS} FROM payments WHERE id IN ({{in}})"
STORE_DECISION = (
    "UPDATE payments SET state = ?, reason_code = ?, reason = ?, decided_at = ?, decided_by = ? "
    f"WHERE id IN ({{in}}) AND state = 'PREPARING' AND owner_token = ? RETURNING {_COLUMNS}"
)
COMPLETE = (
    "UPDATE payments SET completed_at = ?, "
    "state = CASE state WHEN 'COMMITTING' THEN 'COMMITTED' ELSE 'ABORTED' END "
    "WHERE id IN ({in}) AND state IN ('COMMITTING', 'ABORTING') AND owner_token = ?"
)
DELETE_PAYMENTS = "DELETE FROM payments WHERE id IN ({in})"
# The reservation: granted only while the payment is committed (a decided commit never goes
# back), not a refund, paid to the refunder's account in the refund's currency, and has at
# least the amount left. PostgreSQL re-checks the WHERE on the newest row once a concurrent
# reservation commits, so concurrent refunds never reserve more than the amount together.
RESERVE_REFUND = (
    "UPDATE payments SET refund_reserved = refund_reserved + ? "
    "WHERE id = ? AND refund_of IS NULL AND state IN ('COMMITTING', 'COMMITTED') "
    "AND to_bank = ? AND to_account = ? AND currency = ? AND amount - refund_reserved >= ? "
    "RETURNING refund_reserved"
)
LEFT_TO_REFUND = "SELECT amount - refund_reserved FROM payments WHERE id = ?{for_update}"
# A share's reservation: the same rules, on the refunder's own share of a split payment
# (whose payment row is committed, not a refund, in the refund's currency).
RESERVE_SHARE = (
    "UPDATE payment_payees SET refund_reserved = refund_reserved + ? "
    "WHERE payment_id = ? AND bank = ? AND account = ? AND amount - refund_reserved >= ? "
    "AND EXISTS (SELECT 1 FROM payments p WHERE p.id = payment_payees.payment_id "
    "AND p.refund_of IS NULL AND p.state IN ('COMMITTING', 'COMMITTED') AND p.currency = ?) "
    "RETURNING refund_reserved"
)
LEFT_OF_SHARE = (
    "SELECT amount - refund_reserved FROM payment_payees "
    "WHERE payment_id = ? AND bank = ? AND account = ?{for_update}"
)
# The payment's totals, once its share granted a reservation (its CHECK holds them within
# the amount: the shares add up to it).
ADD_RESERVED = "UPDATE payments SET refund_reserved = refund_reserved + ? WHERE id = ?"
SETTLE_SHARE = (
    "UPDATE payment_payees SET refund_reserved = refund_reserved - ?, refunded = refunded + ? "
    "WHERE payment_id = ? AND bank = ? AND account = ?"
)
INSERT_SHARES = (
    "INSERT INTO payment_payees (payment_id, number, bank, account, amount, created_at) VALUES "
)
SELECT_SHARES = (
    "SELECT payment_id, bank, account, amount, refund_reserved, refunded FROM payment_payees "
    "WHERE payment_id IN ({in}) ORDER BY payment_id, number"
)
SET_AMOUNT = "UPDATE payments SET amount = ? WHERE id = ?"
SETTLE_REFUND = (
    "UPDATE payments SET refund_reserved = refund_reserved - ?, refunded = refunded + ? "
    "WHERE id = ?"
)
# Both sides of the account, each served by its (bank, account, created_at) index, and the
# split payments paying it, by the payees' own.
SELECT_UNDELIVERED = (
    f"SELECT {_COLUMNS} FROM payments WHERE state IN ('COMMITTING', 'ABORTING') "
    "AND from_bank = ? AND from_account = ? "
    f"UNION ALL SELECT {_COLUMNS} FROM payments WHERE state IN ('COMMITTING', 'ABORTING') "
    "AND to_bank = ? AND to_account = ? "
    f"UNION ALL SELECT {', '.join('p.' + c for c in VIEW_FIELDS)} FROM payment_payees s "
    "JOIN payments p ON p.id = s.payment_id WHERE s.bank = ? AND s.account = ? "
    "AND p.state IN ('COMMITTING', 'ABORTING')"
)


_VIEW_VALUES = operator.attrgetter(*VIEW_FIELDS)


def _row_of(payment: PaymentView) -> list[Any]:
    """PAYMENT's values for the columns VIEW_FIELDS names, in that order; the drivers take
    the state as a plain string."""
    values = list(_VIEW_VALUES(payment))
    values[_STATE] = payment.state.value
    return values


# ``_view_of`` passes a row's values by position: the columns are the view's first fields,
# and ``decided_now`` the next.
assert [f.name for f in dataclasses.fields(PaymentView)][: len(VIEW_FIELDS) + 1] == [
    *VIEW_FIELDS,
    "decided_now",
]
_STATE = VIEW_FIELDS.index("state")
_STATES = {state.value: state for state in CoordinatorState}


def _view_of(row: Sequence[Any], decided_now: bool = False) -> PaymentView:
    """A view from a row of exactly the columns VIEW_FIELDS names, in that order (the view's
    own fields' order: positional, as this is the hot path of reading payments back)."""
    values = list(row)
    if len(values) != len(VIEW_FIELDS):
        raise ValueError(f"a payment row has {len(VIEW_FIELDS)} columns, not {len(values)}")
    values[_STATE] = _STATES[values[_STATE]]
    values.append(decided_now)
    return PaymentView(*values)


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
