"""The sweep's picture: committed payments per second (absolute and as a ratio to the echo
baseline) and p50 and p99 latency against the number of clients, one line per
configuration, the median of the repeats with their min-max range as error bars; a PNG.
matplotlib is imported only here, only when a plot is drawn, with the Agg backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from devtools.bench.summary import Summary

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PANELS = (
    ("committed/s", "committed payments / s"),
    ("x echo", "committed / s as a ratio to echo RPC/s"),
    ("p50 ms", "p50 latency (ms)"),
    ("p99 ms", "p99 latency (ms)"),
)


def plot(summaries: Sequence[Summary], path: Path, title: str) -> Path:
    """Draws SUMMARIES into the PNG at PATH (its folder made if missing); returns PATH."""
    import matplotlib.pyplot as plt

    figure = draw(summaries, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def draw(summaries: Sequence[Summary], title: str) -> Figure:
    """The figure of SUMMARIES, drawn (its tick labels are set); the caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter

    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    levels = sorted({s.concurrency for s in summaries})
    for (name, label), ax in zip(PANELS, axes.flat, strict=True):
        for config in dict.fromkeys(s.config for s in summaries):
            rows = sorted(
                (s for s in summaries if s.config == config and name in s.figures),
                key=lambda s: s.concurrency,
            )
            if not rows:
                continue
            spreads = [s.figures[name] for s in rows]
            medians = [spread.median for spread in spreads]
            below = [spread.median - spread.low for spread in spreads]
            above = [spread.high - spread.median for spread in spreads]
            ax.errorbar(
                [s.concurrency for s in rows],
                medians,
                yerr=[below, above],
                marker="o",
                capsize=3,
                label=config,
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(level) for level in levels])
        if name.endswith("ms"):
            ax.set_yscale("log")
            # Plain numbers (60, not 6x10^1) on the decades and on the ticks between them.
            ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    # One configuration per line: the settings of several do not fit across the figure.
    figure.suptitle(title.replace("; ", "\n"), fontsize="small")
    figure.tight_layout()
    figure.canvas.draw()
    return figure
