"""Login throttling: too many failed logins for one username within a window lock that
username out until a cool-down passes. Kept in memory: a restart forgives, which is fine for
slowing down guessing but is not an account lock."""

from __future__ import annotations

import time
from collections import deque

from server.common.errors import Throttled


class LoginThrottle:
    def __init__(self, max_failures: int, window: float, cooldown: float) -> None:
        self._max = max_failures
        self._window = window
        self._cooldown = cooldown
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def check(self, username: str) -> None:
        until = self._locked_until.get(username, 0.0)
        if time.monotonic() < until:
            wait = int(until - time.monotonic()) + 1
            raise Throttled(f"too many failed logins for this username; try again in {wait} s")

    def failed(self, username: str) -> None:
        moment = time.monotonic()
        failures = self._failures.setdefault(username, deque())
        failures.append(moment)
        while failures and failures[0] < moment - self._window:
            failures.popleft()
        if len(failures) >= self._max:
            self._locked_until[username] = moment + self._cooldown
            failures.clear()

    def succeeded(self, username: str) -> None:
        self._failures.pop(username, None)
        self._locked_until.pop(username, None)
