"""What the always-on features cost: the same configuration measured again without each (a
switch only the benchmark uses), side by side with the runs as built. The trace (each
payment's story) must cost at most ``TRACE_MAX_COST`` of the throughput; the rate limit is
measured against no limit at all (``MINIPAY_PAY_RATE=inf``)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from devtools.bench.config import WITHOUT, Result

TRACE_MAX_COST = 0.10  # of the committed payments per second


@dataclass(frozen=True)
class Cost:
    """What FEATURE costs in one configuration at one concurrency, medians over the runs."""

    feature: str
    config: str
    concurrency: int
    runs: int
    with_per_s: float  # committed payments a second, as built
    without_per_s: float  # ... with the feature left out
    share: float  # of the throughput: (without - with) / without; negative: noise
    cpu_ms_with: float  # cluster CPU per payment
    cpu_ms_without: float
    limit: float | None  # the most it may cost, where the issue sets one

    @property
    def cpu_share(self) -> float:
        """The extra cluster CPU per payment, as a share of what it takes without: steadier
        than the throughput on a machine that runs other work too."""
        if not self.cpu_ms_without:
            return 0.0
        return (self.cpu_ms_with - self.cpu_ms_without) / self.cpu_ms_without

    @property
    def met(self) -> bool | None:
        return None if self.limit is None else self.share <= self.limit


def costs(runs: Sequence[Result], variants: Sequence[Result]) -> list[Cost]:
    """Each feature left out in VARIANTS against the RUNS as built of the same configuration
    and concurrency."""
    found = []
    for feature in WITHOUT:
        groups = {(v.config, v.concurrency) for v in variants if v.without == feature}
        for config, concurrency in sorted(groups):
            built = [r for r in runs if (r.config, r.concurrency) == (config, concurrency)]
            left_out = [
                v
                for v in variants
                if (v.config, v.concurrency, v.without) == (config, concurrency, feature)
            ]
            if not built:
                continue
            with_per_s = statistics.median(r.committed_per_s for r in built)
            without_per_s = statistics.median(v.committed_per_s for v in left_out)
            share = (without_per_s - with_per_s) / without_per_s if without_per_s else 0.0
            found.append(
                Cost(
                    feature=feature,
                    config=config,
                    concurrency=concurrency,
                    runs=min(len(built), len(left_out)),
                    with_per_s=round(with_per_s, 1),
                    without_per_s=round(without_per_s, 1),
                    share=round(share, 4),
                    cpu_ms_with=_cpu(built),
                    cpu_ms_without=_cpu(left_out),
                    limit=TRACE_MAX_COST if feature == "trace" else None,
                )
            )
    return found


def _cpu(results: Sequence[Result]) -> float:
    values = [r.cpu_ms_per_payment.get("cluster", 0.0) for r in results]
    return round(statistics.median(values), 3) if values else 0.0


def render_costs(found: Sequence[Cost]) -> str:
    lines = ["== what the always-on features cost (median of each side's runs)"]
    for cost in found:
        verdict = ""
        if cost.limit is not None:
            verdict = f" (at most {cost.limit:.0%}: {'MET' if cost.met else 'MISSED'})"
        lines += [
            f"   {cost.feature:<10} {cost.config} at {cost.concurrency} clients, "
            f"{cost.runs} run(s) each way",
            f"     with    {cost.with_per_s:>8.1f} committed/s   cluster cpu "
            f"{cost.cpu_ms_with:.2f} ms/payment",
            f"     without {cost.without_per_s:>8.1f} committed/s   cluster cpu "
            f"{cost.cpu_ms_without:.2f} ms/payment",
            f"     cost    {cost.share:>8.1%} of the throughput{verdict}   "
            f"{cost.cpu_ms_with - cost.cpu_ms_without:+.2f} ms cluster cpu/payment "
            f"({cost.cpu_share:+.1%})",
        ]
    return "\n".join(lines)
