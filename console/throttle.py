"""Throttling sign-ins in the console, before the gateway is asked.

Every console user's token is bound to the console's one certificate, so the gateway's
per-certificate login throttle counts all of them together: one browser failing on purpose
could lock the console for everyone. The console therefore counts failures itself, per
username and per browser address, and refuses the next attempt before it reaches the gateway.
The rule is the gateway's: an attempt is reserved before the password is checked (so parallel
attempts cannot slip past the count); past the limit within the window the key is locked for
the cool-down; a success clears the username's count and gives the address its attempt back.

Memory is bounded: a key lives one window (or its cool-down), and past ``max_keys`` the
expired ones are dropped first, then the oldest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_KEY_LENGTH = 80


@dataclass(frozen=True)
class Limit:
    """At most ``max_attempts`` per ``window`` seconds, then ``cooldown`` seconds locked."""

    max_attempts: int
    window: float
    cooldown: float


class Throttled(Exception):
    def __init__(self, what: str, retry_after: float) -> None:
        super().__init__(
            f"too many failed sign-ins for {what}; try again in {int(retry_after) + 1} s"
        )
        self.retry_after = retry_after


@dataclass
class _Count:
    window_start: float
    attempts: int = 0
    locked_until: float = 0.0


class LoginThrottle:
    def __init__(
        self,
        per_username: Limit,
        per_address: Limit,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._limits = {"user": per_username, "address": per_address}
        self._clock = clock
        self._max_keys = max_keys
        self._counts: dict[str, _Count] = {}

    @staticmethod
    def _keys(username: str, address: str) -> list[tuple[str, str, str]]:
        """(key, kind, what the refusal names) for an attempt."""
        user = username.strip().lower()[:MAX_KEY_LENGTH]
        return [
            (f"user:{user}", "user", "this username"),
            (f"address:{address[:MAX_KEY_LENGTH]}", "address", "this address"),
        ]

    def reserve(self, username: str, address: str) -> None:
        """Counts one attempt for the username and the address; raises Throttled at the first
        that is locked or over its limit (and counts no further key)."""
        now = self._clock()
        self._bound(now)
        for key, kind, what in self._keys(username, address):
            limit = self._limits[kind]
            count = self._counts.get(key)
            if count is None or (
                count.locked_until <= now and now - count.window_start >= limit.window
            ):
                count = self._counts[key] = _Count(window_start=now)
            if count.locked_until > now:
                raise Throttled(what, count.locked_until - now)
            count.attempts += 1
            if count.attempts > limit.max_attempts:
                count.locked_until = now + limit.cooldown
                count.attempts = 0
                count.window_start = now
                raise Throttled(what, limit.cooldown)

    def succeeded(self, username: str, address: str) -> None:
        """The password was right: forget the username's failures, give the address its
        attempt back."""
        (user_key, _, _), (address_key, _, _) = self._keys(username, address)
        self._counts.pop(user_key, None)
        count = self._counts.get(address_key)
        if count is not None and count.attempts > 0:
            count.attempts -= 1

    def _bound(self, now: float) -> None:
        """Makes room for an attempt's two keys."""
        if len(self._counts) + 2 <= self._max_keys:
            return
        longest = max(limit.window for limit in self._limits.values())
        for key in [
            k
            for k, c in self._counts.items()
            if c.locked_until <= now and now - c.window_start >= longest
        ]:
            del self._counts[key]
        while len(self._counts) + 2 > self._max_keys:
            del self._counts[next(iter(self._counts))]
