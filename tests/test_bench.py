"""The benchmark (``make bench``) in small: the echo baseline, a tiny run on SQLite that
prints its ratio to the echo, a preload that keeps the books balanced and whose keys
replay, replicas on PostgreSQL, the failover timeline, the plot, the one-line errors, and a
run in PayBatch calls."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devtools.bench import echo
from devtools.bench.__main__ import main
from devtools.bench.plot import plot
from devtools.bench.run import ensure_certificates
from devtools.bench.summary import Spread, Summary
from devtools.cluster import ROOT
from tests.helpers import POSTGRES_URL, postgres_available

TINY = ["--payments", "50", "--warmup", "5", "--concurrency", "4", "--echo-seconds", "0.5"]
needs_postgres = pytest.mark.skipif(
    not postgres_available(), reason="no PostgreSQL server: set MINIPAY_TEST_POSTGRES_URL"
)


def bench(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtools.bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bench_json(*args: str) -> dict[str, Any]:
    done = bench(*args, "--json", timeout=180)  # a loaded machine (the suite's other worker)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_echo_baseline_measures_a_positive_rate() -> None:
    ensure_certificates()
    result = echo.measure(seconds=1.0, concurrency=4)
    assert result.rpc_per_s > 0
    assert result.calls > 0
    assert 0.9 < result.seconds < 3


def test_a_tiny_run_in_batches_pays_with_pay_batch(capsys: pytest.CaptureFixture[str]) -> None:
    """--batch 10: the same load in PayBatch calls of 10 (the last one shorter), the books
    checked as for single payments, latencies per call. (What the features cost is the
    tiny run's on SQLite, below: not again here.)"""
    report = bench_json(*TINY, "--payments", "55", "--batch", "10", "--no-costs")
    [run] = report["runs"]
    assert (run["batch"], run["payments"], run["committed"]) == (10, 55, 55), run
    assert run["conserved"] and run["balances_match"] and not run["problems"], run
    assert run["payments_x_echo"] > 0
    with pytest.raises(SystemExit) as exited:
        main([*TINY, "--batch", "1001"])
    assert exited.value.code == 2
    assert "at most 1000" in capsys.readouterr().err


def test_tiny_run_on_sqlite_prints_its_ratio_to_the_echo_and_its_costs() -> None:
    done = bench(*TINY, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "x echo)" in done.stdout
    assert "SQLite WAL, synchronous=FULL" in done.stdout
    assert "cpu ms/pay" in done.stdout
    # The same configuration again without the trace, and without the rate limit.
    assert "== what the always-on features cost" in done.stdout
    for feature in ("trace", "rate limit", "journal"):
        assert f"   {feature} " in done.stdout
    assert "of the throughput" in done.stdout
    # A watcher on the event stream saw the payments' events, and how late.
    assert re.search(r"events seen on gateway\S*: \d+, delay after the decision p50", done.stderr)


def test_preload_keeps_the_books_balanced_and_its_keys_replay() -> None:
    report = bench_json(*TINY, "--preload", "3000", "--probes", "20")
    run = report["runs"][0]
    assert run["preloaded"] == 3000
    assert run["problems"] == []
    assert run["conserved"] and run["balances_match"] and run["ledgers_match"]
    probes = run["probes"]
    assert probes["replays"] == 20
    assert probes["replays_wrong"] == 0  # each answered its preloaded payment, replayed
    assert probes["history_page_rows"] == 20
    assert probes["history_ms"]["p50"] > 0


@needs_postgres
def test_two_replicas_on_postgres_complete() -> None:
    report = bench_json(*TINY, "--gateways", "2", "--database-url", POSTGRES_URL, "--no-costs")
    run = report["runs"][0]
    assert run["config"] == "postgres:2"
    assert run["problems"] == []
    assert "synchronous_commit=" in run["backend"]
    shares = run["cpu_ms_per_payment"]
    assert {"gateways", "gateway", "gateway-2", "banks"} <= shares.keys()


@needs_postgres
def test_failover_keeps_paying_and_finishes_what_was_in_doubt() -> None:
    report = bench_json(
        *TINY,
        "--failover",
        "--database-url",
        POSTGRES_URL,
        "--failover-seconds",
        "5",
        "--kill-at",
        "2",
    )
    failover = report["failover"][0]
    assert failover["problems"] == []
    assert failover["conserved"]
    assert failover["in_doubt_cleared_after_s"] is not None
    after_kill = [row["committed"] for row in failover["timeline"][3:5]]
    assert sum(after_kill) > 0  # the survivor kept committing


def test_plot_writes_a_png(tmp_path: Path) -> None:
    def made_up(config: str, clients: int, rate: float) -> Summary:
        figures = {
            "committed/s": Spread(rate, rate * 0.9, rate * 1.1),
            "x echo": Spread(rate / 4000, rate / 4400, rate / 3600),
            "p50 ms": Spread(clients * 1.5, clients, clients * 2.0),
            "p99 ms": Spread(clients * 4.0, clients * 3.0, clients * 5.0),
        }
        return Summary(config, clients, 3, figures, 0)

    summaries = [
        made_up(config, clients, rate * clients**0.5)
        for config, rate in (("sqlite:1", 100.0), ("postgres:2", 80.0))
        for clients in (1, 2, 4, 8, 16, 32, 64)
    ]
    path = plot(summaries, tmp_path / "plots" / "sweep.png", "made-up results")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000


@pytest.mark.parametrize(
    "args",
    [
        ["--gateways", "2"],
        ["--failover"],
        ["--configs", "postgres:2"],
        ["--configs", "sqlite:2", "--database-url", "postgresql+psycopg://x@127.0.0.1"],
    ],
)
def test_arguments_that_do_not_fit_fail_in_one_line(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
