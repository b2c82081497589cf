"""Database access shared by the gateway and the banks: opening a database (engine, a check
that it answers, the lock that keeps a second server off it, migrations) and running units of
work off the event loop.

Every unit of work is a plain function taking a ``Session`` (ORM) or a ``Connection`` (Core
statements); ``Database.transaction`` and ``Database.statements`` run it in a worker thread
inside one explicit transaction, so the asyncio servers never block on I/O.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Float, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from server.common.errors import ConfigError
from server.common.settings import REPO_ROOT

T = TypeVar("T")
KINDS = ("gateway", "bank")
# Session-level advisory locks (PostgreSQL) that keep a second bank process off a bank's
# database, and serialize migrations of one database when several processes start at once.
_PROCESS_LOCK = {"bank": 7_004_001}
_MIGRATION_LOCK = 7_004_002


class db_now(FunctionElement[float]):
    """The database's clock, in seconds since the epoch: what leases are measured in, so that
    replicas whose clocks disagree still agree on who holds a lease."""

    type = Float()
    inherit_cache = True


@compiles(db_now, "postgresql")
def _db_now_postgresql(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXTRACT(EPOCH FROM clock_timestamp())::float8"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


def per_dialect(build: Callable[[ModuleType], Executable]) -> dict[str, Executable]:
    """A statement built once for each SQL dialect the servers run on, keyed by its name:
    an upsert or an insert-or-nothing is written in the same words but imported from the
    dialect."""
    return {"sqlite": build(sqlite), "postgresql": build(postgresql)}


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_path(url: str) -> Path | None:
    path = url.split("///", 1)[-1]
    return Path(path) if is_sqlite(url) and path and path != ":memory:" else None


def make_engine(url: str) -> Engine:
    """An engine; for SQLite: WAL, synchronous=FULL (a commit is on disk), foreign keys on."""
    path = sqlite_path(url)
    if is_sqlite(url):
        if path is not None:
            _make_private_folder(path.parent)
        engine = _create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            # 64 MiB of pages per connection (the default is 2 MiB): with a day's payments
            # stored, a round's inserts into the random-keyed indexes stay in memory.
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.close()

        return engine
    # A process paused in the middle of a transaction (SIGSTOP) must not hold its row locks
    # for ever: PostgreSQL ends such a session, and the replicas that took over go on.
    return _create_engine(
        url,
        pool_size=8,
        max_overflow=4,
        pool_pre_ping=True,
        connect_args={"options": "-c idle_in_transaction_session_timeout=5000"},
    )


def _make_private_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(
            f"cannot make folder {folder} for the database: {exc.strerror or exc}"
        ) from None


def _create_engine(url: str, **options: Any) -> Engine:
    """``create_engine``; an unknown dialect or a driver not installed stops the start."""
    try:
        return create_engine(url, **options)
    except (ArgumentError, ImportError) as exc:  # NoSuchModuleError is an ArgumentError
        scheme = url.split(":", 1)[0]  # never the whole URL: it may carry a password
        raise ConfigError(f"cannot use database URL {scheme}://...: {exc}") from None


def _unreachable(engine: Engine, exc: DBAPIError) -> ConfigError:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    where = engine.url.render_as_string(hide_password=True)
    return ConfigError(f"cannot reach database {where}: {reason}")


def check_connection(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as exc:
        raise _unreachable(engine, exc) from None


def upgrade(engine: Engine, kind: str) -> None:
    """``alembic upgrade head`` for one database kind; concurrent starts take turns."""
    from alembic.config import Config

    from alembic import command

    config = Config(str(REPO_ROOT / "alembic.ini"), ini_section=kind)
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class ProcessLock:
    """Keeps a second server process off a database: an exclusive lock on a file beside a
    SQLite database, or a session advisory lock on PostgreSQL. Held until ``release``."""

    def __init__(self, engine: Engine, kind: str) -> None:
        self._file: int | None = None
        self._connection: Connection | None = None
        path = sqlite_path(str(engine.url))
        if path is not None:
            self._lock_file(path.with_name(path.name + ".lock"), path)
        elif engine.dialect.name == "postgresql" and kind in _PROCESS_LOCK:
            self._lock_postgres(engine, kind)

    def _lock_file(self, lock_path: Path, database: Path) -> None:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"database {database} is in use by another process (pid {holder}); "
                "stop it first, or give this one its own data folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._file = fd

    def _lock_postgres(self, engine: Engine, kind: str) -> None:
        connection = engine.connect()
        taken = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": _PROCESS_LOCK[kind]}
        ).scalar()
        connection.commit()
        if not taken:
            connection.close()
            where = engine.url.render_as_string(hide_password=True)
            raise ConfigError(f"database {where} is in use by another {kind} process")
        self._connection = connection

    def release(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None
        if self._connection is not None:
            with contextlib.suppress(DBAPIError):
                self._connection.close()
            self._connection = None


class Database:
    """Owns one engine and the worker threads that run units of work against it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.lock: ProcessLock | None = None
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
        if self.lock is not None:
            self.lock.release()
        self.engine.dispose()


def open_database(url: str, kind: str, *, exclusive: bool = True) -> Database:
    """A database ready for a server: it answers, no other server process of this kind holds
    it (``exclusive``), and its schema is migrated. Raises ConfigError otherwise."""
    assert kind in KINDS, kind
    database = Database(url)
    try:
        check_connection(database.engine)
        if exclusive:
            database.lock = ProcessLock(database.engine, kind)
        upgrade(database.engine, kind)
        _make_files_private(url)
    except DBAPIError as exc:
        database.close()
        raise _unreachable(database.engine, exc) from None
    except BaseException:
        database.close()
        raise
    return database


def _make_files_private(url: str) -> None:
    """The database and its WAL files are for their owner's eyes only."""
    path = sqlite_path(url)
    if path is None:
        return
    for suffix in ("", "-wal", "-shm", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path.with_name(path.name + suffix), 0o600)


@contextlib.contextmanager
def connection(url: str) -> Iterator[Connection]:
    """A short-lived connection for tools that read a database directly."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


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
