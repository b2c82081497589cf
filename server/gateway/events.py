"""The event stream's domain: what an event is (its type, what it is about, which accounts'
owners may read it), the events a round's decisions make, and reading the stream a page at a
time as one reader may see it. Sequences are given by ``journal`` when events are written.

Who reads what: the payer's account reads every event of its payments (committed or
aborted); the payee's only the committed ones (each payee of a split payment, named in
``event_readers``: one event, as many readers) (never the payer's reasons: the API's
``payment_message`` shapes the payment for each side); an account's owner reads the deposits
into it and the events of their own user; an admin reads everything. A reader's page skips
the numbers of events that are not theirs, and its cursor still moves past them.
"""

from __future__ import annotations

import enum
import json
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from server.common import fastsql
from server.common.errors import InvalidArgument, OutOfRange
from server.common.vocabulary import Status
from server.gateway.payment_state import (
    CoordinatorState,
    PaymentKind,
    PaymentView,
    Share,
    status_of,
)

# Kept this long (30 days) unless configured otherwise.
DEFAULT_RETENTION = 30 * 86400.0
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100


class EventType(enum.StrEnum):
    """What happened (the API's ``EventType`` without its prefix, in lower case)."""

    PAYMENT_COMMITTED = "payment.committed"
    PAYMENT_ABORTED = "payment.aborted"
    REFUND_COMMITTED = "refund.committed"
    REFUND_ABORTED = "refund.aborted"
    DEPOSIT_APPLIED = "deposit.applied"
    USER_CREATED = "user.created"
    USER_DISABLED = "user.disabled"
    USER_ENABLED = "user.enabled"
    KEY_ROTATED = "key.rotated"


def account_key(bank: str, account: str) -> str:
    """An account as the stream names its readers."""
    return f"{bank}/{account}"


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # made once, not per row


@dataclass(frozen=True)
class NewEvent:
    """An event to write: its readers besides admins (PAYER_KEY, PAYEE_KEY: account keys) and
    SUBJECT, what it is about as plain JSON values."""

    type: EventType
    occurred_at: float
    subject: dict[str, Any]
    payer_key: str | None = None
    payee_key: str | None = None
    # Other readers (a committed split payment's payees), written to ``event_readers``.
    readers: tuple[str, ...] = ()

    def row(self, sequence: int) -> tuple[Any, ...]:
        subject = _JSON.encode(self.subject)
        return (
            sequence,
            self.type.value,
            self.occurred_at,
            self.payer_key,
            self.payee_key,
            subject,
        )


@dataclass(frozen=True)
class StoredEvent:
    sequence: int
    type: EventType
    occurred_at: float
    subject: dict[str, Any]

    def payment(self) -> PaymentView:
        """The payment (or refund) a payment or refund event is about."""
        fields = dict(self.subject)
        fields["state"] = CoordinatorState(fields["state"])
        fields["shares"] = tuple(Share(*share) for share in fields.get("shares", ()))
        return PaymentView(**fields)


_PAYMENT_FIELDS = (
    "id",
    "payer",
    "from_bank",
    "from_account",
    "to_bank",
    "to_account",
    "amount",
    "currency",
    "state",
    "reason_code",
    "reason",
    "deadline",
    "created_at",
    "decided_at",
    "refund_of",
    "refund_reserved",
    "refunded",
)


_PAYMENT_VALUES = operator.attrgetter(*_PAYMENT_FIELDS)


def _payment_subject(payment: PaymentView) -> dict[str, Any]:
    subject = dict(zip(_PAYMENT_FIELDS, _PAYMENT_VALUES(payment), strict=True))
    subject["state"] = payment.state.value
    if payment.shares:  # [bank, account, amount, refund_reserved, refunded] each
        subject["shares"] = [
            [s.bank, s.account, s.amount, s.refund_reserved, s.refunded] for s in payment.shares
        ]
    return subject


def of_decisions(payments: Sequence[PaymentView]) -> list[NewEvent]:
    """An event for each payment and refund whose decision was stored just now."""
    made = []
    for payment in payments:
        if not payment.decided_now:
            continue
        committed = status_of(payment.state) is Status.COMMITTED
        refund = payment.kind is PaymentKind.REFUND
        kind = {
            (False, True): EventType.PAYMENT_COMMITTED,
            (False, False): EventType.PAYMENT_ABORTED,
            (True, True): EventType.REFUND_COMMITTED,
            (True, False): EventType.REFUND_ABORTED,
        }[(refund, committed)]
        # The payee learns of a payment to them once it committed, never of one aborted; each
        # payee of a split payment alike, through ``event_readers``.
        payee_key = None
        readers: tuple[str, ...] = ()
        if committed and payment.to_bank:
            payee_key = account_key(payment.to_bank, payment.to_account)
        elif committed:
            readers = tuple(account_key(share.bank, share.account) for share in payment.shares)
        made.append(
            NewEvent(
                kind,
                payment.decided_at or payment.created_at,
                _payment_subject(payment),
                payer_key=account_key(payment.from_bank, payment.from_account),
                payee_key=payee_key,
                readers=readers,
            )
        )
    return made


def user_event(
    kind: EventType,
    at: float,
    *,
    username: str,
    name: str,
    role: str,
    disabled: bool,
    bank: str = "",
    account: str = "",
) -> NewEvent:
    """A user created, disabled or enabled; the user's own account reads it too."""
    subject = {
        "username": username,
        "name": name,
        "role": role,
        "disabled": disabled,
        "bank": bank,
        "account": account,
    }
    return NewEvent(kind, at, subject, payer_key=account_key(bank, account) if account else None)


