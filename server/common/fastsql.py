"""Hand-written SQL for the few statements every payment runs (a 2PC round's reads and writes),
sent straight to the database driver inside the unit of work's transaction.

SQLAlchemy Core costs tens of microseconds a statement before the database sees it (building
parameters, expanding IN lists); these statements run several times per round, so they are
written once here, in the SQL both SQLite and PostgreSQL speak, and only the parameter marks,
IN lists and row locks differ per dialect. Everything else stays in SQLAlchemy.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, StatementError

# Written with "?" for a parameter, "{in}" for the marks of an IN list, "{for_update}" (or
# "{for_update_of_a}", for the table aliased "a") where a row lock goes on PostgreSQL: SQLite
# has one writer and no row locks.


def execute(
    connection: Connection, sql: str, parameters: Sequence[Any] = (), in_list: int = 0
) -> list[Any]:
    """Runs SQL with PARAMETERS (positional; an IN list's values among them, IN_LIST of
    them); returns the rows it returns."""
    rendered = _render(sql, connection.dialect.name, in_list)
    cursor = _cursor(connection)
    try:
        cursor.execute(rendered, tuple(parameters))
        return list(cursor.fetchall()) if cursor.description else []
    except connection.dialect.loaded_dbapi.Error as error:
        raise _wrapped(connection, rendered, error) from error
    finally:
        cursor.close()


def execute_many(connection: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    if not rows:
        return
    rendered = _render(sql, connection.dialect.name, 0)
    cursor = _cursor(connection)
    try:
        cursor.executemany(rendered, [tuple(row) for row in rows])
    except connection.dialect.loaded_dbapi.Error as error:
        raise _wrapped(connection, rendered, error) from error
    finally:
        cursor.close()


def _wrapped(connection: Connection, sql: str, error: Exception) -> StatementError:
    """The driver's error as SQLAlchemy would raise it (IntegrityError, OperationalError...),
    so that callers (and the retry of deadlocks and serialization failures) see one kind."""
    return DBAPIError.instance(sql, None, error, connection.dialect.loaded_dbapi.Error)


def _cursor(connection: Connection) -> Any:
    return connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


@functools.lru_cache(maxsize=2048)
def _render(sql: str, dialect: str, in_list: int) -> str:
    marks = ", ".join("?" * in_list) if in_list else ""
    postgres = dialect == "postgresql"
    rendered = (
        sql.replace("{in}", marks)
        .replace("{for_update}", " FOR UPDATE" if postgres else "")
        .replace("{for_update_of_a}", " FOR UPDATE OF a" if postgres else "")
    )
    return rendered.replace("?", "%s") if dialect == "postgresql" else rendered
