"""Live updates as server-sent events, and where they come from.

Both streams read the gateway's event stream (``Events/Watch``): a customer's shows their
payments and refunds as they are decided (``payment_updates``), an admin's shows every event
(``all_events``). Each event goes to the browser with its sequence as the event's id, so a
browser that reconnects (or resumes after a pause) sends it back (``Last-Event-ID``, or
``?after=``) and the stream goes on from there, missing nothing and repeating nothing.

A gateway that does not serve Events/Watch yet (UNIMPLEMENTED) still gives a customer a live
page: their newest payments are then polled once a second (``polled_payment_updates``).

A stream ends when the browser goes away, when the session ends, and promptly when the
console stops: uvicorn waits for open responses before it shuts down, so every stream watches
``Streams.stopping`` (set by the server's exit handler, or by whoever runs the app in a thread).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from console.gateway import Calls, unimplemented
from minipay.client import ApiError, GatewayClient, Payment
from minipay.money import format_minor_units
from minipay.v1 import events_pb2

POLL_INTERVAL = 1.0
NEWEST = 20  # the payments looked at per poll; the first poll sends them all
# A customer's stream without a cursor starts from the oldest event kept and sends only
# those that happened since shortly before it opened (the page shows the older ones).
RECENT = 10.0
PAYMENT_TYPES = (
    events_pb2.EVENT_TYPE_PAYMENT_COMMITTED,
    events_pb2.EVENT_TYPE_PAYMENT_ABORTED,
    events_pb2.EVENT_TYPE_REFUND_COMMITTED,
    events_pb2.EVENT_TYPE_REFUND_ABORTED,
)
TYPE_NAMES = {
    number: name.removeprefix("EVENT_TYPE_")
    for name, number in events_pb2.EventType.items()
    if number
}


class Streams:
    """What every open stream checks: the console is stopping."""

    def __init__(self) -> None:
        self.stopping = threading.Event()  # set from uvicorn's signal handler or another thread

    async def pause(self, seconds: float) -> bool:
        """Sleeps SECONDS in short steps; False as soon as the console is stopping."""
        steps = max(1, int(seconds / 0.1))
        for _ in range(steps):
            if self.stopping.is_set():
                return False
            await asyncio.sleep(seconds / steps)
        return not self.stopping.is_set()


def cursor(request: Request) -> int | None:
    """Where the browser asks the stream to resume: its Last-Event-ID (a reconnection), else
    ?after= (a resume after a pause); None when it gives neither."""
    for given in (request.headers.get("last-event-id", ""), request.query_params.get("after", "")):
        if given.isdigit() and len(given) <= 19:
            return int(given)
    return None


def _moment(stamp: Timestamp) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else None


def _shown(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


# -- a customer's payments --------------------------------------------------------------------


def payment_event(payment: Payment, event_id: str) -> ServerSentEvent:
    data = {
        "id": payment.payment_id,
        "url": f"/payments/{payment.payment_id}",
        "created_at": _shown(payment.created_at),
        "direction": payment.direction.value if payment.direction else "",
        "counterparty": str(payment.counterparty)
        if payment.counterparty.bank
        else f"{len(payment.shares)} payees",
        "amount": f"{format_minor_units(payment.amount_minor_units, payment.currency)} "
        f"{payment.currency}",
        "status": payment.status.value,
        "reason": payment.reason_code,
    }
    return ServerSentEvent(data=json.dumps(data), event="payment", id=event_id)


async def payment_updates(
    calls: Calls, streams: Streams, after: int | None
) -> AsyncIterator[ServerSentEvent]:
    """The customer's payments and refunds as they are decided, from Events/Watch; polled
    from their history when the gateway does not serve Events/Watch."""
    since = time.time() - RECENT
    if not await events_served(calls):
        async for update in polled_payment_updates(calls.client, streams):
            yield update
        return
    async for answer in calls.watch(after or 0, PAYMENT_TYPES):
        for event in answer.events:
            if not event.HasField("payment"):
                continue
            occurred = _moment(event.occurred_at)
            if after is None and occurred is not None and occurred.timestamp() < since:
                continue  # older than the page: it shows them already
            payment = Payment.from_message(event.payment, "")
            yield payment_event(payment, str(event.sequence))


async def events_served(calls: Calls) -> bool:
    """Whether the gateway serves the event stream: one small Events/List call (a unary
    call's UNIMPLEMENTED is plain, where a stream's may not be)."""
    try:
        await calls.list_events(page_size=1)
    except ApiError as error:
        if unimplemented(error):
            return False
        raise
    return True


async def polled_payment_updates(
    client: GatewayClient, streams: Streams
) -> AsyncIterator[ServerSentEvent]:
    """The customer's payments as they appear or change, newest first on the first poll."""
    seen: dict[str, str] = {}
    while not streams.stopping.is_set():
        page = await client.history(page_size=NEWEST)
        for payment in reversed(page.payments):  # oldest first: the page prepends each
            if seen.get(payment.payment_id) != payment.status:
                seen[payment.payment_id] = payment.status
                yield payment_event(payment, payment.payment_id)
        # Only what the next poll can still show needs remembering.
        shown = {p.payment_id for p in page.payments}
        seen = {k: v for k, v in seen.items() if k in shown}
        if not await streams.pause(POLL_INTERVAL):
            return


