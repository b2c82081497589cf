"""A pytest plugin (named in tests/conftest.py) that prints what the console's tests
measured: each page's server-side render time, and where the screenshots are. Under xdist each
worker hands its figures to the controller, which prints them once."""

from __future__ import annotations

import json
from typing import Any

import pytest

RENDER_TIMES: dict[str, dict[str, float]] = {}  # route -> count, median_ms, max_ms
SCREENSHOTS: list[str] = []  # folders
_KEY = "console_report"
_from_workers: list[dict[str, Any]] = []


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_KEY] = json.dumps({"times": RENDER_TIMES, "screenshots": SCREENSHOTS})


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    sent = getattr(node, "workeroutput", {}).get(_KEY)
    if sent:
        _from_workers.append(json.loads(sent))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    times = dict(RENDER_TIMES)
    folders = list(SCREENSHOTS)
    for report in _from_workers:
        times.update(report["times"])
        folders += report["screenshots"]
    if not times and not folders:
        return
    write = terminalreporter.write_line
    terminalreporter.section("console")
    if times:
        write("server-side render time per page, ms (request in, first byte out):")
        write(f"  {'route':<40} {'count':>6} {'median':>8} {'max':>8}")
        for route, row in sorted(times.items()):
            write(f"  {route:<40} {row['count']:>6} {row['median_ms']:>8} {row['max_ms']:>8}")
    for folder in folders:
        write(f"screenshots: {folder}")
