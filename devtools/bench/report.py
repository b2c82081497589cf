"""Showing results: progress lines on standard error, each run and the summary as text, the
whole report as strict JSON, and the targets each run is measured against."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from devtools.bench.config import Result

TARGET_THROUGHPUT = (32, 300.0)  # committed payments per second at 32 concurrent clients
TARGET_P99 = (8, 50.0)  # p99 latency in ms at 8 concurrent clients


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def targets(results: Sequence[Result]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for result in results:
        if result.concurrency == TARGET_THROUGHPUT[0]:
            checks.append(
                {
                    "target": f">= {TARGET_THROUGHPUT[1]:g} committed/s at "
                    f"{TARGET_THROUGHPUT[0]} clients",
                    "batch_max": result.batch_max,
                    "measured": result.committed_per_s,
                    "met": result.committed_per_s >= TARGET_THROUGHPUT[1],
                }
            )
        if result.concurrency == TARGET_P99[0]:
            checks.append(
                {
                    "target": f"p99 < {TARGET_P99[1]:g} ms at {TARGET_P99[0]} clients",
                    "batch_max": result.batch_max,
                    "measured": result.latency_ms["p99"],
                    "met": result.latency_ms["p99"] < TARGET_P99[1],
                }
            )
    return checks


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items()))


def render(result: Result) -> str:
    lat = result.latency_ms
    aborted = f"aborted {result.aborted}"
    if result.abort_reasons:
        aborted += f" ({_counts(result.abort_reasons)})"
    errors = f"errors {sum(result.errors.values())}"
    if result.errors:
        errors += f" ({_counts(result.errors)})"
    cpu = {
        name: f"{name} {seconds:.1f} ({seconds / result.elapsed_s:.0%})"
        for name, seconds in result.cpu_s.items()
    }
    elsewhere = [cpu.pop(name) for name in ("bench", "others") if name in cpu]
    per_payment = "  ".join(f"{name} {ms:.1f}" for name, ms in result.cpu_ms_per_payment.items())
    match = "yes" if result.balances_match else "NO"
    if not result.balances_match and result.unknown_outcomes:
        match = f"not checked ({result.unknown_outcomes} outcomes unknown)"
    yes = {True: "yes", False: "NO"}
    lines = [
        f"== {result.concurrency} clients on {result.channels} channel(s) | batch max "
        f"{result.batch_max} | txn timeout {result.txn_timeout:g} s | log {result.log_level}",
        f"   {result.payments} cross-bank payments after {result.warmup} warm-up, seed "
        f"{result.seed}, {result.elapsed_s:.2f} s; {result.backend}",
        f"   throughput    {result.payments_per_s:.1f} payments/s   "
        f"{result.committed_per_s:.1f} committed/s",
        f"   latency ms    p50 {lat['p50']:.1f}   p95 {lat['p95']:.1f}   p99 {lat['p99']:.1f}"
        f"   (mean {lat['mean']:.1f}, max {lat['max']:.1f})",
        f"   outcomes      committed {result.committed}   {aborted}   pending {result.pending}"
        f"   {errors}   retries {result.client_retries}",
        f"   money         conserved {yes[result.conserved]}: {result.money_before} before, "
        f"{result.money_after} after (minor units)",
        f"                 cluster idle after {yes[result.idle]}; balances match the "
        f"committed payments {match}",
        "   cpu s (%core) " + "  ".join(cpu.values()),
        "                 " + "  ".join(elsewhere) + f" on this {os.cpu_count() or 1}-core machine",
        f"   cpu ms/pay    {per_payment}",
        "   logs MB       " + "  ".join(f"{name} {mb:.1f}" for name, mb in result.log_mb.items()),
    ]
    lines += [f"   !! {problem}" for problem in result.problems]
    return "\n".join(lines)


def render_all(results: Sequence[Result]) -> str:
    parts = [render(result) for result in results]
    if len(results) > 1:
        rows = [
            f"   {r.concurrency:>7} {r.batch_max:>9} {r.committed_per_s:>12.1f} "
            f"{r.latency_ms['p50']:>8.1f} {r.latency_ms['p95']:>8.1f} {r.latency_ms['p99']:>8.1f}"
            f" {r.committed:>9} {r.aborted:>7} {'yes' if r.conserved else 'NO':>9}"
            for r in results
        ]
        header = (
            "   clients batch-max  committed/s  p50 ms   p95 ms   p99 ms  committed aborted"
            " conserved"
        )
        parts.append("== summary\n" + "\n".join([header, *rows]))
    checks = targets(results)
    if checks:
        parts.append(
            "== targets\n"
            + "\n".join(
                f"   {check['target']:<36} measured {check['measured']:>7.1f}  "
                f"{'MET' if check['met'] else 'MISSED'}"
                for check in checks
            )
        )
    return "\n\n".join(parts)


def _finite(value: Any) -> Any:
    """NaN (no call finished) becomes null, so the output stays strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def render_json(results: Sequence[Result]) -> str:
    report = {"runs": [asdict(r) for r in results], "targets": targets(results)}
    return json.dumps(_finite(report))
