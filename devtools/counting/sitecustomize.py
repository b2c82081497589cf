"""Counts, per process, what a payment costs in operations rather than seconds: database
transactions and statements, thread hand-offs, asyncio tasks and futures, log records, JSON
(de)serializations, outbound RPCs. Active only when OPERATION_COUNTS_DIR is set and this folder
is on PYTHONPATH, e.g. for every process of a benchmark run::

    OPERATION_COUNTS_DIR=/tmp/counts PYTHONPATH=devtools/counting python -m devtools.bench

Each process writes its counts as JSON to that folder when it exits; divide by the payments."""

from __future__ import annotations

import atexit
import collections
import json
import os
import sys

COUNTS: collections.Counter[str] = collections.Counter()
_folder = os.environ.get("OPERATION_COUNTS_DIR")


def _wrap(owner: object, name: str, key: str) -> None:
    original = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        COUNTS[key] += 1
        return original(*args, **kwargs)

    setattr(owner, name, counted)


def _install() -> None:
    import asyncio.base_events
    import concurrent.futures
    import logging

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    _wrap(asyncio.base_events.BaseEventLoop, "create_task", "asyncio tasks")
    _wrap(asyncio.base_events.BaseEventLoop, "create_future", "asyncio futures")
    _wrap(concurrent.futures.ThreadPoolExecutor, "submit", "thread hand-offs")
    _wrap(logging.Logger, "makeRecord", "log records")
    _wrap(json, "dumps", "json dumps")
    import grpc.aio._channel

    _wrap(grpc.aio._channel.UnaryUnaryMultiCallable, "__call__", "outbound RPCs")
    _wrap(json, "loads", "json loads")

    from server.common import fastsql  # the round's statements, sent past SQLAlchemy

    _wrap(fastsql, "execute", "db statements")
    _wrap(fastsql, "execute_many", "db statements")

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(*_: object) -> None:
        COUNTS["db statements"] += 1

    @event.listens_for(Engine, "commit")
    def _commit(*_: object) -> None:
        COUNTS["db transactions"] += 1

    def _dump() -> None:
        name = " ".join(sys.argv[1:3]) or sys.argv[0]
        path = os.path.join(_folder or ".", f"{os.getpid()}.json")
        with open(path, "w") as handle:
            json.dump({"process": name, "argv": sys.argv, "counts": COUNTS}, handle)

    atexit.register(_dump)


if _folder:
    _install()
