"""A payment's story (its trace) as plain values, and the layout every drawing of it shares.

``PaymentTrace.from_message`` turns the answer of ``Payments/GetPaymentTrace`` or
``Admin/GetPaymentTrace`` into frozen dataclasses: times are timezone-aware UTC datetimes and
each step also carries the milliseconds elapsed since the payment was recorded.
``trace_json`` is the same as JSON (``--json``).

``layout`` turns a trace into the parts of a sequence diagram of its two-phase commit: the
lanes (the client; each gateway replica that took a step, so a take-over shows a second
replica lane; the payer's bank; each payee's bank) and the events in time order, each an
``Arrow`` between two lanes or a ``Note`` on one. The terminal's timeline
(``minipay.client.trace_text``) and the console's SVG (``console.diagram``) both draw this
layout, one row per event, so they always tell the same story. A step of a kind this client
does not know (from a newer gateway) is drawn as a plain note.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# A trace's payees: the only share of a plain payment, or a split's.
from minipay.client.results import STATUS_OF_MESSAGE, AccountRef, PaymentStatus, Share, utc
from minipay.money import format_minor_units
from minipay.v1 import admin_pb2, gateway_pb2

TraceResponse = gateway_pb2.GetPaymentTraceResponse | admin_pb2.AdminGetPaymentTraceResponse

_KIND_PREFIX = "TRACE_STEP_KIND_"
_MILLISECOND = timedelta(milliseconds=1)


class StepKind(enum.StrEnum):
    """The kinds of step this client knows (``TraceStepKind`` without its prefix)."""

    RECORDED = "RECORDED"
    REPLAYED = "REPLAYED"
    VOTED = "VOTED"
    DECIDED = "DECIDED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    NOT_ACKNOWLEDGED = "NOT_ACKNOWLEDGED"
    ASKED = "ASKED"
    TAKEN_OVER = "TAKEN_OVER"
    REFUND = "REFUND"
    FINISHED = "FINISHED"


# Outcomes as the gateway writes them: a vote, a decision, the answer to a bank that asked.
YES = "YES"
COMMIT = "COMMIT"
ABORT = "ABORT"
# A vote that never came: drawn as a missing answer rather than a no.
NO_ANSWER = frozenset({"TIMEOUT", "BANK_UNAVAILABLE"})


def kind_name(number: int) -> str:
    """The step kind's name without its prefix ("VOTED"); a number this client's API does not
    know (a newer gateway's kind) as "KIND_<number>"."""
    try:
        return gateway_pb2.TraceStepKind.Name(number).removeprefix(_KIND_PREFIX)
    except ValueError:
        return f"KIND_{number}"


def _elapsed_ms(moment: datetime, origin: datetime) -> int:
    return (moment - origin) // _MILLISECOND


@dataclass(frozen=True)
class TraceStep:
    """One step, as the replica that took it recorded it."""

    kind: str  # a StepKind, or the name of a kind this client does not know
    at: datetime  # when it happened (for a message and its answer: when the answer came)
    sent_at: datetime | None  # a message and its answer: when the message left
    elapsed_ms: int  # ``at`` in milliseconds since the payment was recorded
    sent_elapsed_ms: int | None  # the same for ``sent_at``
    replica: str  # the gateway replica that took the step
    bank: str  # the bank it concerns; "" when none
    round: str  # the 2PC round, "<replica token>.<round>"; "" when none
    outcome: str  # YES or a reason (a vote); COMMIT or ABORT (a decision, an ack, an answer)
    detail: str  # words a person reads
    attributes: dict[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def from_message(cls, message: gateway_pb2.TraceStep, origin: datetime) -> TraceStep:
        at = utc(message.at) if message.HasField("at") else origin
        sent_at = utc(message.sent_at) if message.HasField("sent_at") else None
        return cls(
            kind=kind_name(message.kind),
            at=at,
            sent_at=sent_at,
            elapsed_ms=_elapsed_ms(at, origin),
            sent_elapsed_ms=None if sent_at is None else _elapsed_ms(sent_at, origin),
            replica=message.replica,
            bank=message.bank,
            round=message.round,
            outcome=message.outcome,
            detail=message.detail,
            attributes=dict(message.attributes),
        )

    @property
    def sent_ms(self) -> int:
        """When the step's message left, or when it happened for a step without one."""
        return self.elapsed_ms if self.sent_elapsed_ms is None else self.sent_elapsed_ms


@dataclass(frozen=True)
class PaymentTrace:
    """A payment (or a refund) as the caller sees it, and the steps it took, in order."""

    payment_id: str
    kind: str  # "payment" or "refund"
    refund_of: str  # a refund: the payment it gives back; "" otherwise
    status: PaymentStatus
    reason_code: str  # an aborted payment's reason, as the caller may see it
    payer: AccountRef
    shares: tuple[Share, ...]  # one per payee
    amount_minor_units: int
    currency: str
    steps: tuple[TraceStep, ...]
    request_id: str

    @property
    def is_refund(self) -> bool:
        return self.kind == "refund"

    @classmethod
    def from_message(cls, message: TraceResponse, request_id: str = "") -> PaymentTrace:
        payment = message.payment
        origin = _origin(message)
        if payment.shares:
            shares = tuple(
                Share(AccountRef(s.payee.bank, s.payee.account), s.amount.minor_units)
                for s in payment.shares
            )
        else:
            payee = AccountRef(payment.payee.bank, payment.payee.account)
            shares = (Share(payee, payment.amount.minor_units),)
        return cls(
            payment_id=payment.payment_id,
            kind="refund" if payment.kind == gateway_pb2.PAYMENT_KIND_REFUND else "payment",
            refund_of=payment.refund_of,
            status=STATUS_OF_MESSAGE.get(payment.status, PaymentStatus.PENDING),
            reason_code=payment.reason_code,
            payer=AccountRef(payment.payer.bank, payment.payer.account),
            shares=shares,
            amount_minor_units=payment.amount.minor_units,
            currency=payment.amount.currency,
            steps=tuple(TraceStep.from_message(step, origin) for step in message.steps),
            request_id=request_id,
        )


def _origin(message: TraceResponse) -> datetime:
    """Time zero: when the payment was recorded (its RECORDED step, else its created_at), else
    its earliest step."""
    recorded = gateway_pb2.TRACE_STEP_KIND_RECORDED
    for step in message.steps:
        if step.kind == recorded and step.HasField("at"):
            return utc(step.at)
    if message.payment.HasField("created_at"):
        return utc(message.payment.created_at)
    times = [utc(step.at) for step in message.steps if step.HasField("at")]
    return min(times, default=datetime.fromtimestamp(0, UTC))


# -- JSON --------------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def step_json(step: TraceStep) -> dict[str, Any]:
    return {
        "kind": step.kind,
        "at": _iso(step.at),
        "sent_at": _iso(step.sent_at),
        "elapsed_ms": step.elapsed_ms,
        "sent_elapsed_ms": step.sent_elapsed_ms,
        "replica": step.replica,
        "bank": step.bank,
        "round": step.round,
        "outcome": step.outcome,
        "detail": step.detail,
        "attributes": dict(sorted(step.attributes.items())),
    }


def trace_json(trace: PaymentTrace) -> dict[str, Any]:
    """The trace for ``--json``: the payment in brief and every step (times in ISO 8601 UTC,
    amounts as text and minor units). The caller adds its request id."""

    def amount(minor_units: int) -> dict[str, Any]:
        return {
            "amount": format_minor_units(minor_units, trace.currency),
            "amount_minor_units": minor_units,
        }

    return {
        "payment_id": trace.payment_id,
        "kind": trace.kind,
        "refund_of": trace.refund_of,
        "status": trace.status.value,
        "reason_code": trace.reason_code,
        "payer": {"bank": trace.payer.bank, "account": trace.payer.account},
        **amount(trace.amount_minor_units),
        "currency": trace.currency,
        "shares": [
            {"bank": s.payee.bank, "account": s.payee.account, **amount(s.amount_minor_units)}
            for s in trace.shares
        ],
        "steps": [step_json(step) for step in trace.steps],
    }


def caption(trace: PaymentTrace, to: str = "→") -> tuple[str, str]:
    """Two lines: what it is ("payment pay_… ABORTED (TIMEOUT)", "refund pay_… of pay_…
    COMMITTED") and what it moves ("12.34 USD alpha/A-1 → beta/B-1"; a split lists each
    payee's amount)."""
    if trace.is_refund:
        what = f"refund {trace.payment_id} of {trace.refund_of}"
    else:
        what = f"payment {trace.payment_id}"
    status = trace.status.value + (f" ({trace.reason_code})" if trace.reason_code else "")
    total = format_minor_units(trace.amount_minor_units, trace.currency)
    if len(trace.shares) == 1:
        payees = str(trace.shares[0].payee)
    else:
        payees = ", ".join(
            f"{s.payee} {format_minor_units(s.amount_minor_units, trace.currency)}"
            for s in trace.shares
        )
    return f"{what} {status}", f"{total} {trace.currency} {trace.payer} {to} {payees}"


# -- the layout ---------------------------------------------------------------------------------


class LaneKind(enum.StrEnum):
    CLIENT = "client"
    REPLICA = "replica"
    BANK = "bank"


class Style(enum.StrEnum):
    """How an arrow is drawn."""

    REQUEST = "request"  # a message that asks: Pay, Prepare, GetDecision
    ANSWER = "answer"  # its answer: a vote, an ack, a decision given to a bank that asked
    DECISION = "decision"  # Commit or Abort delivered to a bank
    RESEND = "resend"  # a message sent again: a decision after a missing ack, a repeated key
    FAILURE = "failure"  # an answer that never came: no vote in time, a bank unreachable


class Tone(enum.StrEnum):
    """What an arrow or a note means for the payment: drawings give each its colour."""

    NEUTRAL = "neutral"
    GOOD = "good"  # a yes vote, a commit
    BAD = "bad"  # a no vote, a missing answer, an abort
    NOTICE = "notice"  # a take-over
    LINK = "link"  # names another payment: a refund, or the payment a refund gives back


@dataclass(frozen=True)
class Lane:
    """A party of the diagram. Its lifeline runs over the rows first_event..last_event: a
    replica other than the first starts at its first event, and one that another replica
    took over from ends at its last (``taken_over``)."""

    key: str  # "client", "replica:<name>" or "bank:<name>"
    kind: LaneKind
    name: str
    role: str  # "caller", "gateway", "payer's bank", "gets the refund"...
    first_event: int
    last_event: int
    taken_over: bool

    def alive(self, row: int) -> bool:
        return self.first_event <= row <= self.last_event


@dataclass(frozen=True)
class Arrow:
    """A message from one lane to another, drawn in the row of ``at_ms``."""

    source: str  # lane keys
    target: str
    sent_ms: int  # when the exchange began: for an answer, when its request left
    at_ms: int  # when this message was sent, or for an answer, when it came (its row)
    label: str
    style: Style
    tone: Tone
    step: int  # the index of the step it draws, in PaymentTrace.steps

    @property
    def took_ms(self) -> int:
        """An answer's round trip: from its request to its arrival (0 for a request)."""
        return self.at_ms - self.sent_ms

    @property
    def text(self) -> str:
        """The label as drawn: an answer's (or a missing answer's) with its round trip."""
        if self.took_ms > 0 and self.style in (Style.ANSWER, Style.FAILURE):
            return f"{self.label} ({self.took_ms} ms)"
        return self.label


@dataclass(frozen=True)
class Note:
    """Something that happened on one lane: recorded, decided, taken over, finished..."""

    lane: str
    at_ms: int
    text: str
    tone: Tone
    step: int
    link: str = ""  # the id of another payment it names (a refund, or the refunded payment)


Event = Arrow | Note


@dataclass(frozen=True)
class Diagram:
    trace: PaymentTrace
    lanes: tuple[Lane, ...]
    events: tuple[Event, ...]  # in time order; one row each

    def column(self, key: str) -> int:
        """The lane's position, left to right."""
        return next(i for i, lane in enumerate(self.lanes) if lane.key == key)


CLIENT = "client"


def replica_lane(name: str) -> str:
    return f"replica:{name}"


def bank_lane(name: str) -> str:
    return f"bank:{name}"


def layout(trace: PaymentTrace) -> Diagram:
    """The lanes and the events of TRACE, events in time order (steps taken at the same
    millisecond keep the order the gateway gave them)."""
    story = _Story(trace)
    drawn = [event for index, step in enumerate(trace.steps) for event in story.draw(index, step)]
    events = tuple(sorted(drawn, key=lambda event: event.at_ms))
    return Diagram(trace, _lanes(trace, events), events)


class _Story:
    """Draws the steps in order, remembering what a step's drawing depends on: who holds the
    client's call, whether another replica took over, the decision, the banks whose
    acknowledgement is missing."""

    def __init__(self, trace: PaymentTrace) -> None:
        self.trace = trace
        self.index = 0  # the step being drawn
        self.recorded_by: str | None = None  # the replica that holds the client's call
        self.recorded_ms = 0
        self.taken_over = False
        self.decision = ""
        self.unacknowledged: set[str] = set()  # banks a decision must be sent to again
        self._drawers: dict[str, Callable[[TraceStep], list[Event]]] = {
            StepKind.RECORDED: self._recorded,
            StepKind.REPLAYED: self._replayed,
            StepKind.VOTED: self._voted,
            StepKind.DECIDED: self._decided,
            StepKind.ACKNOWLEDGED: self._acknowledged,
            StepKind.NOT_ACKNOWLEDGED: self._not_acknowledged,
            StepKind.ASKED: self._asked,
            StepKind.TAKEN_OVER: self._taken_over,
            StepKind.REFUND: self._refund,
            StepKind.FINISHED: self._finished,
        }

    def draw(self, index: int, step: TraceStep) -> list[Event]:
        self.index = index
        return self._drawers.get(step.kind, self._unknown)(step)

    def arrow(
        self,
        source: str,
        target: str,
        sent_ms: int,
        at_ms: int,
        label: str,
        style: Style,
        tone: Tone = Tone.NEUTRAL,
    ) -> Arrow:
        return Arrow(source, target, sent_ms, at_ms, label, style, tone, self.index)

    def note(self, step: TraceStep, text: str, tone: Tone = Tone.NEUTRAL, link: str = "") -> Note:
        """A note on the lane of the replica that took STEP."""
        return Note(replica_lane(step.replica), step.elapsed_ms, text, tone, self.index, link)

    @property
    def request(self) -> str:
        return "Refund" if self.trace.is_refund else "Pay"

    def _recorded(self, step: TraceStep) -> list[Event]:
        replica, at = replica_lane(step.replica), step.elapsed_ms
        self.recorded_by, self.recorded_ms = step.replica, at
        events: list[Event] = [
            self.arrow(CLIENT, replica, step.sent_ms, at, self.request, Style.REQUEST),
            self.note(step, "recorded"),
        ]
        if self.trace.refund_of:
            link = self.trace.refund_of
            events.append(self.note(step, f"refund of {link}", Tone.LINK, link))
        return events

    def _replayed(self, step: TraceStep) -> list[Event]:
        replica, at = replica_lane(step.replica), step.elapsed_ms
        again = f"{self.request} again (same key)"
        answer = f"replayed {step.outcome}".rstrip()
        return [
            self.arrow(CLIENT, replica, at, at, again, Style.RESEND),
            self.arrow(replica, CLIENT, at, at, answer, Style.ANSWER, _tone(step.outcome)),
        ]

    def _voted(self, step: TraceStep) -> list[Event]:
        replica, bank, sent = replica_lane(step.replica), bank_lane(step.bank), step.sent_ms
        if step.outcome == YES:
            label, style, tone = "vote YES", Style.ANSWER, Tone.GOOD
        elif step.outcome in NO_ANSWER:
            label, style, tone = f"no vote: {step.outcome}", Style.FAILURE, Tone.BAD
        elif step.outcome:
            label, style, tone = f"vote NO: {step.outcome}", Style.ANSWER, Tone.BAD
        else:  # a vote whose outcome the caller may not see
            label, style, tone = "vote", Style.ANSWER, Tone.NEUTRAL
        return [
            self.arrow(replica, bank, sent, sent, "Prepare", Style.REQUEST),
            self.arrow(bank, replica, sent, step.elapsed_ms, label, style, tone),
        ]

    def _decided(self, step: TraceStep) -> list[Event]:
        outcome, tone = step.outcome, _tone(step.outcome)
        self.decision = outcome
        why = step.detail or (self.trace.reason_code if outcome == ABORT else "")
        text = outcome or "decided"
        events: list[Event] = [self.note(step, f"{text} ({why})" if why else text, tone)]
        # The answer to the client's call, unless the replica that held the call is gone.
        if step.replica == self.recorded_by and not self.taken_over:
            answer = {COMMIT: "COMMITTED", ABORT: "ABORTED"}.get(outcome, outcome or "answer")
            if outcome == ABORT and self.trace.reason_code:
                answer += f": {self.trace.reason_code}"
            replica, at = replica_lane(step.replica), step.elapsed_ms
            events.append(
                self.arrow(replica, CLIENT, self.recorded_ms, at, answer, Style.ANSWER, tone)
            )
        return events

    def _decision_sent(self, step: TraceStep) -> tuple[str, Tone, bool]:
        """The decision's word ("Commit", "Abort again"), its tone, and whether it is sent
        again after a missing acknowledgement."""
        outcome = step.outcome or self.decision
        again = step.bank in self.unacknowledged
        word = (outcome.capitalize() if outcome else "Decision") + (" again" if again else "")
        return word, _tone(outcome), again

    def _acknowledged(self, step: TraceStep) -> list[Event]:
        replica, bank, sent = replica_lane(step.replica), bank_lane(step.bank), step.sent_ms
        word, tone, again = self._decision_sent(step)
        self.unacknowledged.discard(step.bank)
        if step.attributes.get("via", "").lower() == "prepare":
            word += " (on a Prepare)"
        style = Style.RESEND if again else Style.DECISION
        return [
            self.arrow(replica, bank, sent, sent, word, style, tone),
            self.arrow(bank, replica, sent, step.elapsed_ms, "ack", Style.ANSWER),
        ]

    def _not_acknowledged(self, step: TraceStep) -> list[Event]:
        replica, bank = replica_lane(step.replica), bank_lane(step.bank)
        word, _, _ = self._decision_sent(step)
        self.unacknowledged.add(step.bank)
        label = f"{word}: no ack"
        return [
            self.arrow(replica, bank, step.sent_ms, step.elapsed_ms, label, Style.FAILURE, Tone.BAD)
        ]

    def _asked(self, step: TraceStep) -> list[Event]:
        replica, bank, sent = replica_lane(step.replica), bank_lane(step.bank), step.sent_ms
        answer = f"decision: {step.outcome}" if step.outcome else "answer"
        return [
            self.arrow(bank, replica, sent, sent, "GetDecision?", Style.REQUEST),
            self.arrow(
                replica, bank, sent, step.elapsed_ms, answer, Style.ANSWER, _tone(step.outcome)
            ),
        ]

    def _taken_over(self, step: TraceStep) -> list[Event]:
        self.taken_over = True
        lost = step.attributes.get("from_replica", "")
        if not lost:
            text = "took over"
        elif lost == step.replica:
            text = "took over after a restart"
        else:
            text = f"took over from {lost}"
        return [self.note(step, text, Tone.NOTICE)]

    def _refund(self, step: TraceStep) -> list[Event]:
        refund_id = step.attributes.get("refund_id", "")
        minor_units = step.attributes.get("amount_minor_units", "")
        text = f"refund {refund_id}".rstrip()
        if minor_units.isascii() and minor_units.isdigit():
            amount = format_minor_units(int(minor_units), self.trace.currency)
            text += f": {amount} {self.trace.currency}"
        return [self.note(step, f"{text} {step.outcome}".rstrip(), Tone.LINK, refund_id)]

    def _finished(self, step: TraceStep) -> list[Event]:
        return [self.note(step, "finished: every bank acknowledged")]

    def _unknown(self, step: TraceStep) -> list[Event]:
        words = (step.kind, step.bank, step.outcome, step.detail)
        return [self.note(step, " ".join(word for word in words if word))]


def _tone(outcome: str) -> Tone:
    if outcome in (COMMIT, "COMMITTED", YES):
        return Tone.GOOD
    if outcome in (ABORT, "ABORTED"):
        return Tone.BAD
    return Tone.NEUTRAL


def _touches(event: Event) -> tuple[str, ...]:
    return (event.source, event.target) if isinstance(event, Arrow) else (event.lane,)


def _lanes(trace: PaymentTrace, events: tuple[Event, ...]) -> tuple[Lane, ...]:
    """Client, replicas (in the order they first took a step, one taken over from just before
    the one that took over), the payer's bank, the payees' banks, any other bank."""
    rows: dict[str, list[int]] = {}
    for row, event in enumerate(events):
        for key in _touches(event):
            rows.setdefault(key, []).append(row)
    last = max(len(events) - 1, 0)

    def lane(key: str, kind: LaneKind, name: str, role: str, late: bool, ended: bool) -> Lane:
        mine = rows.get(key, [0])
        return Lane(
            key, kind, name, role, mine[0] if late else 0, mine[-1] if ended else last, ended
        )

    lost = _lost(trace)
    lanes = [lane(CLIENT, LaneKind.CLIENT, "client", "caller", False, False)]
    for number, name in enumerate(dict.fromkeys(_replica_names(trace))):
        key, ended = replica_lane(name), name in lost
        lanes.append(lane(key, LaneKind.REPLICA, name or "gateway", "gateway", number > 0, ended))
    parties = [trace.payer.bank, *(share.payee.bank for share in trace.shares)]
    drawn = [key.removeprefix(bank_lane("")) for key in rows if key.startswith(bank_lane(""))]
    for name in dict.fromkeys([*filter(None, parties), *drawn]):
        key, role = bank_lane(name), _bank_role(trace, name)
        lanes.append(lane(key, LaneKind.BANK, name or "bank", role, False, False))
    return tuple(lanes)


def _lost(trace: PaymentTrace) -> set[str]:
    """The replicas another took over from and that took no step after."""
    lost: set[str] = set()
    for step in trace.steps:
        lost.discard(step.replica)
        source = step.attributes.get("from_replica", "")
        if step.kind == StepKind.TAKEN_OVER and source != step.replica:
            lost.add(source)
    lost.discard("")
    return lost


def _replica_names(trace: PaymentTrace) -> Iterator[str]:
    for step in trace.steps:
        if step.kind == StepKind.TAKEN_OVER and step.attributes.get("from_replica"):
            yield step.attributes["from_replica"]
        yield step.replica


def _bank_role(trace: PaymentTrace, bank: str) -> str:
    pays = trace.payer.bank == bank
    paid = any(share.payee.bank == bank for share in trace.shares)
    if trace.is_refund:
        roles = {
            (True, True): "sends & gets refund",
            (True, False): "sends the refund",
            (False, True): "gets the refund",
        }
    else:
        roles = {
            (True, True): "payer's & payee's",
            (True, False): "payer's bank",
            (False, True): "payee's bank",
        }
    return roles.get((pays, paid), "bank")
