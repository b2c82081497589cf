"""The system at a glance (Admin/GetOverview), the gateway's part from its database: the
replicas and their leases, the payments still open, and how many were decided in each
10-second bucket of the last five minutes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from server.common.db import db_now
from server.gateway.payment_state import DECIDED_COMMIT_STATES, OPEN_STATES

BUCKET_SECONDS = 10
WINDOW_SECONDS = 300
# Payments decided in the window were created at most this long before it (their deadline;
# one decided later, by a recovery, is left out of the counts): the created_at index reads
# the window's payments only.
CREATED_SLACK = 600.0


@dataclass(frozen=True)
class ReplicaRow:
    name: str
    live: bool
    started_at: float
    lease_expires_at: float


@dataclass(frozen=True)
class OpenPayments:
    open: int
    oldest: float | None
    undecided: int


@dataclass(frozen=True)
class Bucket:
    start: float
    committed: int
    aborted: int


def replicas(connection: Connection) -> list[ReplicaRow]:
    """Every replica, live when its lease is current in the database's clock."""
    clock = str(db_now().compile(dialect=connection.dialect))
    rows = connection.execute(
        text(
            f"SELECT name, lease_expires_at > {clock}, started_at, lease_expires_at "
            "FROM replicas ORDER BY name"
        )
    )
    return [ReplicaRow(row[0], bool(row[1]), row[2], row[3]) for row in rows]


def open_payments(connection: Connection) -> OpenPayments:
    """Payments recorded and not finished (the state index reads only those)."""
    states = ", ".join(f"'{state.value}'" for state in OPEN_STATES)
    count, oldest, undecided = connection.execute(
        text(
            "SELECT COUNT(*), MIN(created_at), "
            "COALESCE(SUM(CASE WHEN state = 'PREPARING' THEN 1 ELSE 0 END), 0) "
            f"FROM payments WHERE state IN ({states})"
        )
    ).one()
    return OpenPayments(int(count), oldest, int(undecided))


def throughput(connection: Connection, now: float) -> list[Bucket]:
    """Payments decided in each BUCKET_SECONDS of the last WINDOW_SECONDS, oldest first."""
    start = (now // BUCKET_SECONDS) * BUCKET_SECONDS - WINDOW_SECONDS + BUCKET_SECONDS
    count = WINDOW_SECONDS // BUCKET_SECONDS
    if connection.dialect.name == "postgresql":
        bucket = "CAST(FLOOR((decided_at - :start) / :size) AS INTEGER)"
    else:
        bucket = "CAST((decided_at - :start) / :size AS INTEGER)"
    committed = ", ".join(f"'{state.value}'" for state in DECIDED_COMMIT_STATES)
    rows = connection.execute(
        text(
            f"SELECT {bucket} AS bucket, "
            f"SUM(CASE WHEN state IN ({committed}) THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN state IN ({committed}) THEN 0 ELSE 1 END) "
            "FROM payments WHERE created_at >= :created_from AND decided_at >= :start "
            "GROUP BY bucket"
        ),
        {"start": start, "size": float(BUCKET_SECONDS), "created_from": start - CREATED_SLACK},
    )
    counts = {int(row[0]): (int(row[1]), int(row[2])) for row in rows}
    return [Bucket(start + i * BUCKET_SECONDS, *counts.get(i, (0, 0))) for i in range(count)]
