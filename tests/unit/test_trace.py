"""A payment's trace as values, its layout (lanes and events), its JSON and its terminal
drawing, from hand-made traces (tests/unit/trace_cases.py). The expected drawings are written
out here so that a reviewer reads what a person will see."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from minipay.client.results import AccountRef, PaymentStatus, Share
from minipay.client.trace import (
    Arrow,
    Note,
    PaymentTrace,
    Style,
    Tone,
    layout,
    trace_json,
)
from minipay.client.trace_text import can_draw_boxes, render_text
from minipay.v1 import admin_pb2, gateway_pb2
from tests.unit import trace_cases as cases
from tests.unit.trace_cases import (
    DECIDED,
    PAYMENT_ID,
    RECORDED,
    REFUND_ID,
    T0,
    VOTED,
    account,
    answer,
    payment,
    recorded,
    step,
    yes,
)

COMMITTED = """\
payment pay_7c1e4f0a9b2d4e6f8a0b1c2d3e4f5a6b COMMITTED
12.34 USD alpha/A-1 → beta/B-1

ms  client              gateway             alpha               beta
    caller              gateway             payer's bank        payee's bank
 0  │─────── Pay ──────▶│                   │                   │
 0  │                   ● recorded          │                   │
 1  │                   │───── Prepare ────▶│                   │
 1  │                   │─────────────── Prepare ──────────────▶│
 4  │                   │◀ vote YES (3 ms) ─│                   │
 6  │                   │◀────────── vote YES (5 ms) ───────────│
 7  │                   ● COMMIT (every vote yes)               │
 7  │◀──────────────────│ COMMITTED (7 ms)  │                   │
 7  │                   │━━━━━ Commit ━━━━━▶│                   │
 9  │                   │◀── ack (2 ms) ────│                   │
15  │                   │━━━━━━━━ Commit (on a Prepare) ━━━━━━━▶│
18  │                   │◀──────────── ack (3 ms) ──────────────│
18  │                   ● finished: every bank acknowledged     │
"""
ABORTED_TIMEOUT = """\
payment pay_7c1e4f0a9b2d4e6f8a0b1c2d3e4f5a6b ABORTED (TIMEOUT)
12.34 USD alpha/A-1 → beta/B-1

  ms  client              gateway             alpha               beta
      caller              gateway             payer's bank        payee's bank
   0  │─────── Pay ──────▶│                   │                   │
   0  │                   ● recorded          │                   │
   1  │                   │───── Prepare ────▶│                   │
   1  │                   │─────────────── Prepare ──────────────▶│
   3  │                   │◀ vote YES (2 ms) ─│                   │
2001  │                   │✗┈┈┈┈ no vote: TIMEOUT (2000 ms) ┈┈┈┈┈┈│
2001  │                   ● ABORT (beta did not vote within the timeout)
2001  │◀──────────────────│ ABORTED: TIMEOUT (2001 ms)            │
2001  │                   │━━━━━━ Abort ━━━━━▶│                   │
2004  │                   │◀── ack (3 ms) ────│                   │
3001  │                   │┈┈┈┈┈┈┈ Abort: no ack (1000 ms) ┈┈┈┈┈┈✗│
6001  │                   │╌╌╌╌╌╌╌╌╌╌╌╌╌ Abort again ╌╌╌╌╌╌╌╌╌╌╌╌▶│
6003  │                   │◀──────────── ack (2 ms) ──────────────│
6003  │                   ● finished: every bank acknowledged     │
"""
TAKEN_OVER_NARROW = """\
payment pay_7c1e4f0a9b2d4e6f8a0b1c2d3e4f5a6b COMMITTED
12.34 USD alpha/A-1 → beta/B-1

  ms  client   gateway  gate…y-2 alpha    beta
      caller   gateway  gateway  payer's… payee's bank
   0  │─ Pay ─▶│                 │        │
   0  │        ● recorded        │        │
   1  │        │──── Prepare ───▶│        │
   1  │        │──────── Prepare ────────▶│
   3  │        │◀────────────────│ vote YES (2 ms)
   4  │        │◀─── vote YES (3 ms) ─────│
   5  │        ● COMMIT (every vote yes)  │
   5  │◀───────│ COMMITTED (5 ms)│        │
5012  │        ✗        ● took over from gateway
5012  │                 │━━━━━━━▶│ Commit │
5012  │                 │━━━━ Commit ━━━━▶│
5015  │                 │◀───────│ ack (3 ms)
5016  │                 │◀─ ack (4 ms) ───│
5016  │                 ● finished: every bank acknowledged
"""
SPLIT_ASCII = """\
payment pay_7c1e4f0a9b2d4e6f8a0b1c2d3e4f5a6b COMMITTED
60.00 USD alpha/A-1 -> beta/B-1 10.00, gamma/C-1 20.00, delta/D-1 30.00

