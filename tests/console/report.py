"""A pytest plugin (named in tests/conftest.py) that prints what the console's tests
measured: each page's server-side render time, and where the screenshots are. Under xdist each
worker hands its figures to the controller, which prints them once."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest

RENDER_TIMES: dict[str, list[float]] = {}  # "GET /route" -> milliseconds, each request
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
    times = {route: list(samples) for route, samples in RENDER_TIMES.items()}
    folders = list(SCREENSHOTS)
    for report in _from_workers:
        for route, samples in report["times"].items():
            times.setdefault(route, []).extend(samples)
        folders += report["screenshots"]
    if not times and not folders:
        return
    write = terminalreporter.write_line
    terminalreporter.section("console")
    if times:
        write("server-side render time per page, ms (request in, first byte out):")
        write(f"  {'route':<40} {'count':>6} {'median':>8} {'max':>8}")
        for route, samples in sorted(times.items()):
            median, slowest = statistics.median(samples), max(samples)
            write(f"  {route:<40} {len(samples):>6} {median:>8.1f} {slowest:>8.1f}")
    for folder in folders:
        write(f"screenshots: {folder}")
