"""A payment's trace as a timeline for the terminal (``client trace ID``, ``admin trace ID``).

A caption line, a header with each lane's name and role, then one line per event of
``minipay.client.trace.layout`` in time order: the elapsed milliseconds on the left, a
vertical bar per lane, an arrow drawn between two lanes' bars with its label (heavy for a
decision, dashed for a re-send, ``✗`` for an answer that never came), a ``●`` and its text
for a note. Box characters when the output can print them, ASCII otherwise. The drawing fits
the given width: a label that does not fit on its arrow goes after it, and what still does
not fit is cut short, never wrapped. Text from the gateway is shown with its control
characters replaced, so a name cannot move the cursor or recolour the terminal.
"""

from __future__ import annotations

import shutil
import unicodedata
from dataclasses import dataclass
from typing import TextIO

from minipay.client.trace import Arrow, Diagram, Note, PaymentTrace, Style, caption, layout

DEFAULT_WIDTH = 100
# Columns between two lanes' bars: enough for most labels, and a floor for narrow terminals.
MOST_SPACING, LEAST_SPACING = 20, 6
# Kept free right of the last lane for the text of notes and of labels that do not fit.
TEXT_ROOM = 16


@dataclass(frozen=True)
class Glyphs:
    bar: str
    line: str  # a request or an answer
    heavy: str  # a decision
    dashed: str  # a re-send
    dotted: str  # a failure
    right: str
    left: str
    cross: str  # an answer that never came; the end of a replica taken over
    note: str
    ellipsis: str
    to: str


BOXES = Glyphs("│", "─", "━", "╌", "┈", "▶", "◀", "✗", "●", "…", "→")
ASCII = Glyphs("|", "-", "=", "~", ".", ">", "<", "x", "*", "...", "->")


def can_draw_boxes(stream: TextIO) -> bool:
    """Whether STREAM's encoding can print the box characters."""
    encoding = getattr(stream, "encoding", None) or "ascii"
    sample = "".join(vars(BOXES).values())
    try:
        sample.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def for_terminal(trace: PaymentTrace, stream: TextIO) -> str:
    """TRACE drawn for STREAM: as wide as the terminal (100 columns when not a terminal),
    with box characters if its encoding has them."""
    width = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    return render_text(trace, width=width, boxes=can_draw_boxes(stream))


def render_text(trace: PaymentTrace, *, width: int = DEFAULT_WIDTH, boxes: bool = True) -> str:
    """TRACE as a timeline at most WIDTH columns wide (unless even its bars need more)."""
    return _Timeline(layout(trace), width, BOXES if boxes else ASCII).draw()


class _Timeline:
    def __init__(self, diagram: Diagram, width: int, glyphs: Glyphs) -> None:
        self.diagram, self.glyphs = diagram, glyphs
        self.ms_width = max([2, *(len(str(event.at_ms)) for event in diagram.events)])
        left = self.ms_width + 2
        gaps = len(diagram.lanes) - 1
        spacing = (width - left - 1 - TEXT_ROOM) // gaps if gaps else 0
        spacing = max(LEAST_SPACING, min(MOST_SPACING, spacing))
        self.columns = {lane.key: left + i * spacing for i, lane in enumerate(diagram.lanes)}
        self.spacing = spacing
        self.width = max(width, left + gaps * spacing + 1)

    def draw(self) -> str:
        lines = [
            self._fit(self._clean(line), self.width)
            for line in caption(self.diagram.trace, self.glyphs.to)
        ]
        lines.append("")
        lines.append(self._header("ms", [lane.name for lane in self.diagram.lanes], middle=True))
        lines.append(self._header("", [lane.role for lane in self.diagram.lanes], middle=False))
        lines.extend(self._row(row) for row in range(len(self.diagram.events)))
        return "\n".join(line.rstrip() for line in lines)

    def _header(self, left: str, titles: list[str], *, middle: bool) -> str:
        """A header line: LEFT over the milliseconds, each title over its lane's bar (names
        cut in the middle, so that "gateway-2" stays told apart from "gateway")."""
        cells = [" "] * self.width
        self._put(cells, 0, left.rjust(self.ms_width))
        last = max(self.columns.values())
        for column, title in zip(self.columns.values(), titles, strict=True):
            room = self.spacing - 1 if column != last else self.width - column
            title = self._clean(title)
            self._put(cells, column, self._fit(title, room, middle=middle) or title[:room])
        return "".join(cells)

    def _row(self, row: int) -> str:
        event = self.diagram.events[row]
        cells = [" "] * self.width
        self._put(cells, 0, str(event.at_ms).rjust(self.ms_width))
        for lane in self.diagram.lanes:
            if lane.alive(row):
                cells[self.columns[lane.key]] = self.glyphs.bar
            elif lane.taken_over and row == lane.last_event + 1:
                cells[self.columns[lane.key]] = self.glyphs.cross
        if isinstance(event, Arrow):
            self._arrow(cells, event)
        else:
            self._note(cells, event)
        return "".join(cells)

    def _arrow(self, cells: list[str], arrow: Arrow) -> None:
        start, end = self.columns[arrow.source], self.columns[arrow.target]
        low, high = min(start, end), max(start, end)
        line = {
            Style.DECISION: self.glyphs.heavy,
            Style.RESEND: self.glyphs.dashed,
            Style.FAILURE: self.glyphs.dotted,
        }.get(arrow.style, self.glyphs.line)
        for column in range(low + 1, high):
            cells[column] = line
        if arrow.style is Style.FAILURE:
            head = self.glyphs.cross
        else:
            head = self.glyphs.right if end > start else self.glyphs.left
        cells[high - 1 if end > start else low + 1] = head
        label = self._clean(arrow.text)
        inside = high - low - 1
        if len(label) + 4 <= inside:  # a line and a space on each side of it
            self._put(cells, low + 1 + (inside - len(label) - 2) // 2, f" {label} ")
        else:
            self._beside(cells, high, label)

    def _note(self, cells: list[str], note: Note) -> None:
        column = self.columns[note.lane]
        cells[column] = self.glyphs.note
        self._beside(cells, column, self._clean(note.text))

    def _beside(self, cells: list[str], column: int, text: str) -> None:
        """TEXT right of COLUMN, over the bars it passes, cut short at the line's end."""
        self._put(cells, column + 2, self._fit(text, len(cells) - column - 2))

    def _fit(self, text: str, room: int, *, middle: bool = False) -> str:
        """TEXT, or when longer than ROOM, cut short (or in the middle) with an ellipsis; ""
        when not even three characters of it would show."""
        if len(text) <= room:
            return text
        keep = room - len(self.glyphs.ellipsis)
        if keep < 3:
            return ""
        if middle:
            return text[: (keep + 1) // 2] + self.glyphs.ellipsis + text[len(text) - keep // 2 :]
        return text[:keep] + self.glyphs.ellipsis

    def _clean(self, text: str) -> str:
        """TEXT safe to print: no control characters; ASCII only in ASCII mode."""
        text = "".join("?" if unicodedata.category(c).startswith("C") else c for c in text)
        if self.glyphs is ASCII:
            text = text.encode("ascii", "replace").decode("ascii")
        return text

    @staticmethod
    def _put(cells: list[str], start: int, text: str) -> None:
        for offset, character in enumerate(text[: max(len(cells) - start, 0)]):
            cells[start + offset] = character