ms  client    gateway   alpha     beta      gamma     delta
    caller    gateway   payer'... payee'... payee'... payee's bank
 0  |-- Pay ->|         |         |         |         |
 0  |         * recorded|         |         |         |
 1  |         |-------->| Prepare |         |         |
 1  |         |----- Prepare ---->|         |         |
 1  |         |---------- Prepare --------->|         |
 1  |         |--------------- Prepare -------------->|
 3  |         |<--------| vote YES (2 ms)   |         |
 4  |         |< vote YES (3 ms) -|         |         |
 5  |         |<----- vote YES (4 ms) ------|         |
 6  |         |<---------- vote YES (5 ms) -----------|
 6  |         * COMMIT (every vote yes)     |         |
 6  |<--------| COMMITTED (6 ms)  |         |         |
 6  |         |========>| Commit  |         |         |
 6  |         |===== Commit =====>|         |         |
 6  |         |========== Commit ==========>|         |
 6  |         |=============== Commit ===============>|
 8  |         |<--------| ack (2 ms)        |         |
 9  |         |<-- ack (3 ms) ----|         |         |
10  |         |<------- ack (4 ms) ---------|         |
11  |         |<------------ ack (5 ms) --------------|
11  |         * finished: every bank acknowledged     |
"""


def arrows(trace: PaymentTrace) -> list[Arrow]:
    return [e for e in layout(trace).events if isinstance(e, Arrow)]


def notes(trace: PaymentTrace) -> list[Note]:
    return [e for e in layout(trace).events if isinstance(e, Note)]


def labels(trace: PaymentTrace, style: Style) -> list[str]:
    return [arrow.label for arrow in arrows(trace) if arrow.style is style]


# -- values -------------------------------------------------------------------------------------


def test_a_trace_becomes_plain_values_with_utc_times_and_elapsed_milliseconds() -> None:
    trace = cases.committed()
    assert trace.payment_id == PAYMENT_ID
    assert (trace.kind, trace.refund_of, trace.status) == ("payment", "", PaymentStatus.COMMITTED)
    assert trace.payer == AccountRef("alpha", "A-1")
    assert trace.shares == (Share(AccountRef("beta", "B-1"), 1234),)
    assert (trace.amount_minor_units, trace.currency) == (1234, "USD")
    assert trace.request_id == "req-trace-1"
    first, vote = trace.steps[0], trace.steps[1]
    assert first.kind == "RECORDED" and first.at == T0 and first.at.tzinfo is UTC
    assert (first.elapsed_ms, first.sent_at, first.sent_elapsed_ms) == (0, None, None)
    assert first.attributes == {"request_id": "req-pay-1", "certificate": "client-1"}
    assert (vote.kind, vote.bank, vote.outcome, vote.round) == ("VOTED", "alpha", "YES", "7.12")
    assert (vote.sent_elapsed_ms, vote.elapsed_ms) == (1, 4)
    assert vote.sent_at is not None and vote.sent_at.tzinfo is UTC


def test_elapsed_time_counts_from_the_recorded_step() -> None:
    """Not from the first step listed, nor from created_at when the step says otherwise."""
    paid = payment()
    paid.created_at.FromDatetime(datetime(2025, 5, 1, 11, 59, 59, tzinfo=UTC))
    trace = answer(paid, yes("alpha", 1, 4), step(RECORDED, 0))
    assert [s.elapsed_ms for s in trace.steps] == [4, 0]
    without_recorded = answer(payment(), yes("alpha", 1, 4))
    assert without_recorded.steps[0].elapsed_ms == 4  # from created_at (T0)


def test_a_step_without_a_time_and_an_empty_answer_do_not_break_it() -> None:
    trace = PaymentTrace.from_message(
        gateway_pb2.GetPaymentTraceResponse(steps=[gateway_pb2.TraceStep(kind=VOTED)])
    )
    assert trace.steps[0].elapsed_ms == 0
    assert trace.status is PaymentStatus.PENDING
    assert render_text(trace)
    assert render_text(PaymentTrace.from_message(gateway_pb2.GetPaymentTraceResponse()))


def test_an_admin_answer_reads_the_same() -> None:
    committed = cases.committed()
    response = admin_pb2.AdminGetPaymentTraceResponse(
        payment=payment(), steps=[recorded(), yes("alpha", 1, 4)]
    )
    assert PaymentTrace.from_message(response).steps == committed.steps[:2]


# -- lanes ----------------------------------------------------------------------------------------


COMMITTED_LANES = ["client caller", "gateway gateway", "alpha payer's bank", "beta payee's bank"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("committed", COMMITTED_LANES),
        ("taken-over", [*COMMITTED_LANES[:2], "gateway-2 gateway", *COMMITTED_LANES[2:]]),
        ("split", [*COMMITTED_LANES, "gamma payee's bank", "delta payee's bank"]),
        (
            "refund",
            ["client caller", "gateway gateway", "beta sends the refund", "alpha gets the refund"],
        ),
    ],
)
def test_lanes_are_the_client_each_replica_and_each_bank_by_role(
    case: str, expected: list[str]
) -> None:
    diagram = layout(cases.CASES[case]())
    assert [f"{lane.name} {lane.role}" for lane in diagram.lanes] == expected


def test_a_payment_within_one_bank_has_one_bank_lane() -> None:
    trace = answer(payment(payee=account("alpha", "A-2")), recorded(), yes("alpha", 1, 2))
    assert [lane.role for lane in layout(trace).lanes] == ["caller", "gateway", "payer's & payee's"]


def test_a_take_over_ends_one_replica_lane_and_starts_another_mid_way() -> None:
    diagram = layout(cases.taken_over())
    lost, taker = diagram.lanes[1], diagram.lanes[2]
    took_over = next(
        row for row, e in enumerate(diagram.events) if isinstance(e, Note) and "took over" in e.text
    )
    assert lost.taken_over and lost.first_event == 0 and lost.last_event < took_over
    assert not taker.taken_over and taker.first_event == took_over
    assert taker.last_event == len(diagram.events) - 1
    assert all(not lane.taken_over for lane in layout(cases.recovered()).lanes)


# -- events ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(cases.CASES))
def test_events_are_in_time_order_and_every_step_is_drawn(case: str) -> None:
    trace = cases.CASES[case]()
    diagram = layout(trace)
    times = [event.at_ms for event in diagram.events]
    assert times == sorted(times)
    assert {event.step for event in diagram.events} == set(range(len(trace.steps)))


def test_a_committed_payment_shows_votes_decision_delivery_and_its_answer() -> None:
    trace = cases.committed()
    drawn = arrows(trace)
    assert labels(trace, Style.REQUEST) == ["Pay", "Prepare", "Prepare"]
    assert labels(trace, Style.DECISION) == ["Commit", "Commit (on a Prepare)"]
    votes = [a for a in drawn if a.label == "vote YES"]
    assert [(a.source, a.target, a.sent_ms, a.at_ms, a.tone) for a in votes] == [
        ("bank:alpha", "replica:gateway", 1, 4, Tone.GOOD),
        ("bank:beta", "replica:gateway", 1, 6, Tone.GOOD),
    ]
    reply = next(a for a in drawn if a.target == "client")
    assert (reply.label, reply.took_ms, reply.text) == ("COMMITTED", 7, "COMMITTED (7 ms)")
    assert [n.text for n in notes(trace)] == [
        "recorded",
        "COMMIT (every vote yes)",
        "finished: every bank acknowledged",
    ]


@pytest.mark.parametrize(
    ("case", "vote", "style", "decision"),
    [
        ("aborted-insufficient-funds", "vote NO: INSUFFICIENT_FUNDS", Style.ANSWER,
         "ABORT (alpha voted no: INSUFFICIENT_FUNDS)"),
        ("aborted-timeout", "no vote: TIMEOUT", Style.FAILURE,
         "ABORT (beta did not vote within the timeout)"),
        ("aborted-bank-unavailable", "no vote: BANK_UNAVAILABLE", Style.FAILURE,
         "ABORT (beta could not be reached)"),
    ],
)  # fmt: skip
def test_an_aborted_payment_shows_the_cause(
    case: str, vote: str, style: Style, decision: str
) -> None:
    trace = cases.CASES[case]()
    no = next(a for a in arrows(trace) if a.label == vote)
    assert (no.style, no.tone, no.target) == (style, Tone.BAD, "replica:gateway")
    assert any(n.text == decision and n.tone is Tone.BAD for n in notes(trace))
    reply = next(a for a in arrows(trace) if a.target == "client")
    assert reply.label == f"ABORTED: {trace.reason_code}" and reply.tone is Tone.BAD


def test_a_missing_acknowledgement_is_a_failure_and_the_decision_is_sent_again() -> None:
    trace = cases.aborted_timeout()
    assert labels(trace, Style.FAILURE) == ["no vote: TIMEOUT", "Abort: no ack"]
    assert labels(trace, Style.RESEND) == ["Abort again"]
    assert labels(trace, Style.DECISION) == ["Abort"]


def test_a_bank_that_asks_gets_the_decision() -> None:
    trace = cases.recovered()
    asked = [a for a in arrows(trace) if a.step == 6]
    assert [(a.source, a.target, a.label, a.style, a.at_ms) for a in asked] == [
        ("bank:beta", "replica:gateway", "GetDecision?", Style.REQUEST, 4210),
        ("replica:gateway", "bank:beta", "decision: COMMIT", Style.ANSWER, 4212),
    ]


def test_after_a_take_over_the_new_replica_finishes_and_the_lost_call_is_not_answered() -> None:
    trace = answer(
        payment(),
        recorded(),
        yes("alpha", 1, 3),
        step(cases.TAKEN_OVER, 5000, replica="gateway-2", from_replica="gateway"),
        step(DECIDED, 5000, replica="gateway-2", outcome="ABORT", detail="presumed abort"),
    )
    assert not any(a.target == "client" for a in arrows(trace))
    assert [(n.lane, n.text, n.tone) for n in notes(trace)][1:] == [
        ("replica:gateway-2", "took over from gateway", Tone.NOTICE),
        ("replica:gateway-2", "ABORT (presumed abort)", Tone.BAD),
    ]


def test_a_refund_and_its_payment_name_each_other() -> None:
    refunded = notes(cases.refunded())[-1]
    assert refunded.text == f"refund {REFUND_ID}: 5.00 USD COMMITTED"
    assert (refunded.link, refunded.tone) == (REFUND_ID, Tone.LINK)
    refund = cases.refund()
    assert labels(refund, Style.REQUEST)[0] == "Refund"
    link = next(n for n in notes(refund) if n.link)
    assert (link.text, link.link) == (f"refund of {PAYMENT_ID}", PAYMENT_ID)


def test_a_step_of_an_unknown_kind_is_a_plain_note() -> None:
    drawn = [(n.text, n.tone) for n in notes(cases.unknown_kind())]
    assert ("KIND_42 beta FAST a newer step", Tone.NEUTRAL) in drawn
    assert ("UNSPECIFIED", Tone.NEUTRAL) in drawn


# -- JSON -----------------------------------------------------------------------------------------


def test_the_json_form_has_the_payment_and_every_step() -> None:
    data = trace_json(cases.split())
    assert json.loads(json.dumps(data)) == data
    assert data["amount"] == "60.00" and data["amount_minor_units"] == 6000
    assert data["shares"][2] == {
        "bank": "delta",
        "account": "D-1",
        "amount": "30.00",
        "amount_minor_units": 3000,
    }
    assert data["steps"][1] == {
        "kind": "VOTED",
        "at": "2025-05-01T12:00:00.003000Z",
        "sent_at": "2025-05-01T12:00:00.001000Z",
        "elapsed_ms": 3,
        "sent_elapsed_ms": 1,
        "replica": "gateway",
        "bank": "alpha",
        "round": "7.12",
        "outcome": "YES",
        "detail": "",
        "attributes": {},
    }
    assert len(data["steps"]) == len(cases.split().steps)


# -- the terminal's drawing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "width", "boxes", "expected"),
    [
        ("committed", 100, True, COMMITTED),
        ("aborted-timeout", 100, True, ABORTED_TIMEOUT),
        ("taken-over", 60, True, TAKEN_OVER_NARROW),
        ("split", 72, False, SPLIT_ASCII),
    ],
)
def test_the_timeline_as_a_person_reads_it(
    case: str, width: int, boxes: bool, expected: str
) -> None:
    assert render_text(cases.CASES[case](), width=width, boxes=boxes) + "\n" == expected


@pytest.mark.parametrize("case", sorted(cases.CASES))
@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_the_timeline_fits_the_width_and_ascii_stays_ascii(case: str, width: int) -> None:
    trace = cases.CASES[case]()
    for boxes in (True, False):
        drawing = render_text(trace, width=width, boxes=boxes)
        assert max(len(line) for line in drawing.splitlines()) <= width
    assert render_text(trace, width=width, boxes=False).isascii()


def test_text_from_the_gateway_cannot_drive_the_terminal() -> None:
    hostile = "gw\x1b[2J\x07"
    trace = answer(
        payment(),
        recorded(replica=hostile),
        step(DECIDED, 3, replica=hostile, outcome="ABORT", detail="no\r\nway\x9b31m"),
    )
    drawing = render_text(trace)
    assert "gw?[2J?" in drawing and "no??way?31m" in drawing
    assert not any(ord(c) < 0x20 and c != "\n" for c in drawing)
    assert "\x9b" not in drawing


def test_box_characters_only_when_the_output_can_print_them() -> None:
    assert can_draw_boxes(io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    assert not can_draw_boxes(io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    assert not can_draw_boxes(io.TextIOWrapper(io.BytesIO(), encoding="latin-1"))
