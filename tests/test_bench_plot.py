"""The benchmark's sweep plot reads as a person expects: plain numbers on every axis, on the
log-scaled latency panels too (60, not 6x10^1)."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt

from devtools.bench.plot import draw
from devtools.bench.summary import Spread, Summary


def test_axis_labels_are_plain_numbers() -> None:
    summaries = [
        Summary(
            "sqlite:1",
            clients,
            3,
            {
                "committed/s": Spread(100.0 * clients, 90.0 * clients, 110.0 * clients),
                "x echo": Spread(0.1, 0.09, 0.11),
                # A narrow range: matplotlib then labels the ticks between the decades too.
                "p50 ms": Spread(40.0 + clients, 35.0 + clients, 45.0 + clients),
                "p99 ms": Spread(60.0 + clients, 55.0 + clients, 70.0 + clients),
            },
            0,
        )
        for clients in (1, 2, 4, 8)
    ]
    figure = draw(summaries, "made-up results")
    try:
        labels = [
            label.get_text()
            for ax in figure.axes
            for minor in (False, True)
            for label in [*ax.get_yticklabels(minor=minor), *ax.get_xticklabels(minor=minor)]
        ]
    finally:
        plt.close(figure)
    shown = [text for text in labels if text]
    assert "60" in shown  # a tick between decades on a latency panel, labelled
    odd = [text for text in shown if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text)]
    assert not odd, odd
