"""A payment's two-phase commit as an SVG sequence diagram, for the console's payment page.

It draws the layout of ``minipay.client.trace`` (the same lanes and events, one row each, as
the terminal's timeline): a column per lane with its name and role and a dashed lifeline, an
arrow per message with its label and the milliseconds elapsed at its row, a box per note.
Votes and decisions are marked by colour and shape (green and a dot for yes and commit, red
and a square for no and abort), decisions are heavy, re-sends dashed, missing answers dotted
and crossed; a replica that took over has a lane of its own starting at its first step, and
the one it took over from ends in a cross.

Safe to put in a page as it is: built with ElementTree, so every text and attribute is
escaped (a bank named ``<script>`` is text), with characters XML cannot hold replaced; only
presentation attributes (no script, no style element or attribute, so a Content-Security-
Policy without 'unsafe-inline' shows it); nothing outside it referenced; a fixed viewBox
computed from the lanes and events. Links to other payments (a refund, or the payment a
refund gives back) are drawn only when the caller says where its pages are (``payment_url``).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from minipay.client.trace import (
    Arrow,
    Diagram,
    Lane,
    LaneKind,
    Note,
    PaymentTrace,
    Style,
    Tone,
    caption,
    layout,
)

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
FONT = "ui-sans-serif, system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"

# Geometry in pixels (the font size is 12 unless said otherwise).
MARGIN = 16
HEADER_TOP = 58
HEADER_HEIGHT = 42
FIRST_ROW = HEADER_TOP + HEADER_HEIGHT + 30
ROW = 30
LANE_LEAST, LANE_MOST = 150, 300
HEAD = 9  # an arrowhead's length
# Text is cut to these many characters (a title keeps all of it, for the tooltip).
LABEL_MOST, NOTE_MOST, NAME_MOST = 48, 72, 28

INK = "#1f2328"
FAINT = "#59636e"
LIFELINE = "#8c959f"
# Line and fill colours of each tone.
COLOURS = {
    Tone.NEUTRAL: (INK, "#f6f8fa"),
    Tone.GOOD: ("#1a7f37", "#dafbe1"),
    Tone.BAD: ("#cf222e", "#ffebe9"),
    Tone.NOTICE: ("#9a6700", "#fff8c5"),
    Tone.LINK: ("#0969da", "#ddf4ff"),
}
LANE_FILLS = {LaneKind.CLIENT: "#eaeef2", LaneKind.REPLICA: "#ddf4ff", LaneKind.BANK: "#fff8c5"}

PaymentUrl = Callable[[str], str]
_Event = TypeVar("_Event", Arrow, Note)


def sequence_diagram(trace: PaymentTrace, *, payment_url: PaymentUrl | None = None) -> str:
    """TRACE as an SVG document (a string to put in a page as it is). PAYMENT_URL, when
    given, makes the notes that name another payment links to PAYMENT_URL(its id); a URL
    whose scheme is not http or https (or none) is not linked."""
    return _Drawing(layout(trace), payment_url).svg()


def clean(text: str, most: int | None = None) -> str:
    """TEXT as XML can hold it (characters it cannot replaced, line breaks as spaces), cut to
    MOST characters with an ellipsis."""
    text = "".join(_xml_character(c) for c in text)
    if most is not None and len(text) > most:
        text = text[: most - 1] + "…"
    return text


def text_width(text: str, size: int = 12, *, bold: bool = False) -> int:
    """A generous estimate of TEXT's width in pixels (there are no font metrics here):
    capitals, digits and wide letters count more than the rest."""
    wide = sum(1 for c in text if c.isupper() or c.isdigit() or c in "mw_@%")
    ems = 0.68 * wide + 0.55 * (len(text) - wide)
    return math.ceil(ems * size * (1.1 if bold else 1.0))


def fit(text: str, pixels: int, size: int = 12) -> str:
    """TEXT, or as much of it as fits in PIXELS with an ellipsis (at least 4 characters)."""
    while len(text) > 4 and text_width(text, size) > pixels:
        text = text[: len(text) - 2] + "…"
    return text


def _bold(note: Note) -> bool:
    """A decision's note is bold."""
    return note.tone in (Tone.GOOD, Tone.BAD)


def _xml_character(character: str) -> str:
    code = ord(character)
    if character in "\t\n\r":
        return " "
    if code < 0x20 or 0xD800 <= code <= 0xDFFF or code in (0xFFFE, 0xFFFF):
        return "\ufffd"
    return character


def _safe_url(url: str) -> bool:
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return False
    return scheme in ("", "http", "https")


