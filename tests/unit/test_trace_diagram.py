"""The console's SVG sequence diagram of a payment's trace: its structure for every story
(lanes, arrows, notes, marks), that it is safe to put in a page (everything escaped, nothing
run or fetched), and one exact drawing. With MINIPAY_WRITE_TRACE_EXAMPLES=1 the examples in
docs/trace-examples/ (SVG and the terminal's text) are written again; otherwise they must be
what the code draws today."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from console.diagram import sequence_diagram
from minipay.client.trace import Arrow, Note, PaymentTrace, layout
from minipay.client.trace_text import render_text
from tests.unit import trace_cases as cases
from tests.unit.trace_cases import (
    DECIDED,
    PAYMENT_ID,
    REFUND_ID,
    VOTED,
    account,
    answer,
    payment,
    recorded,
    step,
)

NS = {"svg": "http://www.w3.org/2000/svg"}
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "trace-examples"

COMMITTED_SVG = """\
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 735 521" width="735" height="521" role="img" font-family="ui-sans-serif, system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">
  <title>payment pay_7c1e4f0a9b2d4e6f8a0b1c2d3e4f5a6b COMMITTED: 12.34 USD alpha/A-1 → beta/B-1</title>
  <rect width="735" height="521" fill="#ffffff" />
  <text x="16" y="24" fill="#1f2328" font-size="14" font-weight="bold">payment pay_7c1e4f0a9b2d4e6f8a0b1c2d3e4f5a6b COMMITTED</text>
  <text x="16" y="42" fill="#59636e">12.34 USD alpha/A-1 → beta/B-1</text>
  <g class="lanes">
    <g class="lane client">
      <rect x="69" y="58" width="145" height="42" rx="6" fill="#eaeef2" stroke="#8c959f" />
      <text x="141" y="76" fill="#1f2328" text-anchor="middle" font-weight="bold">client</text>
      <text x="141" y="91" fill="#59636e" text-anchor="middle" font-size="11">caller</text>
      <line x1="141" y1="100" x2="141" y2="505" stroke="#8c959f" stroke-dasharray="4 4" />
    </g>
    <g class="lane replica">
      <rect x="234" y="58" width="145" height="42" rx="6" fill="#ddf4ff" stroke="#8c959f" />
      <text x="306" y="76" fill="#1f2328" text-anchor="middle" font-weight="bold">gateway</text>
      <text x="306" y="91" fill="#59636e" text-anchor="middle" font-size="11">gateway</text>
      <line x1="306" y1="100" x2="306" y2="505" stroke="#8c959f" stroke-dasharray="4 4" />
    </g>
    <g class="lane bank">
      <rect x="399" y="58" width="145" height="42" rx="6" fill="#fff8c5" stroke="#8c959f" />
      <text x="471" y="76" fill="#1f2328" text-anchor="middle" font-weight="bold">alpha</text>
      <text x="471" y="91" fill="#59636e" text-anchor="middle" font-size="11">payer's bank</text>
      <line x1="471" y1="100" x2="471" y2="505" stroke="#8c959f" stroke-dasharray="4 4" />
    </g>
    <g class="lane bank">
      <rect x="564" y="58" width="145" height="42" rx="6" fill="#fff8c5" stroke="#8c959f" />
      <text x="636" y="76" fill="#1f2328" text-anchor="middle" font-weight="bold">beta</text>
      <text x="636" y="91" fill="#59636e" text-anchor="middle" font-size="11">payee's bank</text>
      <line x1="636" y1="100" x2="636" y2="505" stroke="#8c959f" stroke-dasharray="4 4" />
    </g>
  </g>
  <g class="times" fill="#59636e" font-size="11" text-anchor="end">
    <text x="51" y="134">0 ms</text>
    <text x="51" y="164">0 ms</text>
    <text x="51" y="194">1 ms</text>
    <text x="51" y="224">1 ms</text>
    <text x="51" y="254">4 ms</text>
    <text x="51" y="284">6 ms</text>
    <text x="51" y="314">7 ms</text>
    <text x="51" y="344">7 ms</text>
    <text x="51" y="374">7 ms</text>
    <text x="51" y="404">9 ms</text>
    <text x="51" y="434">15 ms</text>
    <text x="51" y="464">18 ms</text>
    <text x="51" y="494">18 ms</text>
  </g>
  <g class="events">
    <g class="arrow request neutral">
      <title>Pay · step RECORDED · replica gateway · certificate=client-1 · request_id=req-pay-1</title>
      <line x1="141" y1="130" x2="297" y2="130" stroke="#1f2328" stroke-width="1.5" />
      <polygon points="306,130 297,125 297,135" fill="#1f2328" />
      <text x="223" y="124" fill="#1f2328" text-anchor="middle">Pay</text>
    </g>
    <g class="note neutral">
      <title>recorded · step RECORDED · replica gateway · certificate=client-1 · request_id=req-pay-1</title>
      <circle cx="306" cy="160" r="3.5" fill="#1f2328" />
      <rect x="316" y="150" width="69" height="20" rx="4" fill="#f6f8fa" stroke="#1f2328" />
      <text x="324" y="164" fill="#1f2328">recorded</text>
    </g>
    <g class="arrow request neutral">
      <title>Prepare · step VOTED · replica gateway · bank alpha · round 7.12</title>
      <line x1="306" y1="190" x2="462" y2="190" stroke="#1f2328" stroke-width="1.5" />
      <polygon points="471,190 462,185 462,195" fill="#1f2328" />
      <text x="388" y="184" fill="#1f2328" text-anchor="middle">Prepare</text>
    </g>
    <g class="arrow request neutral">
      <title>Prepare · step VOTED · replica gateway · bank beta · round 7.12</title>
      <line x1="306" y1="220" x2="627" y2="220" stroke="#1f2328" stroke-width="1.5" />
      <polygon points="636,220 627,215 627,225" fill="#1f2328" />
      <text x="471" y="214" fill="#1f2328" text-anchor="middle">Prepare</text>
    </g>
    <g class="arrow answer good">
      <title>vote YES (3 ms) · step VOTED · replica gateway · bank alpha · round 7.12</title>
      <line x1="471" y1="250" x2="315" y2="250" stroke="#1a7f37" stroke-width="1.5" />
      <polyline points="315,245 306,250 315,255" fill="none" stroke="#1a7f37" stroke-width="1.5" />
      <circle cx="463" cy="250" r="4" fill="#1a7f37" class="mark yes" />
      <text x="388" y="244" fill="#1a7f37" text-anchor="middle">vote YES (3 ms)</text>
    </g>
    <g class="arrow answer good">
      <title>vote YES (5 ms) · step VOTED · replica gateway · bank beta · round 7.12</title>
      <line x1="636" y1="280" x2="315" y2="280" stroke="#1a7f37" stroke-width="1.5" />
      <polyline points="315,275 306,280 315,285" fill="none" stroke="#1a7f37" stroke-width="1.5" />
      <circle cx="628" cy="280" r="4" fill="#1a7f37" class="mark yes" />
      <text x="471" y="274" fill="#1a7f37" text-anchor="middle">vote YES (5 ms)</text>
    </g>
    <g class="note good">
      <title>COMMIT (every vote yes) · step DECIDED · replica gateway · every vote yes</title>
      <circle cx="306" cy="310" r="3.5" fill="#1a7f37" />
      <rect x="316" y="300" width="194" height="20" rx="4" fill="#dafbe1" stroke="#1a7f37" />
      <text x="324" y="314" fill="#1f2328" font-weight="bold">COMMIT (every vote yes)</text>
    </g>
    <g class="arrow answer good">
      <title>COMMITTED (7 ms) · step DECIDED · replica gateway · every vote yes</title>
      <line x1="306" y1="340" x2="150" y2="340" stroke="#1a7f37" stroke-width="1.5" />
      <polyline points="150,335 141,340 150,345" fill="none" stroke="#1a7f37" stroke-width="1.5" />
      <circle cx="298" cy="340" r="4" fill="#1a7f37" class="mark yes" />
      <text x="223" y="334" fill="#1a7f37" text-anchor="middle">COMMITTED (7 ms)</text>
    </g>
    <g class="arrow decision good">
      <title>Commit · step ACKNOWLEDGED · replica gateway · bank alpha</title>
      <line x1="306" y1="370" x2="462" y2="370" stroke="#1a7f37" stroke-width="2.5" />
      <polygon points="471,370 462,365 462,375" fill="#1a7f37" />
      <text x="388" y="364" fill="#1a7f37" text-anchor="middle">Commit</text>
    </g>
    <g class="arrow answer neutral">
      <title>ack (2 ms) · step ACKNOWLEDGED · replica gateway · bank alpha</title>
      <line x1="471" y1="400" x2="315" y2="400" stroke="#1f2328" stroke-width="1.5" />
      <polyline points="315,395 306,400 315,405" fill="none" stroke="#1f2328" stroke-width="1.5" />
      <text x="388" y="394" fill="#1f2328" text-anchor="middle">ack (2 ms)</text>
    </g>
    <g class="arrow decision good">
      <title>Commit (on a Prepare) · step ACKNOWLEDGED · replica gateway · bank beta · via=prepare</title>
      <line x1="306" y1="430" x2="627" y2="430" stroke="#1a7f37" stroke-width="2.5" />
      <polygon points="636,430 627,425 627,435" fill="#1a7f37" />
      <text x="471" y="424" fill="#1a7f37" text-anchor="middle">Commit (on a Prepare)</text>
    </g>
    <g class="arrow answer neutral">
      <title>ack (3 ms) · step ACKNOWLEDGED · replica gateway · bank beta · via=prepare</title>
      <line x1="636" y1="460" x2="315" y2="460" stroke="#1f2328" stroke-width="1.5" />
      <polyline points="315,455 306,460 315,465" fill="none" stroke="#1f2328" stroke-width="1.5" />
      <text x="471" y="454" fill="#1f2328" text-anchor="middle">ack (3 ms)</text>
    </g>
    <g class="note neutral">
      <title>finished: every bank acknowledged · step FINISHED · replica gateway</title>
      <circle cx="306" cy="490" r="3.5" fill="#1f2328" />
      <rect x="316" y="480" width="236" height="20" rx="4" fill="#f6f8fa" stroke="#1f2328" />
      <text x="324" y="494" fill="#1f2328">finished: every bank acknowledged</text>
    </g>
  </g>
