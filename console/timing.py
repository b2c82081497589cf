"""How long each page takes to render on the server: from the request's arrival to its
response's first byte, per route. Kept in memory (bounded), sent as a ``Server-Timing``
header, and logged with each request (method, route, status, milliseconds: never the query,
which may hold a page token, nor any form field)."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("console")
SAMPLES = 1000  # per route


class RenderTimes:
    def __init__(self) -> None:
        self._samples: dict[str, deque[float]] = {}

    def record(self, route: str, milliseconds: float) -> None:
        self._samples.setdefault(route, deque(maxlen=SAMPLES)).append(milliseconds)

    def samples(self) -> dict[str, list[float]]:
        """Per route ("GET /payments"), the latest render times in milliseconds."""
        return {route: list(samples) for route, samples in self._samples.items()}


def route_of(scope: Scope) -> str:
    """The route's pattern (/payments/{payment_id}), not the path: bounded and id-free."""
    route: Any = scope.get("route")
    return str(getattr(route, "path", "")) or "(no route)"


class Timing:
    def __init__(self, app: ASGIApp, times: RenderTimes) -> None:
        self.app = app
        self.times = times

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = (time.perf_counter() - started) * 1000
                route = route_of(scope)
                message["headers"] = [
                    *message.get("headers", []),
                    (b"server-timing", f"app;dur={elapsed:.1f}".encode()),
                ]
                if not scope["path"].startswith("/static/"):
                    self.times.record(f"{scope['method']} {route}", elapsed)
                    fields = {
                        "method": scope["method"],
                        "route": route,
                        "status": message["status"],
                        "render_ms": round(elapsed, 1),
                    }
                    log.info("request", extra={"fields": fields})
            await send(message)

        await self.app(scope, receive, send_timed)
