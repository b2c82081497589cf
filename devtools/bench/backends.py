"""The databases of one run: SQLite files in the cluster's folder, or fresh PostgreSQL
databases (``minipay_bench_<random>_gateway``, ``..._alpha``...) created on the server given
and dropped afterwards; and what the report says about their durability, as the server
states it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from devtools.bench.config import BenchError, Setup
from devtools.cluster import GATEWAY
from devtools.scratch import fresh_postgres_databases, server_url
from server.common.errors import ConfigError

# What server/common/db.py opens every SQLite database with.
SQLITE = "SQLite WAL, synchronous=FULL"


@contextlib.contextmanager
def databases(setup: Setup, url: str, banks: Sequence[str]) -> Iterator[dict[str, str]]:
    """The ``database_urls`` of a cluster for SETUP: none for SQLite (files in its folder),
    fresh PostgreSQL databases on the server at URL otherwise, dropped on exit."""
    if setup.backend == "sqlite":
        yield {}
        return
    if not url:
        raise BenchError(f"configuration {setup.label} needs --database-url")
    try:
        with fresh_postgres_databases(url, [GATEWAY, *banks]) as urls:
            yield urls
    except ConfigError as error:
        raise BenchError(str(error)) from None


def describe(setup: Setup, url: str) -> str:
    """The backend and its durability, e.g. ``PostgreSQL 15.20 (synchronous_commit=on,
    fsync=on)``; asked of the server itself, since its configuration decides."""
    if setup.backend == "sqlite":
        return SQLITE
    engine = create_engine(server_url(url, "postgres"))
    try:
        with engine.connect() as connection:
            version = str(connection.scalar(text("SHOW server_version"))).split()[0]
            commit = connection.scalar(text("SHOW synchronous_commit"))
            fsync = connection.scalar(text("SHOW fsync"))
    except DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise BenchError(f"cannot use the PostgreSQL server: {reason}") from None
    finally:
        engine.dispose()
    return f"PostgreSQL {version} (synchronous_commit={commit}, fsync={fsync})"
