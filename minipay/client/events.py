"""The event stream and the audit chain as the client library returns them, and the text
and JSON the command lines print for them. An event's ``type`` is the API's ``EventType``
without its prefix, in the words of the stream: "payment.committed", "refund.aborted",
"deposit.applied", "user.created", "key.rotated"..."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from minipay.audit import Record
from minipay.client.results import Payment, User, utc
from minipay.money import format_minor_units
from minipay.v1 import events_pb2

EVENT_TYPES: dict[str, Any] = {
    name.removeprefix("EVENT_TYPE_").lower().replace("_", ".", 1): events_pb2.EventType.Value(name)
    for name, _number in events_pb2.EventType.items()
    if name != "EVENT_TYPE_UNSPECIFIED"
}
_TYPE_OF_MESSAGE = {value: name for name, value in EVENT_TYPES.items()}


@dataclass(frozen=True)
class DepositApplied:
    bank: str
    account: str
    amount_minor_units: int
    currency: str
    admin: str  # "" unless an admin reads it


@dataclass(frozen=True)
class KeyRotation:
    replica: str
    kid: str


@dataclass(frozen=True)
class Event:
    sequence: int
    type: str
    occurred_at: datetime
    payment: Payment | None = None
    user: User | None = None
    deposit: DepositApplied | None = None
    key_rotation: KeyRotation | None = None

    @classmethod
    def from_message(cls, message: events_pb2.Event, request_id: str) -> Event:
        subject = message.WhichOneof("subject")
        deposit = message.deposit
        return cls(
            sequence=message.sequence,
            type=_TYPE_OF_MESSAGE.get(message.type, str(message.type)),
            occurred_at=utc(message.occurred_at),
            payment=Payment.from_message(message.payment, request_id)
            if subject == "payment"
            else None,
            user=User.from_message(message.user, request_id) if subject == "user" else None,
            deposit=DepositApplied(
                deposit.account.bank,
                deposit.account.account,
                deposit.amount.minor_units,
                deposit.amount.currency,
                deposit.admin,
            )
            if subject == "deposit"
            else None,
            key_rotation=KeyRotation(message.key_rotation.replica, message.key_rotation.kid)
            if subject == "key_rotation"
            else None,
        )


@dataclass(frozen=True)
class EventPage:
    events: tuple[Event, ...]
    next_after_sequence: int  # the cursor to ask with next
    request_id: str


@dataclass(frozen=True)
class AuditPage:
    records: tuple[Record, ...]
    head_sequence: int
    head_hash: str
    request_id: str


def event_line(event: Event) -> str:
    """One line: "17 2026-12-06 21:40:01Z payment.committed pay_... 12.34 USD alpha/A-1001
    -> beta/B-2001" (on one line)."""
    when = event.occurred_at.strftime("%Y-%m-%d %H:%M:%S") + "Z"
    head = f"{event.sequence} {when} {event.type}"
    if event.payment is not None:
        p = event.payment
        amount = format_minor_units(p.amount_minor_units, p.currency)
        text = f"{head} {p.payment_id} {amount} {p.currency} {p.payer} -> {p.payee}"
        if p.refund_of:
            text += f" (refund of {p.refund_of})"
        if p.reason_code:
            text += f" ({p.reason_code})"
        return text
    if event.user is not None:
        u = event.user
        where = f" {u.bank}/{u.account}" if u.bank else ""
        return f"{head} {u.username} ({u.role}){where}"
    if event.deposit is not None:
        d = event.deposit
        amount = format_minor_units(d.amount_minor_units, d.currency)
        by = f" by {d.admin}" if d.admin else ""
        return f"{head} {amount} {d.currency} to {d.bank}/{d.account}{by}"
    if event.key_rotation is not None:
        return f"{head} replica {event.key_rotation.replica} kid {event.key_rotation.kid}"
    return head


def event_json(event: Event, payment_fields: Any) -> dict[str, Any]:
    """EVENT for --json (PAYMENT_FIELDS: how the tool prints a payment)."""
    data: dict[str, Any] = {
        "sequence": event.sequence,
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
    }
    if event.payment is not None:
        data["payment"] = payment_fields(event.payment)
    if event.user is not None:
        u = event.user
        data["user"] = {
            "username": u.username,
            "name": u.name,
            "role": u.role,
            "disabled": u.disabled,
            "bank": u.bank,
            "account": u.account,
        }
    if event.deposit is not None:
        d = event.deposit
        data["deposit"] = {
            "bank": d.bank,
            "account": d.account,
            "amount": format_minor_units(d.amount_minor_units, d.currency),
            "amount_minor_units": d.amount_minor_units,
            "currency": d.currency,
            "admin": d.admin,
        }
    if event.key_rotation is not None:
        data["key_rotation"] = {
            "replica": event.key_rotation.replica,
            "kid": event.key_rotation.kid,
        }
    return data
