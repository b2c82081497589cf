"""Database access shared by the gateway and the banks: engines (SQLite tuned for durable
writes, or PostgreSQL by URL), migrations, and running units of work off the event loop.

Every unit of work is a plain function taking a ``Session``; ``Database.transaction`` runs it
in a worker thread inside one explicit transaction, so the asyncio servers never block on I/O.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from server.common.errors import ConfigError
from server.common.settings import REPO_ROOT

T = TypeVar("T")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str) -> Engine:
    """An engine; for SQLite: WAL, synchronous=FULL (a commit is on disk), foreign keys on."""
    if is_sqlite(url):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            folder = Path(path).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot make folder {folder} for database {path}: {exc.strerror or exc}"
                ) from None
        engine = _create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return _create_engine(url, pool_size=8, max_overflow=4, pool_pre_ping=True)


def _create_engine(url: str, **options: Any) -> Engine:
    """``create_engine``; an unknown dialect or a driver not installed stops the start."""
    try:
        return create_engine(url, **options)
    except (ArgumentError, ImportError) as exc:  # NoSuchModuleError is an ArgumentError
        scheme = url.split(":", 1)[0]  # never the whole URL: it may carry a password
        raise ConfigError(f"cannot use database URL {scheme}://...: {exc}") from None


def check_connection(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (OperationalError, DBAPIError) as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ConfigError(
            f"cannot reach database {engine.url.render_as_string()}: {reason}"
        ) from None


def upgrade(url: str, kind: str) -> None:
    """Runs ``alembic upgrade head`` for one database kind ("gateway" or "bank")."""
    from alembic.config import Config

    from alembic import command

    config = Config(str(REPO_ROOT / "alembic.ini"), ini_section=kind)
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    config.attributes["url"] = url
    command.upgrade(config, "head")


class Database:
    """Owns one engine and the worker threads that run units of work against it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite allows one writer: a single thread keeps writers from fighting over the lock.
        workers = 1 if is_sqlite(url) else 8
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="db")

    def run_sync(self, work: Callable[[Session], T], retries: int = 3) -> T:
        """Runs ``work`` in one ORM transaction, retrying races another transaction won."""
        return _retrying(lambda: self._in_session(work), retries)

    def _in_session(self, work: Callable[[Session], T]) -> T:
        with self.sessions.begin() as session:
            return work(session)

    def run_statements(self, work: Callable[[Connection], T], retries: int = 3) -> T:
        """Like ``run_sync`` for work that is only Core statements: no ORM session to pay for
        (the 2PC rounds, which run for every payment)."""
        return _retrying(lambda: self._in_connection(work), retries)

    def _in_connection(self, work: Callable[[Connection], T]) -> T:
        with self.engine.begin() as connection:
            return work(connection)

    async def transaction(self, work: Callable[[Session], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run_sync, work)

    async def statements(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run_statements, work)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()


def _retrying(attempt_once: Callable[[], T], retries: int) -> T:
    for attempt in range(retries + 1):
        try:
            return attempt_once()
        except (IntegrityError, OperationalError) as exc:
            if attempt == retries or not _is_retryable(exc):
                raise
    raise AssertionError("unreachable")


def _is_retryable(exc: Exception) -> bool:
    # Unique violations from concurrent first inserts, serialization failures and deadlocks.
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(exc, IntegrityError) or code in {"40001", "40P01"}
