"""Throttling password checks: every check first reserves an attempt for each of its keys (the
normalized username, and the client certificate asking), in one atomic statement per key in
the gateway's database, so concurrent guesses cannot slip past the count and every replica
sees the same counts. Too many attempts within a window lock the key out for a cool-down. A
successful check clears the username's count and gives the certificate its attempt back.

What is kept is bounded: a key's row lives one window (rows past it are forgotten), and a
certificate that keeps failing is locked before it can make many username rows.
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
    """At most ``max_attempts`` per ``window`` seconds, then ``cooldown`` seconds locked."""

    max_attempts: int
    window: float
    cooldown: float


@dataclass(frozen=True)
class ThrottleKey:
    key: str  # e.g. "user:alice" or "cert:<thumbprint>"
    limit: Limit
    what: str  # for the refusal: "this username", "this client certificate"


def username_key(normalized_username: str, limit: Limit) -> ThrottleKey:
    return ThrottleKey(f"user:{normalized_username}", limit, "this username")


def certificate_key(thumbprint: str, limit: Limit) -> ThrottleKey:
    return ThrottleKey(f"cert:{thumbprint}", limit, "this client certificate")


class LoginThrottle:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def reserve(self, keys: Sequence[ThrottleKey]) -> None:
        """Counts one attempt for every key, in order; raises Throttled (and counts no further
        key) at the first one that is locked or over its limit."""
        moment = self._clock()
        refusal = await self._db.statements(lambda c: _reserve(c, keys, moment))
        if refusal is not None:
            what, wait = refusal
            raise Throttled(
                f"too many failed attempts for {what}; try again in {int(wait) + 1} s",
                retry_after=wait,
            )

    async def succeeded(self, username: ThrottleKey, certificate: ThrottleKey) -> None:
        """The password was right: forget the username's failures, and give the certificate
        back the attempt it reserved."""
        await self._db.statements(lambda c: _succeeded(c, username.key, certificate.key))

    async def forget_expired(self, longest_window: float) -> None:
        cutoff = self._clock() - longest_window
        await self._db.statements(
            lambda c: c.execute(
                delete(ATTEMPTS).where(
                    ATTEMPTS.c.window_start < cutoff, ATTEMPTS.c.locked_until < self._clock()
                )
            )
        )


def _reserve(
    connection: Connection, keys: Sequence[ThrottleKey], moment: float
) -> tuple[str, float] | None:
    for key in keys:
        row = connection.execute(
            _UPSERT[connection.dialect.name],
            {"k": key.key, "now": moment, "window": key.limit.window},
        ).one()
        if row.locked_until > moment:
            return key.what, row.locked_until - moment
        if row.attempts > key.limit.max_attempts:
            connection.execute(
                LOCK, {"k": key.key, "until": moment + key.limit.cooldown, "now": moment}
            )
            return key.what, key.limit.cooldown
    return None


def _succeeded(connection: Connection, username_key: str, certificate_key: str) -> None:
    connection.execute(delete(ATTEMPTS).where(ATTEMPTS.c.key == username_key))
    connection.execute(GIVE_BACK, {"k": certificate_key})


def _upsert(dialect: ModuleType) -> Executable:
    expired = ATTEMPTS.c.window_start < bindparam("now") - bindparam("window")
    locked = ATTEMPTS.c.locked_until > bindparam("now")
    statement = dialect.insert(ATTEMPTS).values(
        key=bindparam("k"), window_start=bindparam("now"), attempts=1, locked_until=0.0
    )
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["key"],
        set_={
            # While locked nothing is counted; a new window starts the count again.
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
    ).returning(ATTEMPTS.c.attempts, ATTEMPTS.c.locked_until)
    return upsert


_UPSERT = per_dialect(_upsert)
LOCK = (
    update(ATTEMPTS)
    .where(ATTEMPTS.c.key == bindparam("k"))
    .values(locked_until=bindparam("until"), attempts=0, window_start=bindparam("now"))
)
GIVE_BACK = (
    update(ATTEMPTS)
    .where(ATTEMPTS.c.key == bindparam("k"), ATTEMPTS.c.attempts > 0)
    .values(attempts=ATTEMPTS.c.attempts - 1)
)
