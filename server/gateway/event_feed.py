"""Live watchers' wake-ups on one replica. Every watcher reads the stream from the database
at its own pace (``events.read``), so what it holds is one page, however far behind it is;
this only tells the watchers when the stream may have moved: one small query of the head
every POLL seconds, for all of them, and only while someone watches. An event decided on
another replica is seen here within POLL plus a page read. Wake-ups make a watcher faster,
never correct: it reads from its cursor whatever woke it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from minipay.errors import ErrorReason
from server.common.errors import Throttled

log = logging.getLogger(__name__)

POLL = 0.1  # seconds between reads of the head while someone watches
MAX_WATCHERS = 256  # per replica: each is a call held open


class EventFeed:
    def __init__(
        self,
        read_head: Callable[[], Awaitable[int]],
        poll: float = POLL,
        max_watchers: int = MAX_WATCHERS,
    ) -> None:
        self._read_head = read_head
        self._poll = poll
        self._max = max_watchers
        self._watchers = 0
        self._head = 0
        self._moved = asyncio.Condition()
        self._poller: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """One watcher, for as long as the block runs; one too many is RESOURCE_EXHAUSTED."""
        if self._watchers >= self._max:
            raise Throttled(
                f"this gateway serves {self._max} watchers at most; try again later or poll "
                "with Events/List",
                ErrorReason.TOO_MANY_REQUESTS,
                retry_after=5.0,
            )
        self._watchers += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_head())
        try:
            yield
        finally:
            self._watchers -= 1

    async def wait_past(self, sequence: int, timeout: float) -> None:
        """Returns once the head is past SEQUENCE, or after TIMEOUT seconds."""
        async with self._moved:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait_for(lambda: self._head > sequence), timeout)

    async def _notify(self) -> None:
        async with self._moved:
            self._moved.notify_all()

    async def _poll_head(self) -> None:
        while self._watchers > 0:
            try:
                head = await self._read_head()
            except Exception:  # the database away for a moment: the watchers wait a little more
                log.warning("cannot read the event stream's head", exc_info=True)
                head = self._head
            if head > self._head:
                self._head = head
                await self._notify()
            await asyncio.sleep(self._poll)

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
