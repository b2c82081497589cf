"""Password hashing with bcrypt, and the bound on how much of it runs at once.

bcrypt is slow on purpose, so its work runs in threads, a few at a time (``Passwords``). The
gateway bounds the checks it asks for (``PasswordWork``): one client certificate may have two
in flight; each place that checks passwords (a bank, or the gateway itself for admins) runs
at most two at a time from one replica; and the checks waiting for a place go fewest
attempts first, counted per certificate in the throttle's window. A certificate that floods
climbs that count with every guess and falls behind everyone else, so a customer who has not
failed waits only for the checks already running at their bank, however many certificates
flood. A check for a user who does not exist costs the same as a real one: it runs against a
stand-in hash of the same cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import bcrypt

from minipay.errors import ErrorReason
from server.common.errors import Throttled

MAX_PASSWORD_BYTES = 72  # bcrypt ignores everything past this
# Password checks running at once in one process (bcrypt is CPU-bound: more buys nothing).
DEFAULT_CONCURRENCY = 4
# Password checks one client may have in flight at once.
DEFAULT_PER_CLIENT = 2
# Password checks one gateway replica runs at once at one place (a bank, or itself): what
# waits beyond them is ordered, what runs is not. Two keep a bank's two cores busy.
DEFAULT_PER_PLACE = 2


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
    """How many password checks each client has in flight (over the limit is refused), and
    whose turn it is at each place that checks them."""

    def __init__(
        self, per_client: int = DEFAULT_PER_CLIENT, per_place: int = DEFAULT_PER_PLACE
    ) -> None:
        self._per_client = per_client
        self._per_place = per_place
        self._in_flight: dict[str, int] = {}  # only clients with checks running: bounded
        self._places: dict[str, _Place] = {}  # the banks and the gateway: bounded
        self._arrivals = itertools.count()

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

    @contextlib.asynccontextmanager
    async def turn(self, place: str, rank: int) -> AsyncIterator[None]:
        """Waits until one of PLACE's checks is free for this one: of those waiting, the
        lowest RANK (the certificate's attempts in its window) goes first, then the earliest."""
        queue = self._places.setdefault(place, _Place())
        if queue.running < self._per_place and not queue.waiting:
            queue.running += 1
        else:
            turn = asyncio.get_running_loop().create_future()
            heapq.heappush(queue.waiting, (rank, next(self._arrivals), turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():  # handed the slot as it was cancelled
                    self._next(queue)
                raise
        try:
            yield
        finally:
            self._next(queue)

    def _next(self, queue: _Place) -> None:
        """A check at QUEUE's place ended: its slot goes to the first still waiting."""
        while queue.waiting:
            _, _, turn = heapq.heappop(queue.waiting)
            if not turn.done():  # a waiter cancelled meanwhile left a done future behind
                turn.set_result(None)
                return
        queue.running -= 1


@dataclass
class _Place:
    running: int = 0
    waiting: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)