</svg>
"""  # noqa: E501


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def groups(root: ET.Element, kind: str) -> list[ET.Element]:
    """The <g> elements whose class starts with KIND ("lane", "arrow", "note")."""
    return [g for g in root.iter(f"{{{NS['svg']}}}g") if g.get("class", "").split(" ")[0] == kind]


def texts(element: ET.Element) -> list[str]:
    return [t.text or "" for t in element.iter(f"{{{NS['svg']}}}text")]


def all_text(root: ET.Element) -> str:
    return "\n".join(texts(root))


@pytest.mark.parametrize("case", sorted(cases.CASES))
def test_every_story_draws_its_lanes_arrows_and_notes(case: str) -> None:
    trace = cases.CASES[case]()
    diagram = layout(trace)
    svg = sequence_diagram(trace)
    root = parse(svg)
    width, height = int(root.get("width", "0")), int(root.get("height", "0"))
    assert root.get("viewBox") == f"0 0 {width} {height}" and width > 0 and height > 0
    lanes = groups(root, "lane")
    assert [texts(g) for g in lanes] == [[lane.name, lane.role] for lane in diagram.lanes]
    arrows = [e for e in diagram.events if isinstance(e, Arrow)]
    notes = [e for e in diagram.events if isinstance(e, Note)]
    assert len(groups(root, "arrow")) == len(arrows)
    assert len(groups(root, "note")) == len(notes)
    assert [texts(g)[0] for g in groups(root, "arrow")] == [a.text for a in arrows]
    assert [texts(g)[0] for g in groups(root, "note")] == [n.text for n in notes]
    assert texts(root)[:2] == [
        f"{'refund' if trace.is_refund else 'payment'} {trace.payment_id}"
        + (f" of {trace.refund_of}" if trace.is_refund else "")
        + f" {trace.status.value}"
        + (f" ({trace.reason_code})" if trace.reason_code else ""),
        texts(root)[1],
    ]
    # Everything drawn stays inside the viewBox.
    for element in root.iter():
        for name in ("x", "x1", "x2", "cx"):
            if element.get(name) is not None:
                assert 0 <= float(element.get(name, "0")) <= width, (element.tag, element.attrib)
        for name in ("y", "y1", "y2", "cy"):
            if element.get(name) is not None:
                assert 0 <= float(element.get(name, "0")) <= height, (element.tag, element.attrib)
    assert_safe(svg)


def assert_safe(svg: str) -> None:
    """No script, no style, nothing fetched: only SVG elements and presentation attributes."""
    root = parse(svg)
    allowed = {"svg", "title", "rect", "text", "g", "line", "polyline", "polygon", "circle", "a"}
    for element in root.iter():
        assert element.tag.removeprefix(f"{{{NS['svg']}}}") in allowed, element.tag
        assert not any(name.startswith("on") or name == "style" for name in element.attrib)
        assert all("url(" not in value for value in element.attrib.values())
    assert "<script" not in svg.lower() and "<!" not in svg and "<?" not in svg


def test_votes_and_the_decision_are_marked_by_colour_and_shape() -> None:
    root = parse(sequence_diagram(cases.aborted_insufficient_funds()))
    no = [g for g in groups(root, "arrow") if texts(g)[0].startswith("vote NO")]
    yes = [g for g in groups(root, "arrow") if texts(g)[0].startswith("vote YES")]
    assert no[0].get("class") == "arrow answer bad"
    assert no[0].find("svg:rect", NS) is not None  # a square for no
    assert yes[0].get("class") == "arrow answer good"
    assert yes[0].find("svg:circle", NS) is not None  # a dot for yes
    decision = [g for g in groups(root, "note") if texts(g)[0].startswith("ABORT")]
    assert decision[0].get("class") == "note bad"
    assert decision[0].find("svg:text", NS).get("font-weight") == "bold"  # type: ignore[union-attr]


def test_a_timeout_is_a_crossed_dotted_answer_and_a_re_send_is_dashed() -> None:
    root = parse(sequence_diagram(cases.aborted_timeout()))
    by_label = {texts(g)[0]: g for g in groups(root, "arrow")}
    timeout = by_label["no vote: TIMEOUT (2000 ms)"]
    assert timeout.get("class") == "arrow failure bad"
    assert timeout.find("svg:line", NS).get("stroke-dasharray") == "2 3"  # type: ignore[union-attr]
    assert len(timeout.findall("svg:g/svg:line", NS)) == 2  # the cross
    again = by_label["Abort again"]
    assert again.get("class") == "arrow resend bad"
    assert again.find("svg:line", NS).get("stroke-dasharray") == "7 4"  # type: ignore[union-attr]


def test_a_take_over_shows_a_second_replica_lane_from_mid_way_and_the_first_ending() -> None:
    root = parse(sequence_diagram(cases.taken_over()))
    lanes = groups(root, "lane")
    lost, taker = lanes[1], lanes[2]
    assert texts(lost)[0] == "gateway" and texts(taker)[0] == "gateway-2"
    assert lost.find("svg:g[@class='lane-end']", NS) is not None
    header_bottom = int(lanes[0].find("svg:line", NS).get("y1", "0"))  # type: ignore[union-attr]
    start = int(taker.find("svg:line", NS).get("y1", "0"))  # type: ignore[union-attr]
    assert start > header_bottom + 200  # its lifeline starts at the take-over, not at the top
    assert taker.find("svg:rect", NS).get("stroke-dasharray")  # type: ignore[union-attr]
    notes = {texts(g)[0]: g.get("class") for g in groups(root, "note")}
    assert notes["took over from gateway"] == "note notice"


def test_a_split_payment_has_a_lane_per_bank() -> None:
    root = parse(sequence_diagram(cases.split()))
    assert [texts(g)[0] for g in groups(root, "lane")] == [
        "client", "gateway", "alpha", "beta", "gamma", "delta"
    ]  # fmt: skip
    assert sum(texts(g)[0].startswith("Prepare") for g in groups(root, "arrow")) == 4


def test_names_and_details_are_text_never_markup() -> None:
    evil_bank, evil_replica = "<script>alert(1)</script>", "gw&\"'<b>"
    trace = answer(
        payment(payer=account(evil_bank, "A-1")),
        recorded(replica=evil_replica),
        step(VOTED, 2, sent=1, replica=evil_replica, bank=evil_bank, outcome="<img src=x>"),
        step(DECIDED, 3, replica=evil_replica, outcome="ABORT",
             detail="]]><svg onload=alert(1)>\x00\x1b\ufffe &amp;"),
    )  # fmt: skip
    svg = sequence_diagram(trace)
    assert_safe(svg)
    root = parse(svg)
    names = [texts(g)[0] for g in groups(root, "lane")]
    assert names == ["client", evil_replica, evil_bank, "beta"]
    shown = all_text(root)
    assert "vote NO: <img src=x> (1 ms)" in shown
    assert "ABORT (]]><svg onload=alert(1)>\ufffd\ufffd\ufffd &amp;)" in shown
    assert "&lt;script&gt;" in svg and "<svg onload" not in svg


def test_links_to_other_payments_only_when_asked_and_only_to_web_pages() -> None:
    plain = sequence_diagram(cases.refunded())
    assert "href" not in plain
    root = parse(sequence_diagram(cases.refunded(), payment_url=lambda p: f"/payments/{p}"))
    links = [a.get("href") for a in root.iter(f"{{{NS['svg']}}}a")]
    assert links == [f"/payments/{REFUND_ID}"]
    back = parse(sequence_diagram(cases.refund(), payment_url=lambda p: f"/payments/{p}?a&b"))
    assert [a.get("href") for a in back.iter(f"{{{NS['svg']}}}a")] == [
        f"/payments/{PAYMENT_ID}?a&b"
    ]
    for scheme in ("javascript:alert(1)//", "data:text/html,x", " JavaScript:x"):

        def url(payment_id: str, scheme: str = scheme) -> str:
            return scheme + payment_id

        assert "href" not in sequence_diagram(cases.refunded(), payment_url=url)


def test_the_committed_payment_exactly() -> None:
    assert sequence_diagram(cases.committed()) == COMMITTED_SVG


@pytest.mark.parametrize("case", sorted(cases.CASES))
def test_the_examples_in_docs_are_what_the_code_draws(case: str) -> None:
    """MINIPAY_WRITE_TRACE_EXAMPLES=1 writes them; otherwise they must be current."""
    trace: PaymentTrace = cases.CASES[case]()
    drawings = {
        EXAMPLES / f"{case}.svg": sequence_diagram(trace),
        EXAMPLES / f"{case}.txt": render_text(trace, width=100) + "\n",
    }
    if os.environ.get("MINIPAY_WRITE_TRACE_EXAMPLES") == "1":
        EXAMPLES.mkdir(parents=True, exist_ok=True)
        for path, drawing in drawings.items():
            path.write_text(drawing, encoding="utf-8")
    for path, drawing in drawings.items():
        assert path.read_text(encoding="utf-8") == drawing, (
            f"{path} is out of date: run MINIPAY_WRITE_TRACE_EXAMPLES=1 pytest {__file__}"
        )
