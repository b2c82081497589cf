"""Revocations across replicas: each reload reads only what is new, late commits are not
missed, expired revocations leave memory, and session rules belong to an identity (a customer
at one bank), never to a bare name."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from server.common.db import Database
from server.common.principal import Claims, identity
from server.gateway.revocations import OVERLAP, Revocations

NOW = 2_000_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def claims(jti: str, subject: str = "sam", bank: str = "alpha", role: str = "customer") -> Claims:
    return Claims(subject, role, bank, "A-1", jti, issued_at=NOW - 10, expires_at=int(NOW) + 900)


def write_revoked(db: Database, count: int, seconds_ago: float, prefix: str = "old") -> None:
    """COUNT revocations written SECONDS_AGO by the database's clock, by some other replica."""
    db.run_sync(
        lambda s: s.execute(
            text(
                "INSERT INTO revoked_tokens (jti, expires_at, revoked_at) VALUES "
                "(:jti, :exp, ((julianday('now') - 2440587.5) * 86400.0) - :ago)"
            ),
            [{"jti": f"{prefix}-{i}", "exp": NOW + 900, "ago": seconds_ago} for i in range(count)],
        )
    )


def test_a_reload_reads_only_what_is_new(gateway_db: Database) -> None:
    here, there = Revocations(gateway_db, Clock()), Revocations(gateway_db, Clock())
    write_revoked(gateway_db, 500, seconds_ago=3600)  # a busy day of logouts
    assert asyncio.run(here.refresh()) == 500  # the first reload reads everything
    asyncio.run(there.revoke(claims("new-logout")))
    assert asyncio.run(here.refresh()) == 1
    assert here.refusal(claims("new-logout")) is not None
    assert here.refusal(claims("old-7")) is not None


def test_a_revocation_committed_late_is_not_missed(gateway_db: Database) -> None:
    """Written (by the database's clock) before the last reload began, committed after it."""
    here = Revocations(gateway_db, Clock())
    asyncio.run(here.refresh())
    write_revoked(gateway_db, 1, seconds_ago=OVERLAP / 2, prefix="late")
    asyncio.run(here.refresh())
    assert here.refusal(claims("late-0")) is not None


def test_expired_revocations_leave_memory(gateway_db: Database) -> None:
    clock = Clock()
    revocations = Revocations(gateway_db, clock)
    for number in range(3):
        asyncio.run(revocations.revoke(claims(f"t{number}")))
    assert revocations.held == 3
    clock.now += 901  # past every one's expiry: the tokens are refused for that alone
    asyncio.run(revocations.refresh())
    assert revocations.held == 0


def test_rules_belong_to_an_identity_not_a_name(gateway_db: Database) -> None:
    """Two customers called sam (at two banks, opened before names were unique), and an admin
    sam: disabling the one at beta cuts only the one at beta, here and at another replica."""
    clock = Clock()
    here, there = Revocations(gateway_db, clock), Revocations(gateway_db, clock)
    asyncio.run(there.refresh())
    clock.now += 1
    asyncio.run(here.set_disabled(identity("customer", "beta", "Sam"), True))
    asyncio.run(there.refresh())
    for replica in (here, there):
        assert replica.refusal(claims("a", bank="beta")) is not None
        assert replica.refusal(claims("b", bank="alpha")) is None
        assert replica.refusal(claims("c", bank="", role="admin")) is None
        assert replica.is_disabled(identity("customer", "beta", "sam"))
        assert not replica.is_disabled(identity("customer", "alpha", "sam"))
    # Enabled again: the change reaches the other replica too, and old tokens stay cut.
    clock.now += 1
    asyncio.run(here.set_disabled(identity("customer", "beta", "sam"), False))
    asyncio.run(there.refresh())
    assert not there.is_disabled(identity("customer", "beta", "sam"))
    refusal = there.refusal(claims("d", bank="beta"))
    assert refusal is not None and "ended by an admin" in refusal.message
