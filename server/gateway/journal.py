"""The gateway's journal: the event stream and the audit chain, written in the transactions
that make what they record (a round's decisions, an admin action, a key's publication).

Order comes from one sequencer, the ``journal_heads`` rows every replica shares. Taking
sequences is an UPDATE of a head row, made as the last statements of the transaction: the
row stays locked until that transaction commits, so another transaction that takes the next
numbers waits for it and commits after it is visible. Events therefore become visible in
sequence order, with no gap a reader could skip past: whoever sees event 8 sees event 7 (the
trap of numbers from a database sequence or an autoincrement, where 8 may commit before 7 and
a reader's cursor pass 7 for ever, cannot happen). A watermark would let writers run in
parallel, but every writer here is already one transaction per round, not per payment, so
the wait is short; and it needs no process to keep it moving. SQLite has one writer at a
time and gets the same order for free.

The events head is taken before the audit head, always: two transactions never wait for
each other the other way round.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from minipay.audit import GENESIS, canonical, chain_hash
from server.common import db, fastsql
from server.gateway.events import NewEvent

_TAKE = "UPDATE journal_heads SET sequence = sequence + ? WHERE name = ? RETURNING sequence, hash"
_START = "INSERT INTO journal_heads (name, sequence, hash) VALUES (?, 0, ?)"
_SET_HASH = "UPDATE journal_heads SET hash = ? WHERE name = ?"
_EVENT_COLUMNS = "sequence, type, occurred_at, payer_key, payee_key, subject"
_AUDIT_COLUMNS = "sequence, prev_hash, hash, body"
_ROWS_PER_STATEMENT = 2000  # 6 parameters each: within SQLite's and PostgreSQL's limits


def write(
    connection: Connection,
    events: Sequence[NewEvent] = (),
    audit: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Appends EVENTS to the stream and AUDIT (record bodies) to the chain, in the caller's
    transaction; call it last in that transaction, so the heads stay locked only while it
    commits."""
    if events:
        _publish(connection, events)
    if audit:
        _append(connection, audit)


def _take(connection: Connection, name: str, count: int) -> tuple[int, str]:
    """Takes COUNT sequences of NAME: the last of them, and the head's hash before."""
    rows = fastsql.execute(connection, _TAKE, [count, name])
    if not rows:  # a schema made without its migration (the unit tests'): start the head
        fastsql.execute(connection, _START, [name, GENESIS if name == "audit" else ""])
        rows = fastsql.execute(connection, _TAKE, [count, name])
    ((last, digest),) = rows
    return int(last), str(digest)


def _publish(connection: Connection, events: Sequence[NewEvent]) -> None:
    last, _ = _take(connection, "events", len(events))
    first = last - len(events) + 1
    rows = [event.row(first + offset) for offset, event in enumerate(events)]
    _insert(connection, "events", _EVENT_COLUMNS, 6, rows)
    readers = [
        (first + offset, reader)
        for offset, event in enumerate(events)
        for reader in dict.fromkeys(event.readers)
    ]
    if readers:  # a split payment's payees: in the same transaction, so with the event
        _insert(connection, "event_readers", "sequence, reader_key", 2, readers)


def _append(connection: Connection, bodies: Sequence[Mapping[str, Any]]) -> None:
    last, digest = _take(connection, "audit", len(bodies))
    rows = []
    for sequence, body in zip(itertools.count(last - len(bodies) + 1), bodies, strict=False):
        text = canonical(body)
        record_hash = chain_hash(digest, text)
        rows.append((sequence, digest, record_hash, text))
        digest = record_hash
    _insert(connection, "audit_log", _AUDIT_COLUMNS, 4, rows)
    fastsql.execute(connection, _SET_HASH, [digest, "audit"])


def _insert(
    connection: Connection, table: str, columns: str, width: int, rows: Sequence[tuple[Any, ...]]
) -> None:
    marks = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        sql = f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([marks] * len(chunk))
        fastsql.execute(connection, sql, list(itertools.chain.from_iterable(chunk)))


def heads(connection: Connection) -> dict[str, tuple[int, str]]:
    """Every head by name: (sequence, hash)."""
    rows = fastsql.execute(connection, "SELECT name, sequence, hash FROM journal_heads")
    return {str(name): (int(sequence), str(digest)) for name, sequence, digest in rows}


class Journal:
    """Writes to the journal in a transaction of its own, for the writers that have none to
    ride on (an admin action whose effect is at a bank)."""

    def __init__(self, database: db.Database) -> None:
        self._db = database

    async def record(
        self, events: Sequence[NewEvent] = (), audit: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        if events or audit:
            await self._db.statements(lambda connection: write(connection, events, audit))
