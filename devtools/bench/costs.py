"""What the always-on features cost: the same configuration measured again without each (a
switch only the benchmark uses), side by side with the runs as built. The trace (each
payment's story) and the journal (each round's events and audit record) must each cost at
most ``MAX_COST`` of the throughput; the rate limit is measured against no limit at all
(``MINIPAY_PAY_RATE=inf``)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from devtools.bench.config import WITHOUT, Result

MAX_COST = {"trace": 0.10, "journal": 0.10}  # of the committed payments per second


@dataclass(frozen=True)
class Cost:
    """What FEATURE costs in one configuration at one concurrency. Each round runs the
    configuration as built and without the feature one after the other (in turns), so each
    round gives a pair; the figures are the medians over the pairs, with their range: on a
    machine that runs other work too, the pairs differ far less than the rounds do."""

    feature: str
    config: str
    concurrency: int
    runs: int  # pairs
    with_per_s: float  # committed payments a second as built (median of the runs)
    without_per_s: float  # ... with the feature left out
    share: float  # of the throughput: 1 - with/without, median over the pairs
    share_low: float
    share_high: float
    cpu_ms_with: float  # cluster CPU per payment (median of the runs)
    cpu_ms_without: float
    cpu_share: float  # the extra CPU per payment over what it takes without, median of pairs
    limit: float | None  # the most it may cost, where the issue sets one

    @property
    def steady(self) -> bool:
        """Whether the pairs' throughput agrees well enough to judge by: their spread is
        within twice the limit. When it is not (other work on the machine), the CPU per
        payment judges instead, which the machine's other work moves far less."""
        return self.limit is not None and self.share_high - self.share_low <= 2 * self.limit

    @property
    def met(self) -> bool | None:
        if self.limit is None:
            return None
        return (self.share if self.steady else self.cpu_share) <= self.limit


def costs(runs: Sequence[Result], variants: Sequence[Result]) -> list[Cost]:
    """Each feature left out in VARIANTS against the RUNS as built of the same configuration,
    concurrency and round."""
    built = {(r.config, r.concurrency, r.round): r for r in runs}
    found = []
    for feature in WITHOUT:
        pairs: dict[tuple[str, int], list[tuple[Result, Result]]] = {}
        for variant in variants:
            key = (variant.config, variant.concurrency, variant.round)
            if variant.without == feature and key in built:
                pairs.setdefault(key[:2], []).append((built[key], variant))
        for (config, concurrency), both in pairs.items():
            shares = [
                1 - a.committed_per_s / b.committed_per_s for a, b in both if b.committed_per_s
            ]
            cpu = [(_cpu(a) - _cpu(b)) / _cpu(b) for a, b in both if _cpu(b)]
            found.append(
                Cost(
                    feature=feature,
                    config=config,
                    concurrency=concurrency,
                    runs=len(both),
                    with_per_s=round(statistics.median(a.committed_per_s for a, _ in both), 1),
                    without_per_s=round(statistics.median(b.committed_per_s for _, b in both), 1),
                    share=round(statistics.median(shares), 4) if shares else 0.0,
                    share_low=round(min(shares), 4) if shares else 0.0,
                    share_high=round(max(shares), 4) if shares else 0.0,
                    cpu_ms_with=round(statistics.median(_cpu(a) for a, _ in both), 3),
                    cpu_ms_without=round(statistics.median(_cpu(b) for _, b in both), 3),
                    cpu_share=round(statistics.median(cpu), 4) if cpu else 0.0,
                    limit=MAX_COST.get(feature),
                )
            )
    return found


def _cpu(result: Result) -> float:
    return result.cpu_ms_per_payment.get("cluster", 0.0)


def render_costs(found: Sequence[Cost]) -> str:
    lines = ["== what the always-on features cost (medians over rounds run both ways)"]
    for cost in found:
        verdict = ""
        if cost.limit is not None:
            judged = "" if cost.steady else ", judged by cpu: the pairs' throughput is noise here"
            verdict = f" (at most {cost.limit:.0%}{judged}: {'MET' if cost.met else 'MISSED'})"
        lines += [
            f"   {cost.feature:<10} {cost.config} at {cost.concurrency} clients, "
            f"{cost.runs} round(s) each run both ways",
            f"     with    {cost.with_per_s:>8.1f} committed/s   cluster cpu "
            f"{cost.cpu_ms_with:.2f} ms/payment",
            f"     without {cost.without_per_s:>8.1f} committed/s   cluster cpu "
            f"{cost.cpu_ms_without:.2f} ms/payment",
            f"     cost    {cost.share:>8.1%} of the throughput [{cost.share_low:.1%} to "
            f"{cost.share_high:.1%}];  {cost.cpu_share:+.1%} cluster cpu per payment{verdict}",
        ]
    return "\n".join(lines)
