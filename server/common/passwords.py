"""Password hashing with bcrypt, and the bound on how much of it runs at once.

bcrypt is slow on purpose, so its work runs in threads, a few at a time (``Passwords``), and
one client may only have a couple of checks in flight (``PasswordWork``): a flood from one
client waits or is refused while everyone else's logins go on. A check for a user who does
not exist costs the same as a real one: it runs against a stand-in hash of the same cost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import bcrypt

from minipay.errors import ErrorReason
from server.common.errors import Throttled

MAX_PASSWORD_BYTES = 72  # bcrypt ignores everything past this
# Password checks running at once in one process (bcrypt is CPU-bound: more buys nothing).
DEFAULT_CONCURRENCY = 4
# Password checks one client may have in flight at once.
DEFAULT_PER_CLIENT = 2


def hash_password(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode()[:MAX_PASSWORD_BYTES], bcrypt.gensalt(rounds)).decode()


class Passwords:
    """Hashing and checking at one bcrypt cost, at most ``concurrency`` at a time."""

    def __init__(self, rounds: int, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.rounds = rounds
        # What an unknown user's password is checked against: the same cost as a real hash.
        self._stand_in = hash_password("not a password of anyone", rounds)
        self._running = asyncio.Semaphore(concurrency)

    async def hash(self, password: str) -> str:
        async with self._running:
            return await asyncio.to_thread(hash_password, password, self.rounds)

    async def check(self, password: str, password_hash: str | None) -> bool:
        """True only for a real hash that matches; None costs the same and is False."""
        async with self._running:
            return await asyncio.to_thread(self.check_now, password, password_hash)

    def check_now(self, password: str, password_hash: str | None) -> bool:
        candidate = (password_hash or self._stand_in).encode()
        try:
            ok = bcrypt.checkpw(password.encode()[:MAX_PASSWORD_BYTES], candidate)
        except ValueError:  # not a bcrypt hash at all: never a match
            ok = False
        return ok and password_hash is not None


class PasswordWork:
    """How many password checks each client has in flight; over the limit is refused."""

    def __init__(self, per_client: int = DEFAULT_PER_CLIENT) -> None:
        self._per_client = per_client
        self._in_flight: dict[str, int] = {}  # only clients with checks running: bounded

    @contextlib.asynccontextmanager
    async def slot(self, client: str) -> AsyncIterator[None]:
        if self._in_flight.get(client, 0) >= self._per_client:
            raise Throttled(
                "too many password checks in flight from this client certificate; "
                "wait for the answers",
                ErrorReason.TOO_MANY_REQUESTS,
                retry_after=1.0,
            )
        self._in_flight[client] = self._in_flight.get(client, 0) + 1
        try:
            yield
        finally:
            left = self._in_flight[client] - 1
            if left:
                self._in_flight[client] = left
            else:
                del self._in_flight[client]