# -- every event, for an admin ----------------------------------------------------------------


def _money(money: Any) -> str:
    return f"{format_minor_units(money.minor_units, money.currency)} {money.currency}"


def _account(ref: Any) -> str:
    return f"{ref.bank}/{ref.account}"


def describe(event: events_pb2.Event) -> dict[str, str]:
    """An event as the admin's live page shows it: its words and, for a payment, its page."""
    kind = TYPE_NAMES.get(event.type, str(event.type))
    summary, url = "", ""
    subject = event.WhichOneof("subject")
    if subject == "payment":
        p = event.payment
        # A split payment seen whole (an admin): its payees, counted.
        payee = _account(p.payee) if p.payee.bank else f"{len(p.shares)} payees"
        summary = f"{_account(p.payer)} → {payee} {_money(p.amount)}"
        if p.reason_code:
            summary += f" ({p.reason_code})"
        if p.refund_of:
            summary += f", refund of {p.refund_of}"
        url = f"/admin/payments/{p.payment_id}"
    elif subject == "user":
        u = event.user
        where = f" at {_account(u.account)}" if u.account.bank else ""
        summary = f"{u.username} ({u.role}){where}"
    elif subject == "deposit":
        d = event.deposit
        summary = f"{_money(d.amount)} to {_account(d.account)}"
        if d.admin:
            summary += f" by {d.admin}"
    elif subject == "key_rotation":
        summary = f"{event.key_rotation.replica} signs with key {event.key_rotation.kid}"
    return {
        "sequence": str(event.sequence),
        "type": kind,
        "occurred_at": _shown(_moment(event.occurred_at)),
        "summary": summary,
        "url": url,
    }


async def all_events(calls: Calls, after: int) -> AsyncIterator[ServerSentEvent]:
    """Every event after AFTER, then each as it happens; a heartbeat moves the cursor."""
    if not await events_served(calls):
        message = "not available: the gateway does not serve Events/Watch yet"
        yield ServerSentEvent(data=message, event="ended")
        return
    async for answer in calls.watch(after):
        for event in answer.events:
            data = json.dumps(describe(event))
            yield ServerSentEvent(data=data, event="event", id=str(event.sequence))
        if not answer.events:
            moved = str(answer.next_after_sequence)
            yield ServerSentEvent(data=moved, event="cursor", id=moved)


# -- the response -----------------------------------------------------------------------------


async def _until_stopping(
    source: AsyncIterator[ServerSentEvent], streams: Streams
) -> AsyncIterator[ServerSentEvent]:
    """SOURCE's items until it ends or the console is stopping (checked while it waits)."""
    iterator = aiter(source)
    following: asyncio.Future[ServerSentEvent] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(iterator))
            while not following.done():
                if streams.stopping.is_set():
                    return
                await asyncio.wait({following}, timeout=0.1)
            try:
                yield following.result()
            except StopAsyncIteration:
                return
    finally:
        if following is not None and not following.done():
            following.cancel()
            # Whatever it ends with (cancelled, or the source closed) is seen here.
            following.add_done_callback(lambda done: done.cancelled() or done.exception())


def event_stream(
    request: Request,
    streams: Streams,
    source: AsyncIterator[ServerSentEvent],
    still_open: Callable[[], bool],
) -> EventSourceResponse:
    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            async for event in _until_stopping(source, streams):
                if not still_open() or await request.is_disconnected():
                    return
                yield event
        except ApiError as error:
            # The token expired or was revoked, or the gateway is down: tell the page, stop.
            yield ServerSentEvent(data=error.headline(), event="ended")

    # ping keeps proxies from idling the stream; send_timeout drops a browser that stopped
    # reading instead of letting its buffer grow.
    return EventSourceResponse(events(), ping=15, send_timeout=10)
