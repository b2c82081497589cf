"""Live updates as server-sent events, and the one place they come from.

``payment_updates`` is the source: today it polls the customer's newest payments once a
second and yields each one that is new or changed. The gateway's event stream (issue 23,
``Events/Watch``) replaces it here, and nothing else changes.

A stream ends when the browser goes away, when the session ends, and promptly when the
console stops: uvicorn waits for open responses before it shuts down, so every stream watches
``Streams.stopping`` (set by the server's exit handler, or by whoever runs the app in a thread).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from minipay.client import ApiError, GatewayClient, Payment
from minipay.money import format_minor_units

POLL_INTERVAL = 1.0
NEWEST = 20  # the payments looked at per poll; the first poll sends them all


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


async def payment_updates(
    client: GatewayClient, streams: Streams, still_open: Callable[[], bool]
) -> AsyncIterator[Payment]:
    """The customer's payments as they appear or change, newest first on the first poll."""
    seen: dict[str, str] = {}
    while still_open():
        page = await client.history(page_size=NEWEST)
        for payment in reversed(page.payments):  # oldest first: the page prepends each
            if seen.get(payment.payment_id) != payment.status:
                seen[payment.payment_id] = payment.status
                yield payment
        # Only what the next poll can still show needs remembering.
        shown = {p.payment_id for p in page.payments}
        seen = {k: v for k, v in seen.items() if k in shown}
        if not await streams.pause(POLL_INTERVAL):
            return


def payment_event(payment: Payment) -> ServerSentEvent:
    data = {
        "id": payment.payment_id,
        "url": f"/payments/{payment.payment_id}",
        "created_at": payment.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "direction": payment.direction.value if payment.direction else "",
        "counterparty": str(payment.counterparty),
        "amount": f"{format_minor_units(payment.amount_minor_units, payment.currency)} "
        f"{payment.currency}",
        "status": payment.status.value,
        "reason": payment.reason_code,
    }
    return ServerSentEvent(data=json.dumps(data), event="payment", id=payment.payment_id)


def event_stream(
    request: Request,
    streams: Streams,
    source: AsyncIterator[Payment],
) -> EventSourceResponse:
    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            async for payment in source:
                if streams.stopping.is_set() or await request.is_disconnected():
                    return
                yield payment_event(payment)
        except ApiError as error:
            # The token expired or was revoked, or the gateway is down: tell the page, stop.
            yield ServerSentEvent(data=error.headline(), event="ended")

    # ping keeps proxies from idling the stream; send_timeout drops a browser that stopped
    # reading instead of letting its buffer grow.
    return EventSourceResponse(events(), ping=15, send_timeout=10)
