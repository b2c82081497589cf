"""How many of one peer's refused calls are logged one by one: the first ``limit`` in each
``interval`` seconds. The rest are only counted, and when the interval ends one record says
how many there were, by method and status code. A peer that floods refused calls costs the
log a bounded number of lines per interval, while every peer's first refusals, and the count
of all the others, are still there to read."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# A peer's refused calls logged one by one in each interval of this many seconds.
LOGGED_PER_INTERVAL, INTERVAL = 20, 10.0
# Peers followed at once; past this, new peers share one window (a flood from many peers at
# once is still bounded, and still counted).
MAX_PEERS = 10_000
OTHER_PEERS = "(other peers)"

Schedule = Callable[[float, Callable[[], None]], Any]


def _call_later(delay: float, callback: Callable[[], None]) -> Any:
    return asyncio.get_running_loop().call_later(delay, callback)


@dataclass
class _Window:
    ends: float
    logged: int = 0
    counted: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, code)


class RefusalSampler:
    def __init__(
        self,
        summarize: Callable[[str, dict[str, Any]], None],
        limit: int = LOGGED_PER_INTERVAL,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        schedule: Schedule = _call_later,
    ) -> None:
        """SUMMARIZE(peer, fields) writes the record of the calls a window counted; SCHEDULE
        (delay, callback) runs the callback later (the event loop's timer)."""
        self._summarize = summarize
        self._limit = limit
        self._interval = interval
        self._clock = clock
        self._schedule = schedule
        self._windows: dict[str, _Window] = {}

    def admit(self, peer: str, method: str, code: str) -> bool:
        """Whether this refused call of PEER is logged in full; if not, it is counted."""
        now = self._clock()
        window = self._windows.get(peer)
        if window is not None and now >= window.ends:
            self._close(peer, window)
            window = None
        if window is None:
            if len(self._windows) >= MAX_PEERS:
                self._forget_ended(now)
            if len(self._windows) >= MAX_PEERS and peer != OTHER_PEERS:
                return self.admit(OTHER_PEERS, method, code)
            window = self._windows[peer] = _Window(now + self._interval)
        if window.logged < self._limit:
            window.logged += 1
            return True
        if not window.counted:  # the first call counted: its summary is due at the end
            self._schedule(window.ends - now, lambda: self._close(peer, window))
        window.counted[(method, code)] += 1
        return False

    def _close(self, peer: str, window: _Window) -> None:
        if self._windows.get(peer) is window:
            del self._windows[peer]
        if window.counted:
            calls = {f"{method} {code}": n for (method, code), n in window.counted.items()}
            self._summarize(
                peer,
                {"count": sum(window.counted.values()), "calls": calls, "seconds": self._interval},
            )
            window.counted.clear()  # the timer and a later call may both close it: once

    def _forget_ended(self, now: float) -> None:
        for peer, window in list(self._windows.items()):
            if now >= window.ends:
                self._close(peer, window)
