"""What reaches a log: one line per record whatever a field holds (every line break
str.splitlines knows, in both formats), and a bounded number of records for a peer's refused
calls, with every one of them counted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import pytest

from server.common.log_sampling import MAX_PEERS, OTHER_PEERS, RefusalSampler
from server.common.logs import LINE_BREAKS, JsonFormatter, TextFormatter


def test_the_line_break_list_is_the_one_str_splitlines_uses() -> None:
    every_character = "".join(
        chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF
    )
    breaks = {line[-1] for line in (every_character + "\n").splitlines(keepends=True)}
    assert breaks == set(LINE_BREAKS)


@pytest.mark.parametrize("formatter", [TextFormatter("gateway"), JsonFormatter("gateway")])
@pytest.mark.parametrize("line_break", [*LINE_BREAKS, "\r\n", "\x1b[2J", "\x9b"])
def test_no_field_starts_a_new_line(formatter: logging.Formatter, line_break: str) -> None:
    record = logging.LogRecord("minipay.calls", logging.INFO, "", 0, "call", None, None)
    forged = f"mallory{line_break}2026-01-01 00:00:00,000 INFO gateway call username=admin"
    record.fields = {"username": forged, "error": forged}
    [line] = formatter.format(record).splitlines()
    assert line_break not in line
    assert "mallory" in line


class Timers:
    """The event loop's timer, by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.due: list[tuple[float, Callable[[], None]]] = []

    def schedule(self, delay: float, callback: Callable[[], None]) -> None:
        self.due.append((self.now + delay, callback))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for item in [d for d in self.due if d[0] <= self.now]:
            self.due.remove(item)
            item[1]()


def sampler(limit: int = 3, interval: float = 10.0) -> tuple[RefusalSampler, Timers, list[Any]]:
    timers, summaries = Timers(), []
    made = RefusalSampler(
        lambda peer, fields: summaries.append((peer, fields)),
        limit=limit,
        interval=interval,
        clock=lambda: timers.now,
        schedule=timers.schedule,
    )
    return made, timers, summaries


def test_a_flood_from_one_peer_is_logged_in_part_and_counted_in_full() -> None:
    refusals, timers, summaries = sampler()
    logged = [refusals.admit("10.0.0.1 mallory", "/m/Login", "UNAUTHENTICATED") for _ in range(50)]
    assert logged == [True] * 3 + [False] * 47
    assert refusals.admit("10.0.0.2 alice", "/m/Login", "UNAUTHENTICATED"), "others still logged"
    assert summaries == []
    timers.advance(10.0)
    [(peer, summary)] = summaries
    assert peer == "10.0.0.1 mallory"
    assert summary == {"count": 47, "calls": {"/m/Login UNAUTHENTICATED": 47}, "seconds": 10.0}
    # A new interval starts afresh.
    assert refusals.admit("10.0.0.1 mallory", "/m/Login", "UNAUTHENTICATED")


def test_each_interval_has_its_own_summary_and_none_is_written_twice() -> None:
    refusals, timers, summaries = sampler(limit=1)
    for _ in range(2):
        for code in ("INVALID_ARGUMENT", "NOT_FOUND", "NOT_FOUND"):
            refusals.admit("peer", "/m/Pay", code)
        timers.advance(10.0)
    assert [summary["calls"] for _, summary in summaries] == [
        {"/m/Pay NOT_FOUND": 2},
        {"/m/Pay NOT_FOUND": 2},
    ]
    # A call after the interval, before its timer ran: the call closes it, the timer does not
    # close it again.
    refusals.admit("peer", "/m/Pay", "NOT_FOUND")
    refusals.admit("peer", "/m/Pay", "NOT_FOUND")
    timers.now += 10.0
    assert refusals.admit("peer", "/m/Pay", "NOT_FOUND")
    timers.advance(0.0)
    assert [summary["count"] for _, summary in summaries] == [2, 2, 1]


def test_too_many_peers_at_once_share_one_window() -> None:
    refusals, timers, summaries = sampler(limit=1)
    for number in range(MAX_PEERS):
        assert refusals.admit(f"peer-{number}", "/m", "NOT_FOUND")
    assert refusals.admit("one more", "/m", "NOT_FOUND")  # the first of the shared window
    assert not refusals.admit("and another", "/m", "NOT_FOUND")
    timers.advance(10.0)
    assert summaries == [(OTHER_PEERS, {"count": 1, "calls": {"/m NOT_FOUND": 1}, "seconds": 10.0})]
