"""The classic trap of an ordered stream, reproduced on the real database: two transactions
take sequences 7 and 8, the one with 8 tries to commit first, and a reader that saw 8 would
move its cursor past 7 for ever. With the journal's single sequencer the second transaction
cannot take its number until the first has committed: a reader never sees 8 without 7."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from server.common.db import upgrade
from server.gateway import events, journal
from tests.helpers import postgres_available, postgres_databases

pytestmark = pytest.mark.skipif(not postgres_available(), reason="the race needs PostgreSQL")


@pytest.fixture
def engine() -> Iterator[Engine]:
    with postgres_databases(["events_order"]) as urls:
        made = create_engine(urls["events_order"])
        upgrade(made, "gateway")
        yield made
        made.dispose()


def event(n: int) -> events.NewEvent:
    return events.NewEvent(events.EventType.USER_CREATED, time.time(), {"n": n})


def visible(engine: Engine, after: int = 0) -> list[int]:
    with engine.begin() as connection:
        page = events.read(connection, events.Query(after, 100))
    return [e.sequence for e in page.events]


def test_a_later_sequence_is_never_visible_before_an_earlier_one(engine: Engine) -> None:
    with engine.begin() as connection:
        journal.write(connection, [event(n) for n in range(6)])  # 1..6 are there
    slow = engine.connect()
    slow_txn = slow.begin()
    journal.write(slow, [event(7)])  # takes 7, and holds the sequencer until it commits
    fast_took: list[float] = []

    def fast_writer() -> None:
        with engine.begin() as connection:
            journal.write(connection, [event(8)])  # waits for 7's transaction
            fast_took.append(time.monotonic())

    writer = threading.Thread(target=fast_writer)
    writer.start()
    time.sleep(1.0)
    # The second transaction is still waiting: nothing after 6 is visible, 8 least of all.
    assert not fast_took, "the second transaction took a sequence while the first was open"
    assert visible(engine) == [1, 2, 3, 4, 5, 6]
    committed_at = time.monotonic()
    slow_txn.commit()
    writer.join(10)
    slow.close()
    assert fast_took and fast_took[0] >= committed_at
    assert visible(engine) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert visible(engine, 6) == [7, 8]


def test_a_reader_racing_many_writers_never_skips(engine: Engine) -> None:
    """Eight writers commit events as fast as they can while a reader follows the stream by
    its cursor: what it read is every sequence, once, in order."""
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            with engine.begin() as connection:
                journal.write(connection, [event(0), event(1)])

    writers = [threading.Thread(target=write) for _ in range(8)]
    for thread in writers:
        thread.start()
    seen: list[int] = []
    cursor = 0
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            with engine.begin() as connection:
                page = events.read(connection, events.Query(cursor, 50))
            seen += [e.sequence for e in page.events]
            cursor = page.next_after
    finally:
        stop.set()
        for thread in writers:
            thread.join()
    with engine.begin() as connection:
        page = events.read(connection, events.Query(cursor, 100_000))
    seen += [e.sequence for e in page.events]
    assert seen == list(range(1, len(seen) + 1))
    assert len(seen) > 50
