"""Who is signed in: sessions kept in the console's memory, keyed by a random id.

The browser holds only that id, in a cookie; the gateway token (bound to the console's
certificate) stays here and is never sent to the browser. A session ends when its token
expires (or sooner, at the console's session lifetime), at logout, or when the gateway refuses
its token. What is kept is bounded: at most ``max_sessions`` at once (a sign-in beyond that
is refused), at most ``per_user`` for one username (a further sign-in forgets that user's
oldest), and at most ``Confirmations.LIMIT`` pending admin confirmations per session.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from minipay.client import GatewayClient


class SessionsFull(Exception):
    """Every session slot is taken by a live sign-in."""


@dataclass
class Confirmation:
    """An admin action shown for confirmation before it is done. What it needs (a new user's
    password included) stays here, never in the page; once done, only its outcome is kept."""

    id: str
    title: str
    details: list[tuple[str, str]]  # what the confirmation page shows, row by row
    back: str  # the page that shows the outcome
    perform: Callable[[GatewayClient], Awaitable[str]] | None  # None once started
    task: asyncio.Task[str] | None = None

    def start(self, client: GatewayClient) -> asyncio.Task[str]:
        """Starts the action once; a second confirmation (a double click) gets the same task."""
        if self.task is None:
            assert self.perform is not None
            self.task = asyncio.ensure_future(self.perform(client))
            self.perform = None  # drop the closure and what it holds (a password)
        return self.task


class Confirmations:
    """A session's confirmations, newest last; the oldest is forgotten past LIMIT."""

    LIMIT = 20

    def __init__(self) -> None:
        self._items: OrderedDict[str, Confirmation] = OrderedDict()

    def add(
        self,
        title: str,
        details: list[tuple[str, str]],
        back: str,
        perform: Callable[[GatewayClient], Awaitable[str]],
    ) -> Confirmation:
        confirmation = Confirmation(secrets.token_urlsafe(16), title, details, back, perform)
        self._items[confirmation.id] = confirmation
        while len(self._items) > self.LIMIT:
            self._items.popitem(last=False)
        return confirmation

    def get(self, confirmation_id: str) -> Confirmation | None:
        return self._items.get(confirmation_id)


@dataclass
class Session:
    id: str = field(repr=False)  # the cookie's value: whoever has it is signed in
    username: str
    role: str  # "customer" or "admin", as the gateway's token says
    token: str = field(repr=False)
    expires_at: float  # time.time() seconds
    csrf: str = field(repr=False)  # every form that changes something carries it
    confirmations: Confirmations = field(default_factory=Confirmations, repr=False)


class SessionStore:
    def __init__(
        self,
        lifetime: float,
        max_sessions: int = 10000,
        per_user: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lifetime = lifetime
        self._max = max_sessions
        self._per_user = per_user
        self._clock = clock
        self._sessions: dict[str, Session] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, username: str, role: str, token: str, token_expires_at: float) -> Session:
        """A new session for a token; it ends with the token, or after the lifetime."""
        now = self._clock()
        mine = [s for s in self._sessions.values() if s.username == username]
        for old in mine[: max(0, len(mine) - self._per_user + 1)]:
            del self._sessions[old.id]
        if len(self._sessions) >= self._max:
            self.forget_expired()
            if len(self._sessions) >= self._max:
                raise SessionsFull(f"{self._max} people are signed in; try again later")
        session = Session(
            id=secrets.token_urlsafe(32),
            username=username,
            role=role,
            token=token,
            expires_at=min(token_expires_at, now + self._lifetime),
            csrf=secrets.token_urlsafe(32),
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session with this id; an expired one is forgotten."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def remove(self, session_id: str) -> Session | None:
        return self._sessions.pop(session_id, None)

    def seconds_left(self, session: Session) -> int:
        return max(0, int(session.expires_at - self._clock()))

    def forget_expired(self) -> None:
        now = self._clock()
        for session_id in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[session_id]
