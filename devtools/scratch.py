"""What a test or a dev tool borrows for a while and gives back: a free loopback port (and
whether a port is free), and fresh PostgreSQL databases, dropped afterwards. The one copy of
each for ``tests/``, ``devtools/cluster.py`` and the benchmark.

SQLAlchemy is imported where a database is made: ``make up`` on SQLite never loads it here."""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import Iterator, Sequence

from server.common.errors import ConfigError

LOOPBACK = "127.0.0.1"

# -- ports -----------------------------------------------------------------------------------


def _listen_like_a_server(port: int, host: str = LOOPBACK) -> socket.socket:
    """A socket listening on HOST:PORT, bound the way the servers' gRPC sockets are.

    gRPC sets SO_REUSEADDR on listening sockets (and the servers turn SO_REUSEPORT off), so
    a connection left in TIME_WAIT does not stop a server, while a socket another process
    listens on does. Binding the same way, then listening, sees exactly that.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could not listen on HOST:PORT now (another process listens on it)."""
    try:
        _listen_like_a_server(port, host).close()
    except (OSError, OverflowError):  # OverflowError: not a port number at all
        return True
    return False


def free_port() -> int:
    """A loopback port that a server can listen on, where nothing listens now (by the same
    test as ``port_in_use``)."""
    with _listen_like_a_server(0) as sock:
        return int(sock.getsockname()[1])


# -- PostgreSQL ------------------------------------------------------------------------------


def server_url(url: str, database: str) -> str:
    """URL, a PostgreSQL server's (with or without a database in it), naming DATABASE."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def postgres_reachable(url: str) -> bool:
    """Whether a PostgreSQL server answers at URL (empty: no server given)."""
    if not url:
        return False
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


@contextlib.contextmanager
def fresh_postgres_databases(
    url: str, names: Sequence[str], prefix: str = "", options: str = ""
) -> Iterator[dict[str, str]]:
    """A new, empty database per name on the PostgreSQL server at URL
    (``minipay_bench_<random>_NAME`` unless PREFIX is given; OPTIONS after CREATE DATABASE's
    name, e.g. a locale), dropped on exit, even with someone still connected; their URLs."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    prefix = prefix or f"minipay_bench_{secrets.token_hex(4)}"
    engine = create_engine(server_url(url, "postgres"), isolation_level="AUTOCOMMIT")
    urls: dict[str, str] = {}
    try:
        try:
            with engine.connect() as connection:
                for name in names:
                    database = f"{prefix}_{name}".replace("-", "_")
                    connection.execute(text(f'CREATE DATABASE "{database}" {options}'))
                    urls[name] = server_url(url, database)
        except DBAPIError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise ConfigError(f"cannot use the PostgreSQL server: {reason}") from None
        yield urls
    finally:
        with engine.connect() as connection:
            for database_url in urls.values():
                database = database_url.rsplit("/", 1)[1]
                connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        engine.dispose()
