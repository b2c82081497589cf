"""A replica's lease: renewed three times over its length, and never once it has lapsed (a
paused replica that wakes up takes a new fencing token instead)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from server.common.db import Database
from server.gateway.replicas import Replica


def lease_left(db: Database, name: str) -> float:
    """Seconds left of NAME's lease, by the database's clock."""
    return float(
        db.run_sync(
            lambda s: s.execute(
                text(
                    "SELECT lease_expires_at - ((julianday('now') - 2440587.5) * 86400.0) "
                    "FROM replicas WHERE name = :name"
                ),
                {"name": name},
            ).scalar_one()
        )
    )


def lapse(db: Database, name: str) -> None:
    """NAME's lease ended a second ago: what a pause longer than the lease leaves."""
    db.run_sync(
        lambda s: s.execute(
            text(
                "UPDATE replicas SET lease_expires_at = "
                "((julianday('now') - 2440587.5) * 86400.0) - 1 WHERE name = :name"
            ),
            {"name": name},
        )
    )


class Stop(Exception):
    pass


def test_a_lease_is_renewed_three_times_over_its_length(gateway_db: Database) -> None:
    """Each wait is a third of the lease, and each renewal puts the whole lease ahead again:
    a renewal that comes late, or fails once, still finds the lease live."""
    waits: list[float] = []
    left: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if replica.token:
            left.append(lease_left(gateway_db, "r1"))
        if len(waits) > 6:
            raise Stop

    replica = Replica(gateway_db, "r1", lease=30.0, sleep=sleep)

    async def run() -> None:
        await replica.join(alone=True)
        await replica.run_forever()

    with pytest.raises(Stop):
        asyncio.run(run())
    assert waits == [10.0] * 7
    assert all(29.0 < seconds <= 30.0 for seconds in left), left


def test_a_lapsed_lease_is_not_renewed(gateway_db: Database) -> None:
    replica = Replica(gateway_db, "r1", lease=30.0)
    asyncio.run(replica.join(alone=True))
    first = replica.token
    assert asyncio.run(replica.renew())
    lapse(gateway_db, "r1")
    assert not asyncio.run(replica.renew()), "a lapsed lease was renewed"
    assert lease_left(gateway_db, "r1") < 0  # and it stays lapsed
    # The replica takes a new token: writes with the old one are refused by the database.
    asyncio.run(replica.join(alone=True))
    assert replica.token > first
