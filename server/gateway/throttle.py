"""Throttling password checks: every check first reserves an attempt for each of its keys (the
identity the password is checked for, and the client certificate asking), in one atomic
statement per key in the gateway's database, so concurrent guesses cannot slip past the count
and every replica sees the same counts.

A key's window starts at its first attempt and lasts ``window`` seconds; at most
``max_attempts`` are checked in it. The next one locks the key until the window ends, and for
at least ``cooldown`` seconds: the end of a cool-down never opens a fresh window, so "5 per
5 minutes" is 5 per 5 minutes. While locked nothing is counted. A successful check forgets the
identity's failures and gives the certificate back its one attempt (a certificate may guess
at many names: its failures stay counted). A check that could not be made (its bank did not
answer) gives every key its attempt back.

What is kept is bounded: a key's row lives one window (rows past it are forgotten), and a
certificate that keeps failing is locked before it can make many identity rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

from sqlalchemy import Connection, bindparam, case, delete, update
from sqlalchemy.sql import Executable

from server.common.db import Database, per_dialect
from server.common.errors import Throttled
from server.gateway.models import Base

ATTEMPTS = Base.metadata.tables["login_attempts"]


@dataclass(frozen=True)
class Limit:
    """At most ``max_attempts`` per ``window`` seconds; the next locks the key until the
    window ends, and for at least ``cooldown`` seconds."""

    max_attempts: int
    window: float
    cooldown: float


@dataclass(frozen=True)
class ThrottleKey:
    key: str  # e.g. "user:customer:alpha:alice" or "cert:<thumbprint>"
    limit: Limit
    what: str  # for the refusal: "this username", "this client certificate"
    # What a right password does: forget every failure (an identity) or give back only its
    # own attempt (a certificate, whose failures at other names stay counted).
    forgotten_on_success: bool


def identity_key(identity: str, limit: Limit) -> ThrottleKey:
    return ThrottleKey(f"user:{identity}", limit, "this username", forgotten_on_success=True)


def certificate_key(thumbprint: str, limit: Limit) -> ThrottleKey:
    return ThrottleKey(
        f"cert:{thumbprint}", limit, "this client certificate", forgotten_on_success=False
    )


@dataclass(frozen=True)
class Counted:
    """One key's attempt, as reserved: in which window, and how many that window holds now."""

    key: ThrottleKey
    window_start: float
    attempts: int


@dataclass(frozen=True)
class Reservation:
    """The attempts one password check reserved, in the order of its keys."""

    counted: tuple[Counted, ...]

    @property
    def rank(self) -> int:
        """The attempts the first key (the certificate) holds in its window, this one
        included: the fewer, the sooner its check runs (``passwords.PasswordWork``)."""
        return self.counted[0].attempts


class LoginThrottle:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def reserve(self, keys: Sequence[ThrottleKey]) -> Reservation:
        """Counts one attempt for every key, in order; raises Throttled (and counts no further
        key) at the first one that is locked or over its limit."""
        moment = self._clock()
        counted, refusal = await self._db.statements(lambda c: _reserve(c, keys, moment))
        if refusal is not None:
            what, wait = refusal
            raise Throttled(
                f"too many failed attempts for {what}; try again in {int(wait) + 1} s",
                retry_after=wait,
            )
        return Reservation(tuple(counted))

    async def succeeded(self, reservation: Reservation) -> None:
        """The password was right: the identity's failures are forgotten, and the certificate
        gets back the attempt it reserved."""
        await self._db.statements(lambda c: _settle(c, reservation.counted, success=True))

    async def give_back(self, reservation: Reservation) -> None:
        """The check could not be made (its bank did not answer): no key is charged for it."""
        await self._db.statements(lambda c: _settle(c, reservation.counted, success=False))

    async def forget_expired(self, longest_window: float) -> None:
        moment = self._clock()
        await self._db.statements(
            lambda c: c.execute(
                delete(ATTEMPTS).where(
                    ATTEMPTS.c.window_start < moment - longest_window,
                    ATTEMPTS.c.locked_until < moment,
                )
            )
        )


def _reserve(
    connection: Connection, keys: Sequence[ThrottleKey], moment: float
) -> tuple[list[Counted], tuple[str, float] | None]:
    counted: list[Counted] = []
    for key in keys:
        row = connection.execute(
            _UPSERT[connection.dialect.name],
            {"k": key.key, "now": moment, "window": key.limit.window},
        ).one()
        if row.locked_until > moment:
            return counted, (key.what, row.locked_until - moment)
        if row.attempts > key.limit.max_attempts:
            # Locked until its window ends (at least a cool-down): the window stays as it was.
            until = max(moment + key.limit.cooldown, row.window_start + key.limit.window)
            connection.execute(LOCK, {"k": key.key, "until": until})
            return counted, (key.what, until - moment)
        counted.append(Counted(key, row.window_start, row.attempts))
    return counted, None


def _settle(connection: Connection, counted: Sequence[Counted], *, success: bool) -> None:
    for item in counted:
        if success and item.key.forgotten_on_success:
            connection.execute(delete(ATTEMPTS).where(ATTEMPTS.c.key == item.key.key))
        else:
            connection.execute(GIVE_BACK, {"k": item.key.key, "start": item.window_start})


def _upsert(dialect: ModuleType) -> Executable:
    expired = ATTEMPTS.c.window_start <= bindparam("now") - bindparam("window")
    locked = ATTEMPTS.c.locked_until > bindparam("now")
    statement = dialect.insert(ATTEMPTS).values(
        key=bindparam("k"), window_start=bindparam("now"), attempts=1, locked_until=0.0
    )
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["key"],
        set_={
            # While locked nothing is counted; only a window that has ended starts a new one.
            "attempts": case(
                (locked, ATTEMPTS.c.attempts),
                (expired, 1),
                else_=ATTEMPTS.c.attempts + 1,
            ),
            "window_start": case(
                (locked, ATTEMPTS.c.window_start),
                (expired, bindparam("now")),
                else_=ATTEMPTS.c.window_start,
            ),
        },
    ).returning(ATTEMPTS.c.attempts, ATTEMPTS.c.window_start, ATTEMPTS.c.locked_until)
    return upsert


_UPSERT = per_dialect(_upsert)
# The refused attempt is not counted; the window is left as it is.
LOCK = (
    update(ATTEMPTS)
    .where(ATTEMPTS.c.key == bindparam("k"))
    .values(locked_until=bindparam("until"), attempts=ATTEMPTS.c.attempts - 1)
)
# Only within the window the attempt was counted in: a new window owes it nothing.
GIVE_BACK = (
    update(ATTEMPTS)
    .where(
        ATTEMPTS.c.key == bindparam("k"),
        ATTEMPTS.c.window_start == bindparam("start"),
        ATTEMPTS.c.attempts > 0,
    )
    .values(attempts=ATTEMPTS.c.attempts - 1)
)
