"""What the audit chain records (the chain's rules are ``minipay.audit``'s, its writing
``journal``'s): each admin action, with who asked, from which certificate, what and its
outcome; each admin attempt the gateway refused; and each round's decisions, with their ids
and amounts. Never a password or a token."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from sqlalchemy import Connection

from server.common import fastsql
from server.common.errors import MinipayError
from server.common.tls import peer_common_name
from server.gateway.payment_state import PaymentView, status_of

if TYPE_CHECKING:
    from server.gateway.journal import Journal

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="milliseconds")


def decisions(at: float, replica: str, payments: Sequence[PaymentView]) -> dict[str, Any] | None:
    """One record for the decisions stored now among PAYMENTS (None: none was)."""
    decided = [
        {
            "id": p.id,
            "kind": p.kind.value,
            "refund_of": p.refund_of or "",
            "payer": f"{p.from_bank}/{p.from_account}",
            "payee": f"{p.to_bank}/{p.to_account}" if p.to_bank else "",
            "amount": p.amount,
            "currency": p.currency,
            "status": status_of(p.state).value,
            "reason_code": p.reason_code,
            "requested_by": p.payer,
            # A split payment: each payee and their amount (the amount is their total).
            **(
                {"shares": [[f"{s.bank}/{s.account}", s.amount] for s in p.shares]}
                if p.shares
                else {}
            ),
        }
        for p in payments
        if p.decided_now
    ]
    if not decided:
        return None
    return {"type": "decisions", "at": _when(at), "replica": replica, "payments": decided}


def admin_action(
    at: float,
    *,
    action: str,
    admin: str,
    certificate: str,
    what: Mapping[str, Any],
    outcome: str,
    replica: str,
) -> dict[str, Any]:
    """An admin action (or an attempt at one, refused: OUTCOME is then its reason)."""
    return {
        "type": "admin_action",
        "at": _when(at),
        "action": action,
        "admin": admin,
        "certificate": certificate,
        "what": dict(what),
        "outcome": outcome,
        "replica": replica,
    }


_PAGE = (
    "SELECT sequence, prev_hash, hash, body FROM audit_log WHERE sequence > ? AND sequence <= ? "
    "ORDER BY sequence LIMIT ?"
)


def page(
    connection: Connection, after: int, limit: int
) -> tuple[list[tuple[int, str, str, str]], int, str]:
    """Records after AFTER (at most LIMIT), and the chain's head when they were read: the head
    first, then records up to it, so the last page ends exactly at the head it names."""
    ((head, digest),) = fastsql.execute(
        connection, "SELECT sequence, hash FROM journal_heads WHERE name = 'audit'"
    )
    rows = fastsql.execute(connection, _PAGE, [after, head, limit])
    records = [(int(s), str(p), str(h), str(b)) for s, p, h, b in rows]
    return records, int(head), str(digest)


ADMIN_PREFIX = "/minipay.v1.Admin/"


class RefusedAttempts:
    """Writes each refused attempt at an admin method to the chain (``on_refused`` of the
    authentication interceptor), at most RATE a second per replica after a BURST: past that,
    refusals are only counted, and the count rides on the next record written, so a flood
    of refused calls cannot grow the chain or load the database without bound."""

    def __init__(
        self,
        journal: Journal,
        replica: str,
        rate: float = 2.0,
        burst: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._journal = journal
        self._replica = replica
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()
        self._suppressed = 0

    def _admit(self) -> bool:
        moment = self._clock()
        self._tokens = min(self._burst, self._tokens + (moment - self._last) * self._rate)
        self._last = moment
        if self._tokens < 1:
            self._suppressed += 1
            return False
        self._tokens -= 1
        return True

    async def __call__(
        self, method: str, context: grpc.aio.ServicerContext, refusal: MinipayError
    ) -> None:
        if not method.startswith(ADMIN_PREFIX) or not self._admit():
            return
        suppressed, self._suppressed = self._suppressed, 0
        record = admin_action(
            time.time(),
            action=method.removeprefix(ADMIN_PREFIX),
            admin="",
            certificate=peer_common_name(context),
            what={"refused_before": suppressed} if suppressed else {},
            outcome=refusal.reason.value,
            replica=self._replica,
        )
        await self._journal.record(audit=[record])
