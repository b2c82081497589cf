"""The login throttle, with an injected clock, on a real (temporary) SQLite database."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from server.common.db import Database
from server.common.errors import Throttled
from server.gateway.throttle import (
    Limit,
    LoginThrottle,
    Reservation,
    ThrottleKey,
    certificate_key,
    identity_key,
)

LIMIT = Limit(max_attempts=3, window=60.0, cooldown=30.0)
GENEROUS = Limit(1000, 60, 30)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def keys(
    user: str = "alice", cert: str = "c1", cert_limit: Limit = GENEROUS, user_limit: Limit = LIMIT
) -> list[ThrottleKey]:
    return [certificate_key(cert, cert_limit), identity_key(f"customer:alpha:{user}", user_limit)]


def attempt(throttle: LoginThrottle, user: str = "alice", cert: str = "c1") -> Reservation:
    return asyncio.run(throttle.reserve(keys(user, cert)))


def allowed(throttle: LoginThrottle, *reserve_keys: ThrottleKey) -> bool:
    try:
        asyncio.run(throttle.reserve(list(reserve_keys)))
    except Throttled:
        return False
    return True


def test_locks_an_identity_after_its_attempts(gateway_db: Database) -> None:
    throttle = LoginThrottle(gateway_db, Clock())
    for _ in range(3):
        attempt(throttle)
    with pytest.raises(Throttled) as refused:
        attempt(throttle)
    assert "this username" in refused.value.message
    attempt(throttle, user="bob")  # another identity is not locked


def test_the_cool_down_opens_no_fresh_window(gateway_db: Database) -> None:
    """The bug: the lock's end started a new window, so "3 per minute" was 3 per cool-down."""
    clock = Clock()
    throttle = LoginThrottle(gateway_db, clock)
    for _ in range(3):
        attempt(throttle)
        clock.now += 1
    with pytest.raises(Throttled) as refused:
        attempt(throttle)  # at 3 s: locked until the window ends, 60 s after the first
    assert refused.value.retry_after == pytest.approx(57.0)
    clock.now += 31  # the cool-down is over, the window is not
    with pytest.raises(Throttled):
        attempt(throttle)
    clock.now = 1_000_000.0 + 60
    attempt(throttle)  # a new window


def test_a_lock_near_the_end_of_a_window_lasts_the_cool_down(gateway_db: Database) -> None:
    clock = Clock()
    throttle = LoginThrottle(gateway_db, clock)
    attempt(throttle)
    clock.now += 50
    attempt(throttle)
    attempt(throttle)
    with pytest.raises(Throttled) as refused:
        attempt(throttle)
    assert refused.value.retry_after == pytest.approx(30.0)
    clock.now += 29
    with pytest.raises(Throttled):
        attempt(throttle)
    clock.now += 2
    attempt(throttle)


@pytest.mark.parametrize("which", ["identity", "certificate"])
def test_at_most_the_limit_in_each_window_over_several_windows(
    gateway_db: Database, which: str
) -> None:
    """A guess every second for five windows: three checked in each window, fifteen in all."""
    clock = Clock()
    throttle = LoginThrottle(gateway_db, clock)
    start = clock.now
    checked: list[float] = []
    for second in range(5 * 60):
        clock.now = start + second
        # The same identity every time; or, for the certificate, a fresh name every time.
        if which == "identity":
            guess = keys("alice")
        else:
            guess = keys(f"name-{second}", cert_limit=LIMIT, user_limit=GENEROUS)
        if allowed(throttle, *guess):
            checked.append(clock.now - start)
    per_window = [sum(1 for t in checked if w * 60 <= t < (w + 1) * 60) for w in range(5)]
    assert per_window == [3, 3, 3, 3, 3], checked


def test_attempts_outside_the_window_are_forgotten(gateway_db: Database) -> None:
    clock = Clock()
    throttle = LoginThrottle(gateway_db, clock)
    for _ in range(3):
        attempt(throttle)
        clock.now += 25
    # The first attempt is more than a window old: a new window has begun.
    attempt(throttle)
    attempt(throttle)


def test_success_forgets_the_identity_and_gives_the_certificate_back_only_its_attempt(
    gateway_db: Database,
) -> None:
    """A right password must not wipe what the certificate failed at other names: one that
    logs in to its own account between guesses is locked all the same."""
    throttle = LoginThrottle(gateway_db, Clock())
    cert_limit = Limit(2, 60, 30)

    def guess(user: str) -> Reservation:
        return asyncio.run(throttle.reserve(keys(user, cert_limit=cert_limit)))

    guess("bob")  # wrong: the certificate holds one failure
    own = guess("mallory")
    asyncio.run(throttle.succeeded(own))  # its own account: the attempt is given back
    guess("carol")  # wrong: two failures
    with pytest.raises(Throttled) as refused:
        guess("dave")
    assert "client certificate" in refused.value.message
    # The identity that logged in has nothing counted.
    for _ in range(3):
        asyncio.run(throttle.reserve(keys("mallory", cert="c2")))


def test_a_check_that_could_not_be_made_costs_nothing(gateway_db: Database) -> None:
    """A bank that does not answer is not a wrong password: ten tries while it is down leave
    both counts where they were."""
    throttle = LoginThrottle(gateway_db, Clock())
    cert_limit = Limit(3, 60, 30)
    for _ in range(10):
        reservation = asyncio.run(throttle.reserve(keys(cert_limit=cert_limit)))
        asyncio.run(throttle.give_back(reservation))
    for _ in range(3):
        asyncio.run(throttle.reserve(keys(cert_limit=cert_limit)))


def test_a_give_back_from_an_earlier_window_changes_nothing(gateway_db: Database) -> None:
    clock = Clock()
    throttle = LoginThrottle(gateway_db, clock)
    late = attempt(throttle)
    clock.now += 61
    for _ in range(3):
        attempt(throttle)
    asyncio.run(throttle.give_back(late))  # owed to a window that has ended
    with pytest.raises(Throttled):
        attempt(throttle)


def test_the_rank_is_the_certificate_s_attempts_in_its_window(gateway_db: Database) -> None:
    throttle = LoginThrottle(gateway_db, Clock())
    assert [attempt(throttle, f"u{i}").rank for i in range(3)] == [1, 2, 3]
    assert attempt(throttle, "u9", cert="c2").rank == 1


def test_a_locked_certificate_counts_no_identity(gateway_db: Database) -> None:
    throttle = LoginThrottle(gateway_db, Clock())
    cert_limit = Limit(1, 60, 30)
    asyncio.run(throttle.reserve(keys("u1", cert_limit=cert_limit)))
    for name in ("u2", "u3", "u4"):
        with pytest.raises(Throttled):
            asyncio.run(throttle.reserve(keys(name, cert_limit=cert_limit)))
    # Only one identity row was made: a locked certificate cannot fill the table.
    rows = gateway_db.run_sync(lambda s: s.execute(text("SELECT key FROM login_attempts")).all())
    assert sorted(row.key for row in rows) == ["cert:c1", "user:customer:alpha:u1"]


def test_concurrent_attempts_cannot_slip_past_the_count(gateway_db: Database) -> None:
    throttle = LoginThrottle(gateway_db, Clock())

    async def burst() -> list[object]:
        return await asyncio.gather(
            *(throttle.reserve(keys(cert=f"c{i}", cert_limit=LIMIT)) for i in range(20)),
            return_exceptions=True,
        )

    results = asyncio.run(burst())
    assert sum(isinstance(result, Reservation) for result in results) == 3
    assert all(
        isinstance(result, Throttled) for result in results if not isinstance(result, Reservation)
    )


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