def deposit_event(
    at: float, *, bank: str, account: str, amount: int, currency: str, admin: str
) -> NewEvent:
    subject = {"bank": bank, "account": account, "amount": amount, "currency": currency}
    subject["admin"] = admin
    return NewEvent(EventType.DEPOSIT_APPLIED, at, subject, payee_key=account_key(bank, account))


def key_rotated(at: float, *, replica: str, kid: str) -> NewEvent:
    return NewEvent(EventType.KEY_ROTATED, at, {"replica": replica, "kid": kid})


# Reading.


@dataclass(frozen=True)
class Query:
    """A page of the stream: after the cursor AFTER, at most LIMIT events of TYPES (empty:
    every type), as READER (an account key; None: an admin) may see them."""

    after: int
    limit: int
    types: tuple[EventType, ...] = ()
    reader: str | None = None


@dataclass(frozen=True)
class Page:
    events: list[StoredEvent]
    next_after: int  # past every event this page looked at
    head: int  # the last event's sequence when the page was read


def check_query(after: int, page_size: int, types: Sequence[EventType]) -> None:
    if after < 0:
        raise InvalidArgument("after_sequence must be 0 or more", field="after_sequence")
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be 0 to {MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE})", field="page_size"
        )
    if len(set(types)) != len(types):
        raise InvalidArgument("types names a type twice", field="types")


_HEADS = "SELECT name, sequence FROM journal_heads WHERE name IN ('events', 'pruned')"


def read(connection: Connection, query: Query) -> Page:
    """One page after the cursor. The head is read first, then only events up to it: every
    event up to the head is visible by then (``journal``'s order), so a page that is not
    full has looked at everything up to the head, and its cursor may move there."""
    head, pruned = _heads(connection)
    if query.after > head:
        raise InvalidArgument(
            f"after_sequence {query.after} is past the last event ({head})",
            field="after_sequence",
            metadata={"last_sequence": str(head)},
        )
    if 0 < query.after < pruned:
        raise OutOfRange(
            f"events up to {pruned} are no longer kept; resume after {pruned} (or from 0)",
            metadata={"oldest_sequence": str(pruned + 1)},
        )
    after = max(query.after, pruned)
    where = ["sequence > ?", "sequence <= ?"]
    parameters: list[Any] = [after, head]
    if query.types:
        where.append("type IN ({in})")
        parameters.extend(t.value for t in query.types)
    if query.reader is not None:
        # The payees of split payments read through event_readers, along its own index.
        where.append(
            "(payer_key = ? OR payee_key = ? OR sequence IN (SELECT r.sequence FROM "
            "event_readers r WHERE r.reader_key = ? AND r.sequence > ? AND r.sequence <= ?))"
        )
        parameters.extend([query.reader, query.reader, query.reader, after, head])
    sql = (
        "SELECT sequence, type, occurred_at, subject FROM events WHERE "
        + " AND ".join(where)
        + " ORDER BY sequence LIMIT ?"
    )
    rows = fastsql.execute(connection, sql, [*parameters, query.limit], len(query.types))
    events = [
        StoredEvent(int(seq), EventType(kind), float(at), json.loads(subject))
        for seq, kind, at, subject in rows
    ]
    if _heads(connection)[1] > after:  # pruned while this page was read: some may be gone
        return read(connection, query)
    full = len(events) == query.limit
    return Page(events, events[-1].sequence if full else head, head)


def _heads(connection: Connection) -> tuple[int, int]:
    """The last event's sequence, and the last one dropped by retention."""
    heads = {str(name): int(value) for name, value in fastsql.execute(connection, _HEADS)}
    return heads.get("events", 0), heads.get("pruned", 0)


def last_sequence(connection: Connection) -> int:
    rows = fastsql.execute(connection, "SELECT sequence FROM journal_heads WHERE name = 'events'")
    return int(rows[0][0])


def prune(connection: Connection, older_than: float, batch: int = 1000) -> int:
    """Drops the oldest events, up to BATCH of them, while they occurred before OLDER_THAN: the
    stream keeps a suffix (an event is dropped only with every event before it), and the
    ``pruned`` head says where it starts. Returns how many were dropped."""
    # Locked: two replicas pruning at once take turns, and the head never moves back.
    heads = fastsql.execute(
        connection, "SELECT sequence FROM journal_heads WHERE name = 'pruned'{for_update}"
    )
    if not heads:  # a schema made without its migration (the unit tests'): start the head
        fastsql.execute(connection, "INSERT INTO journal_heads VALUES ('pruned', 0, '')")
    pruned = int(heads[0][0]) if heads else 0
    rows = fastsql.execute(
        connection,
        "SELECT sequence, occurred_at FROM events WHERE sequence > ? ORDER BY sequence LIMIT ?",
        [pruned, batch],
    )
    through = pruned
    for sequence, occurred_at in rows:
        if float(occurred_at) >= older_than:
            break
        through = int(sequence)
    if through == pruned:
        return 0
    fastsql.execute(connection, "DELETE FROM events WHERE sequence <= ?", [through])
    fastsql.execute(connection, "DELETE FROM event_readers WHERE sequence <= ?", [through])
    fastsql.execute(
        connection, "UPDATE journal_heads SET sequence = ? WHERE name = 'pruned'", [through]
    )
    return int(through) - int(pruned)
