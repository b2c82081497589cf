"""The login throttle, with an injected clock, on a real (temporary) SQLite database."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from server.common.db import Database
from server.common.errors import Throttled
from server.gateway.throttle import Limit, LoginThrottle, certificate_key, username_key

LIMIT = Limit(max_attempts=3, window=60.0, cooldown=30.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def attempt(throttle: LoginThrottle, user: str = "alice", cert: str = "c1") -> None:
    asyncio.run(
        throttle.reserve([certificate_key(cert, Limit(100, 60, 30)), username_key(user, LIMIT)])
    )


def test_locks_a_username_after_its_attempts(gateway_db: Database) -> None:
    throttle = LoginThrottle(gateway_db, Clock())
    for _ in range(3):
        attempt(throttle)
    with pytest.raises(Throttled) as refused:
        attempt(throttle)
    assert "this username" in refused.value.message
    assert refused.value.retry_after == pytest.approx(30.0)
    attempt(throttle, user="bob")  # another username is not locked


def test_the_cool_down_ends(gateway_db: Database) -> None:
    clock = Clock()
    throttle = LoginThrottle(gateway_db, clock)
    for _ in range(3):
        attempt(throttle)
    with pytest.raises(Throttled):
        attempt(throttle)
    clock.now += 29
    with pytest.raises(Throttled):
        attempt(throttle)  # still locked; and this attempt was not counted
    clock.now += 2
    attempt(throttle)


def test_attempts_outside_the_window_are_forgotten(gateway_db: Database) -> None:
    clock = Clock()
    throttle = LoginThrottle(gateway_db, clock)
    for _ in range(3):
        attempt(throttle)
        clock.now += 25
    # The first attempt is more than a window old: a new window has begun.
    attempt(throttle)
    attempt(throttle)


def test_success_clears_the_username_and_gives_the_certificate_its_attempt_back(
    gateway_db: Database,
) -> None:
    throttle = LoginThrottle(gateway_db, Clock())
    cert_limit = Limit(2, 60, 30)

    def reserve() -> None:
        asyncio.run(
            throttle.reserve([certificate_key("c1", cert_limit), username_key("alice", LIMIT)])
        )

    reserve()
    asyncio.run(throttle.succeeded(username_key("alice", LIMIT), certificate_key("c1", cert_limit)))
    reserve()
    reserve()  # two attempts counted for the certificate: the successful one was given back
    with pytest.raises(Throttled) as refused:
        reserve()
    assert "client certificate" in refused.value.message


def test_a_locked_certificate_counts_no_username(gateway_db: Database) -> None:
    throttle = LoginThrottle(gateway_db, Clock())
    cert_limit = Limit(1, 60, 30)
    asyncio.run(throttle.reserve([certificate_key("c1", cert_limit), username_key("u1", LIMIT)]))
    for name in ("u2", "u3", "u4"):
        with pytest.raises(Throttled):
            asyncio.run(
                throttle.reserve([certificate_key("c1", cert_limit), username_key(name, LIMIT)])
            )
    # Only one username row was made: a locked certificate cannot fill the table.
    rows = gateway_db.run_sync(lambda s: s.execute(text("SELECT key FROM login_attempts")).all())
    assert sorted(row.key for row in rows) == ["cert:c1", "user:u1"]


def test_concurrent_attempts_cannot_slip_past_the_count(gateway_db: Database) -> None:
    throttle = LoginThrottle(gateway_db, Clock())

    async def burst() -> list[object]:
        return await asyncio.gather(
            *(
                throttle.reserve([certificate_key(f"c{i}", LIMIT), username_key("alice", LIMIT)])
                for i in range(20)
            ),
            return_exceptions=True,
        )

    results = asyncio.run(burst())
    assert sum(result is None for result in results) == 3
    assert all(isinstance(result, Throttled) for result in results if result is not None)


def test_old_rows_are_forgotten(gateway_db: Database) -> None:
    clock = Clock()
    throttle = LoginThrottle(gateway_db, clock)
    attempt(throttle)
    clock.now += 61
    asyncio.run(throttle.forget_expired(60))
    count = gateway_db.run_sync(
        lambda s: s.execute(text("SELECT count(*) FROM login_attempts")).scalar()
    )
    assert count == 0
