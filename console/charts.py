"""The overview's one chart: payments decided per 10-second bucket over the last minutes, as
a small SVG bar chart (committed stacked under aborted). Built with ElementTree like the
sequence diagram (every text escaped, presentation attributes only: the Content-Security-
Policy allows no inline style)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Protocol

from console.diagram import SVG_NAMESPACE

WIDTH, HEIGHT, BOTTOM = 600, 120, 18
COMMITTED, ABORTED = "#1a7f37", "#cf222e"


class Bucket(Protocol):
    seconds: int
    committed: int
    aborted: int


def throughput_chart(buckets: Sequence[Bucket]) -> str:
    """BUCKETS (oldest first) as an SVG document; the tallest bar fills the height."""
    root = ET.Element(
        "svg",
        {
            "xmlns": SVG_NAMESPACE,
            "viewBox": f"0 0 {WIDTH} {HEIGHT}",
            "role": "img",
            "font-size": "11",
            "font-family": "ui-sans-serif, system-ui, sans-serif",
        },
    )
    total = sum(b.committed + b.aborted for b in buckets)
    seconds = sum(b.seconds for b in buckets) or 1
    title = ET.SubElement(root, "title")
    title.text = f"{total} payments decided in the last {seconds} s ({total / seconds:.1f}/s)"
    tallest = max([1, *(b.committed + b.aborted for b in buckets)])
    space = HEIGHT - BOTTOM - 4
    width = WIDTH / max(1, len(buckets))
    for index, bucket in enumerate(buckets):
        x = index * width + 1
        committed = space * bucket.committed / tallest
        aborted = space * bucket.aborted / tallest
        base = HEIGHT - BOTTOM
        for height, top, colour in (
            (committed, base - committed, COMMITTED),
            (aborted, base - committed - aborted, ABORTED),
        ):
            if height > 0:
                bar = ET.SubElement(
                    root,
                    "rect",
                    {
                        "x": f"{x:.1f}",
                        "y": f"{top:.1f}",
                        "width": f"{max(1.0, width - 2):.1f}",
                        "height": f"{height:.1f}",
                        "fill": colour,
                    },
                )
                hint = ET.SubElement(bar, "title")
                hint.text = (
                    f"{bucket.committed} committed, {bucket.aborted} aborted in {bucket.seconds} s"
                )
    ET.SubElement(
        root,
        "line",
        {"x1": "0", "y1": str(HEIGHT - BOTTOM), "x2": str(WIDTH), "y2": str(HEIGHT - BOTTOM),
         "stroke": "#8c959f"},
    )  # fmt: skip
    for text, x, anchor in ((f"-{seconds} s", 2, "start"), ("now", WIDTH - 2, "end")):
        label = ET.SubElement(
            root,
            "text",
            {"x": str(x), "y": str(HEIGHT - 4), "fill": "#59636e", "text-anchor": anchor},
        )
        label.text = text
    return ET.tostring(root, encoding="unicode")
