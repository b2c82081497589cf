"""The figures of several runs of one configuration at one concurrency (``--repeat``), as a
median and a min-max range each: what the summary table, the JSON ``summary`` and the sweep's
plot show."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from devtools.bench.config import Result

Figure = Callable[[Result], float | None]


def _probe(kind: str, rank: str) -> Figure:
    def get(result: Result) -> float | None:
        return result.probes[f"{kind}_ms"][rank] if result.probes else None

    return get


def _cpu(share: str) -> Figure:
    return lambda result: result.cpu_ms_per_payment.get(share)


# Every figure a summary has, by the name it is shown with; None where a run has none.
FIGURES: dict[str, Figure] = {
    "committed/s": lambda r: r.committed_per_s,
    "payments/s": lambda r: r.payments_per_s,
    "x echo": lambda r: r.committed_x_echo,
    "echo RPC/s": lambda r: r.echo_rpc_per_s,
    "p50 ms": lambda r: r.latency_ms["p50"],
    "p95 ms": lambda r: r.latency_ms["p95"],
    "p99 ms": lambda r: r.latency_ms["p99"],
    "cpu ms/pay cluster": _cpu("cluster"),
    "cpu ms/pay gateways": _cpu("gateways"),
    "cpu ms/pay banks": _cpu("banks"),
    "history p50 ms": _probe("history", "p50"),
    "history p99 ms": _probe("history", "p99"),
    "replay p50 ms": _probe("replay", "p50"),
    "replay p99 ms": _probe("replay", "p99"),
}


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float


@dataclass
class Summary:
    config: str
    concurrency: int
    runs: int
    figures: dict[str, Spread]
    problems: int  # runs with a problem


def spread(values: Sequence[float]) -> Spread:
    return Spread(round(statistics.median(values), 3), min(values), max(values))


def summarize(results: Sequence[Result]) -> list[Summary]:
    """One summary per (configuration, concurrency), in the order they first ran."""
    groups: dict[tuple[str, int], list[Result]] = {}
    for result in results:
        groups.setdefault((result.config, result.concurrency), []).append(result)
    summaries = []
    for (config, concurrency), runs in groups.items():
        figures = {}
        for name, figure in FIGURES.items():
            values = [v for v in map(figure, runs) if v is not None and not math.isnan(v)]
            if values:
                figures[name] = spread(values)
        problems = sum(1 for run in runs if run.problems)
        summaries.append(Summary(config, concurrency, len(runs), figures, problems))
    return summaries