class _Drawing:
    def __init__(self, diagram: Diagram, payment_url: PaymentUrl | None) -> None:
        self.diagram = diagram
        self.payment_url = payment_url
        self.ms_width = max([30, *(text_width(f"{e.at_ms} ms", 11) for e in diagram.events)])
        self.left = MARGIN + self.ms_width + 8
        self.spacing = self._spacing()
        self.x = {
            lane.key: self.left + self.spacing // 2 + i * self.spacing
            for i, lane in enumerate(diagram.lanes)
        }
        self.lanes_right = self.left + len(diagram.lanes) * self.spacing
        self.notes = {row: self._note_box(row, e) for row, e in self._events(Note)}
        right = max([self.lanes_right, *(x + width for x, width in self.notes.values())])
        first, second = (clean(line) for line in caption(diagram.trace))
        self.caption = first, second
        wide = max(text_width(first, 14, bold=True), text_width(second))
        self.width = max(right, MARGIN + wide) + MARGIN
        self.bottom = self._row_y(len(diagram.events)) - ROW // 2
        self.height = self.bottom + MARGIN

    def _events(self, kind: type[_Event]) -> list[tuple[int, _Event]]:
        return [(row, e) for row, e in enumerate(self.diagram.events) if isinstance(e, kind)]

    def _spacing(self) -> int:
        """Wide enough for the lanes' names and, spread over the lanes an arrow spans, its
        label; within LANE_LEAST..LANE_MOST (longer labels are cut)."""
        wanted = [LANE_LEAST]
        for lane in self.diagram.lanes:
            wanted.append(text_width(clean(lane.name, NAME_MOST), bold=True) + 28)
        for _, arrow in self._events(Arrow):
            span = abs(self.diagram.column(arrow.source) - self.diagram.column(arrow.target))
            label = text_width(clean(arrow.text, LABEL_MOST))
            wanted.append(-(-(label + 2 * HEAD + 24) // max(span, 1)))
        return min(max(wanted), LANE_MOST)

    def _row_y(self, row: int) -> int:
        return FIRST_ROW + row * ROW

    def _note_box(self, row: int, note: Note) -> tuple[int, int]:
        """The note's left edge and width: right of its lane, or left of it when it would
        stick out on the right of the last lane and there is room on the left."""
        width = text_width(clean(note.text, NOTE_MOST), bold=_bold(note)) + 16
        x = self.x[note.lane]
        if x + 10 + width > self.lanes_right and x - 10 - width >= self.left:
            return x - 10 - width, width
        return x + 10, width

    # -- the document ---------------------------------------------------------------------

    def svg(self) -> str:
        first, second = self.caption
        root = ET.Element(
            "svg",
            {
                "xmlns": SVG_NAMESPACE,
                "viewBox": f"0 0 {self.width} {self.height}",
                "width": str(self.width),
                "height": str(self.height),
                "role": "img",
                "font-family": FONT,
                "font-size": "12",
            },
        )
        _add(root, "title", f"{first}: {second}")
        _add(root, "rect", width=self.width, height=self.height, fill="#ffffff")
        _add(root, "text", first, x=MARGIN, y=24, fill=INK, font_size=14, font_weight="bold")
        _add(root, "text", second, x=MARGIN, y=42, fill=FAINT)
        lanes = _add(root, "g", class_="lanes")
        for lane in self.diagram.lanes:
            self._lane(lanes, lane)
        times = _add(root, "g", class_="times", fill=FAINT, font_size=11, text_anchor="end")
        for row, event in enumerate(self.diagram.events):
            _add(times, "text", f"{event.at_ms} ms", x=self.left - 8, y=self._row_y(row) + 4)
        events = _add(root, "g", class_="events")
        for row, event in enumerate(self.diagram.events):
            if isinstance(event, Arrow):
                self._arrow(events, row, event)
            else:
                self._note(events, row, event)
        ET.indent(root)
        return ET.tostring(root, encoding="unicode") + "\n"

    def _lane(self, parent: ET.Element, lane: Lane) -> None:
        x, width = self.x[lane.key], self.spacing - 20
        group = _add(parent, "g", class_=f"lane {lane.kind.value}")
        late = lane.first_event > 0
        box = {"stroke_dasharray": "4 3"} if late else {}
        _add(
            group,
            "rect",
            x=x - width // 2,
            y=HEADER_TOP,
            width=width,
            height=HEADER_HEIGHT,
            rx=6,
            fill=LANE_FILLS[lane.kind],
            stroke=LIFELINE,
            **box,
        )
        _add(
            group,
            "text",
            clean(lane.name, NAME_MOST),
            x=x,
            y=HEADER_TOP + 18,
            fill=INK,
            text_anchor="middle",
            font_weight="bold",
        )
        _add(
            group,
            "text",
            clean(lane.role, NAME_MOST),
            x=x,
            y=HEADER_TOP + 33,
            fill=FAINT,
            text_anchor="middle",
            font_size=11,
        )
        top = self._row_y(lane.first_event) - ROW // 2 if late else HEADER_TOP + HEADER_HEIGHT
        end = self._row_y(lane.last_event) + ROW // 2 if lane.taken_over else self.bottom
        _add(group, "line", x1=x, y1=top, x2=x, y2=end, stroke=LIFELINE, stroke_dasharray="4 4")
        if lane.taken_over:  # its replica is gone: a cross where its lifeline ends
            _cross(group, x, end, 7, COLOURS[Tone.BAD][0], class_="lane-end")

    def _arrow(self, parent: ET.Element, row: int, arrow: Arrow) -> None:
        y, start, end = self._row_y(row), self.x[arrow.source], self.x[arrow.target]
        way = 1 if end > start else -1
        colour = COLOURS[arrow.tone][0]
        group = _add(parent, "g", class_=f"arrow {arrow.style.value} {arrow.tone.value}")
        _add(group, "title", self._tooltip(arrow.step, arrow.text))
        stroke: dict[str, object] = {"stroke": colour, "stroke_width": 1.5}
        if arrow.style is Style.DECISION:
            stroke["stroke_width"] = 2.5
        elif arrow.style is Style.RESEND:
            stroke["stroke_dasharray"] = "7 4"
        elif arrow.style is Style.FAILURE:
            stroke["stroke_dasharray"] = "2 3"
        tip = end - way * (6 if arrow.style is Style.FAILURE else HEAD)
        _add(group, "line", x1=start, y1=y, x2=tip, y2=y, **stroke)
        wing = end - way * HEAD
        if arrow.style is Style.FAILURE:  # the answer never came: a cross where it would be
            _cross(group, tip, y, 5, colour)
        elif arrow.style is Style.ANSWER:  # an answer's head is open
            _add(
                group,
                "polyline",
                points=f"{wing},{y - 5} {end},{y} {wing},{y + 5}",
                fill="none",
                stroke=colour,
                stroke_width=1.5,
            )
        else:
            _add(group, "polygon", points=f"{end},{y} {wing},{y - 5} {wing},{y + 5}", fill=colour)
        if arrow.style is Style.ANSWER and arrow.tone in (Tone.GOOD, Tone.BAD):
            mark = start + way * 8  # yes: a dot; no: a square
            if arrow.tone is Tone.GOOD:
                _add(group, "circle", cx=mark, cy=y, r=4, fill=colour, class_="mark yes")
            else:
                _add(
                    group,
                    "rect",
                    x=mark - 4,
                    y=y - 4,
                    width=8,
                    height=8,
                    fill=colour,
                    class_="mark no",
                )
        label = fit(clean(arrow.text, LABEL_MOST), abs(end - start) - 2 * HEAD - 8)
        _add(group, "text", label, x=(start + end) // 2, y=y - 6, fill=colour, text_anchor="middle")

    def _note(self, parent: ET.Element, row: int, note: Note) -> None:
        y, x = self._row_y(row), self.x[note.lane]
        left, width = self.notes[row]
        line, fill = COLOURS[note.tone]
        group = _add(parent, "g", class_=f"note {note.tone.value}")
        url = self.payment_url(note.link) if self.payment_url and note.link else ""
        if url and _safe_url(url):
            group = _add(group, "a", href=url)
        _add(group, "title", self._tooltip(note.step, note.text))
        _add(group, "circle", cx=x, cy=y, r=3.5, fill=line)
        _add(group, "rect", x=left, y=y - 10, width=width, height=20, rx=4, fill=fill, stroke=line)
        bold = {"font_weight": "bold"} if _bold(note) else {}
        _add(group, "text", clean(note.text, NOTE_MOST), x=left + 8, y=y + 4, fill=INK, **bold)

    def _tooltip(self, step: int, text: str) -> str:
        """TEXT and the step's details, for a title a pointer shows."""
        taken = self.diagram.trace.steps[step]
        parts = [text, f"step {taken.kind}"]
        parts += [
            f"{name} {value}"
            for name, value in (
                ("replica", taken.replica),
                ("bank", taken.bank),
                ("round", taken.round),
            )
            if value
        ]
        if taken.detail:
            parts.append(taken.detail)
        parts += [f"{name}={value}" for name, value in sorted(taken.attributes.items())]
        return clean(" · ".join(parts), 600)


def _add(
    parent: ET.Element, tag: str, text: str | None = None, /, **attributes: object
) -> ET.Element:
    """A child of PARENT: attributes are keywords, "_" for "-" ("stroke_width"), "class_"."""
    named = {name.rstrip("_").replace("_", "-"): str(value) for name, value in attributes.items()}
    element = ET.SubElement(parent, tag, named)
    element.text = text
    return element


def _cross(
    parent: ET.Element, x: int, y: int, size: int, colour: str, **attributes: object
) -> None:
    group = _add(parent, "g", stroke=colour, stroke_width=2.5, **attributes)
    _add(group, "line", x1=x - size, y1=y - size, x2=x + size, y2=y + size)
    _add(group, "line", x1=x - size, y1=y + size, x2=x + size, y2=y - size)
