"""A payment's story (its trace): every step its two-phase commit took, as the replica that
took it saw it, kept in ``payment_steps`` and read back for ``GetPaymentTrace``.

Writing costs no transaction of its own. Each step rides in a transaction that already
runs, as one multi-row INSERT (``write``): RECORDED and REPLAYED in a round's record
transaction, VOTED and DECIDED in its decision transaction (a take-over's too), TAKEN_OVER in
the claim. A step that has no transaction (an acknowledgement, a bank's question) waits in
this replica's bounded buffer (``Trace``) for the next write, whatever payment it is for;
when nothing writes for a moment, delivery's completion write carries it. So a step is
durable once a transaction carried it: a replica killed with steps in its buffer loses them
(the recovery that follows writes steps of its own). FINISHED is not a row: it is the
payment's ``completed_at``, read with the steps.

Times are milliseconds of the writing replica's clock; each step names that replica. What a
viewer may see of a story is ``visible_steps``'s rule: the payer all of it, the payee the
steps of a committed payment without the payer's bank's votes, questions and the payer's
request details, an admin everything.
"""

from __future__ import annotations

import enum
import functools
import itertools
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import Connection, delete

from server.common import fastsql
from server.common.logs import event
from server.common.vocabulary import Status
from server.gateway.models import Base
from server.gateway.payment_state import CoordinatorState, PaymentView, Vote, status_of

log = logging.getLogger(__name__)

# Steps waiting for a transaction, per replica; beyond this many, new ones are dropped (and
# counted): a bound on memory while the database is away.
BUFFER_LIMIT = 50_000
# A repeated step of one payment (a replay of its key, a bank asking again) is written this
# many times per replica and payment, so that a client or a bank cannot grow a story
# without bound; the rest are counted in the log.
REPEATS_KEPT = 10
_REPEATS_TRACKED = 10_000
# The most steps one story is read with.
MAX_STEPS = 1000
# Rows per INSERT: 10 parameters each, within SQLite's and PostgreSQL's limits.
_ROWS_PER_STATEMENT = 3000
_VALUE_MAX = 200  # attributes' values and details, in characters
STEPS = Base.metadata.tables["payment_steps"]


class Kind(enum.StrEnum):
    """What a step is (the API's ``TraceStepKind`` without its prefix)."""

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


# Outcomes, as the API spells them.
YES, COMMIT, ABORT = "YES", "COMMIT", "ABORT"
VIA_PREPARE = "prepare"


# A step as it is written: the values of the columns ``_COLUMNS`` names, in that order (the
# writer makes these straight away: a payment's steps cost a few tuples, not objects).
Row = tuple[str, str, int, int | None, str, str, str, str, str, str | None]


_JSON = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps makes one per call


def _attributes(values: Mapping[str, str]) -> str:
    """Attributes as stored: compact JSON, each value cut to _VALUE_MAX (empty ones left
    out)."""
    kept = {key: value[:_VALUE_MAX] for key, value in values.items() if value}
    return _JSON.encode(kept)


@functools.lru_cache(maxsize=256)
def _request_attributes(request_id: str, certificate: str = "") -> str | None:
    """The attributes of a RECORDED or REPLAYED step, as stored: made once for a batch's
    items, which share their call's request id and certificate."""
    values = {"request_id": request_id, "certificate": certificate}
    return _attributes(values) if request_id or certificate else None


@dataclass(frozen=True, slots=True)
class Step:
    """One step as read back: AT (and for a message and its answer, SENT: when the message
    left) in milliseconds since the epoch of REPLICA's clock."""

    payment_id: str
    kind: Kind
    at_ms: int
    replica: str
    sent_ms: int | None = None
    bank: str = ""
    round: str = ""  # "<replica token>.<round number>"
    outcome: str = ""  # YES or a reason; COMMIT or ABORT; a refund's status
    detail: str = ""  # words a person reads
    attributes: Mapping[str, str] = field(default_factory=dict)

    def row(self) -> Row:
        """The step as it is written."""
        return _row(
            self.payment_id,
            self.kind.value,
            self.at_ms,
            self.replica,
            self.sent_ms,
            self.bank,
            self.round,
            self.outcome,
            self.detail,
            self.attributes,
        )


def now_ms() -> int:
    return int(time.time() * 1000)


def ms(seconds: float) -> int:
    return int(seconds * 1000)


# -- causes of a decision -------------------------------------------------------------------


def vote_outcome(vote: Vote) -> str:
    """A vote as a VOTED step's outcome: YES, or the reason of the no."""
    return YES if vote.yes else str(vote.reason_code or "ABORTED")


def cause_of(outcome: str, bank: str) -> str:
    """Why a round aborted: its first no, OUTCOME from BANK."""
    if outcome == "TIMEOUT":
        return f"{bank} did not vote within the timeout"
    if outcome == "BANK_UNAVAILABLE":
        return f"{bank} could not be reached"
    return f"{bank} voted no: {outcome}"


ALL_YES = "every vote yes"
PRESUMED_ABORT = "presumed abort after a take-over"
ROUND_LOST = "presumed abort: its round was lost"


# -- the writer -----------------------------------------------------------------------------


class Trace:
    """This replica's trace writer: it makes the steps (named for this replica), as rows, and
    keeps those that wait for a transaction. Off (``enabled`` False, a benchmark's switch) it
    makes and keeps nothing."""

    def __init__(self, replica: str, enabled: bool = True, limit: int = BUFFER_LIMIT) -> None:
        self.replica = replica
        self.enabled = enabled
        self._limit = limit
        self._waiting: list[Row] = []
        self.dropped = 0  # steps the full buffer turned away
        # Counted from the event loop (questions) and a database thread (replays, made in the
        # record transaction): hence the lock.
        self._repeats: OrderedDict[tuple[str, Kind], int] = OrderedDict()
        self._repeats_lock = threading.Lock()
        self._on_waiting: list[Callable[[], None]] = []

    # -- the buffer

    def on_waiting(self, callback: Callable[[], None]) -> None:
        """CALLBACK is called when steps start waiting (delivery's completion write takes
        them when no other write comes)."""
        self._on_waiting.append(callback)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def keep(self, rows: Iterable[Row]) -> None:
        """ROWS wait for the next write (any transaction of this replica)."""
        if not self.enabled:
            return
        added = list(rows)
        room = max(self._limit - len(self._waiting), 0)
        if len(added) > room:
            if not self.dropped:  # the first loss is logged, not each one
                event(log, "trace_buffer_full", limit=self._limit)
            self.dropped += len(added) - room
            added = added[:room]
        if added:
            self._waiting.extend(added)
            for callback in self._on_waiting:
                callback()

    def take(self) -> list[Row]:
        """Every waiting step, for a transaction to write (``put_back`` if it fails)."""
        taken, self._waiting = self._waiting, []
        return taken

    def put_back(self, rows: Sequence[Row]) -> None:
        """Steps a failed transaction did not write: they wait for the next one, first."""
        if rows:
            self._waiting[:0] = rows[: max(self._limit - len(self._waiting), 0)]

    def _repeat_allowed(self, payment_id: str, kind: Kind) -> bool:
        key = (payment_id, kind)
        with self._repeats_lock:
            count = self._repeats.get(key, 0) + 1
            self._repeats[key] = count
            self._repeats.move_to_end(key)
            if len(self._repeats) > _REPEATS_TRACKED:
                self._repeats.popitem(last=False)
        if count == REPEATS_KEPT + 1:
            event(log, "trace_repeats_not_kept", payment_id=payment_id, kind=kind.value)
        return count <= REPEATS_KEPT

    # -- the steps

    def recorded(self, payment: PaymentView, request_id: str, certificate: str) -> Row | None:
        if not self.enabled:
            return None
        return (
            payment.id,
            _RECORDED,
            ms(payment.created_at),
            None,
            self.replica,
            "",
            "",
            "",
            "",
            _request_attributes(request_id, certificate),
        )

    def replayed(self, payment: PaymentView, request_id: str) -> Row | None:
        if not self.enabled or not self._repeat_allowed(payment.id, Kind.REPLAYED):
            return None
        outcome = {
            CoordinatorState.PREPARING: "",  # still being decided: the answer waits for it
            CoordinatorState.COMMITTING: "COMMITTED",
            CoordinatorState.COMMITTED: "COMMITTED",
        }.get(payment.state, "ABORTED")
        return (
            payment.id,
            _REPLAYED,
            now_ms(),
            None,
            self.replica,
            "",
            "",
            outcome,
            "",
            _request_attributes(request_id),
        )

    def voted(
        self, payment_id: str, bank: str, round_id: str, sent_ms: int, at_ms: int, vote: Vote
    ) -> Row:
        if vote.yes:  # the common case, as a plain tuple: a round has hundreds
            return (payment_id, _VOTED, at_ms, sent_ms, self.replica, bank, round_id, YES, "", None)
        outcome = vote_outcome(vote)
        detail = f"no vote in {at_ms - sent_ms} ms" if outcome == "TIMEOUT" else vote.reason
        return _row(
            payment_id, _VOTED, at_ms, self.replica, sent_ms, bank, round_id, outcome, detail
        )

    def decided(self, payment: PaymentView, why: str, round_id: str = "") -> Row | None:
        """The decision stored for PAYMENT just now (``decided_now``), and WHY."""
        if not self.enabled or not payment.decided_now:
            return None
        outcome = COMMIT if status_of(payment.state) is Status.COMMITTED else ABORT
        at = ms(payment.decided_at if payment.decided_at is not None else time.time())
        return _row(payment.id, _DECIDED, at, self.replica, None, "", round_id, outcome, why)

    def answered(
        self,
        bank: str,
        decisions: Sequence[tuple[str, bool, int]],
        acknowledged: set[str],
        sent_ms: int,
        via: str = "",
        round_id: str = "",
    ) -> None:
        """BANK's answer to DECISIONS sent at SENT_MS, each (payment id, commit?, sends of it
        that went unacknowledged before): an acknowledgement for each it acknowledged (with
        its attempts after a failure), a missing one for each that failed for the first
        time (later failures only count). The steps wait for a transaction."""
        if not self.enabled or not decisions:
            return
        at, me = now_ms(), self.replica
        plain = _attributes({"via": via}) if via else None  # the common case, serialized once
        rows: list[Row] = []
        for payment_id, commit, failed in decisions:
            attributes = plain
            if payment_id in acknowledged:
                kind = _ACKNOWLEDGED
                if failed:
                    attributes = _attributes({"via": via, "attempts": str(failed + 1)})
            elif failed == 0:
                kind = _NOT_ACKNOWLEDGED
            else:
                continue
            outcome = COMMIT if commit else ABORT
            rows.append(
                (payment_id, kind, at, sent_ms, me, bank, round_id, outcome, "", attributes)
            )
        self.keep(rows)

    def asked(self, bank: str, answers: Mapping[str, str], sent_ms: int) -> None:
        """BANK asked for the decision on payments this gateway knows, asked at SENT_MS;
        ANSWERS: each payment's answer (COMMIT, ABORT or PENDING)."""
        if not self.enabled:
            return
        at = now_ms()
        self.keep(
            _row(payment_id, _ASKED, at, self.replica, sent_ms, bank, outcome=answer)
            for payment_id, answer in answers.items()
            if self._repeat_allowed(payment_id, Kind.ASKED)
        )

    def taken_over(self, payment_id: str, from_replica: str) -> Row | None:
        if not self.enabled:
            return None
        attributes = {"from_replica": from_replica} if from_replica else {}
        return _row(payment_id, _TAKEN_OVER, now_ms(), self.replica, attributes=attributes)

    def refund(self, payment_id: str, refund_id: str, amount: int, status: str) -> Row | None:
        """A refund REFUND_ID of AMOUNT minor units of PAYMENT_ID was recorded (status
        PENDING), committed or aborted: a step of the refunded payment's story, for the
        refund's own record or decision transaction to write (``write``)."""
        if not self.enabled:
            return None
        attributes = {"refund_id": refund_id, "amount_minor_units": str(amount)}
        return _row(
            payment_id, _REFUND, now_ms(), self.replica, outcome=status, attributes=attributes
        )


def _row(
    payment_id: str,
    kind: str,
    at_ms: int,
    replica: str,
    sent_ms: int | None = None,
    bank: str = "",
    round_id: str = "",
    outcome: str = "",
    detail: str = "",
    attributes: Mapping[str, str] | None = None,
) -> Row:
    return (
        payment_id,
        kind,
        at_ms,
        sent_ms,
        replica,
        bank,
        round_id,
        outcome,
        detail[:_VALUE_MAX],
        _attributes(attributes) if attributes else None,
    )


# The kinds as plain strings, as the database drivers take them.
_RECORDED, _REPLAYED, _VOTED, _DECIDED = (
    Kind.RECORDED.value,
    Kind.REPLAYED.value,
    Kind.VOTED.value,
    Kind.DECIDED.value,
)
_ACKNOWLEDGED, _NOT_ACKNOWLEDGED = Kind.ACKNOWLEDGED.value, Kind.NOT_ACKNOWLEDGED.value
_ASKED, _TAKEN_OVER, _REFUND = Kind.ASKED.value, Kind.TAKEN_OVER.value, Kind.REFUND.value


# -- writing and reading ----------------------------------------------------------------------

_COLUMNS = "payment_id, kind, at_ms, sent_ms, replica, bank, round, outcome, detail, attributes"
_ROW_MARKS = "(" + ", ".join("?" * 10) + ")"


@functools.lru_cache(maxsize=256)
def _insert(count: int) -> str:
    """INSERT of COUNT steps in one statement (its text made once per count)."""
    return f"INSERT INTO payment_steps ({_COLUMNS}) VALUES " + ", ".join([_ROW_MARKS] * count)


def write(connection: Connection, rows: Sequence[Row | None]) -> None:
    """Writes the steps ROWS (None: a step not taken) in the caller's transaction, in one
    INSERT (a chunk of _ROWS_PER_STATEMENT at a time, past that)."""
    kept = [row for row in rows if row is not None]
    for start in range(0, len(kept), _ROWS_PER_STATEMENT):
        chunk = kept[start : start + _ROWS_PER_STATEMENT]
        values = list(itertools.chain.from_iterable(chunk))
        fastsql.execute(connection, _insert(len(chunk)), values)


def replica_names(connection: Connection, tokens: Iterable[int | None]) -> dict[int, str]:
    """The replica each fencing token was an incarnation of."""
    wanted = sorted({token for token in tokens if token is not None})
    if not wanted:
        return {}
    rows = fastsql.execute(
        connection,
        "SELECT token, replica FROM incarnations WHERE token IN ({in})",
        wanted,
        len(wanted),
    )
    return {int(token): str(name) for token, name in rows}


_SELECT = f"SELECT {_COLUMNS} FROM payment_steps WHERE payment_id = ? ORDER BY id LIMIT ?"
_FINISHED = (
    "SELECT p.completed_at, i.replica FROM payments p "
    "LEFT JOIN incarnations i ON i.token = p.owner_token WHERE p.id = ?"
)


def read(connection: Connection, payment_id: str) -> list[Step]:
    """PAYMENT_ID's story, in the order the database saw its steps (its first MAX_STEPS),
    ending with FINISHED once every bank acknowledged the decision."""
    steps = [_step_of(row) for row in fastsql.execute(connection, _SELECT, [payment_id, MAX_STEPS])]
    for completed_at, replica in fastsql.execute(connection, _FINISHED, [payment_id]):
        if completed_at is not None:
            steps.append(Step(payment_id, Kind.FINISHED, ms(completed_at), replica or ""))
    return steps


def _step_of(row: Sequence[object]) -> Step:
    payment_id, kind, at_ms, sent_ms, replica, bank, round_id, outcome, detail, attributes = row
    return Step(
        payment_id=str(payment_id),
        kind=Kind(str(kind)),
        at_ms=int(at_ms),  # type: ignore[call-overload]
        sent_ms=None if sent_ms is None else int(sent_ms),  # type: ignore[call-overload]
        replica=str(replica),
        bank=str(bank),
        round=str(round_id),
        outcome=str(outcome),
        detail=str(detail),
        attributes=json.loads(str(attributes)) if attributes else {},
    )


def forget(connection: Connection, payment_ids: Sequence[str]) -> int:
    """Deletes the steps of PAYMENT_IDS: a payment's story goes with the payment (retention,
    in the transaction that deletes the payments). Returns how many steps went."""
    if not payment_ids:
        return 0
    deleted = connection.execute(
        delete(STEPS).where(STEPS.c.payment_id.in_(sorted(set(payment_ids))))
    )
    return int(deleted.rowcount or 0)


# -- who sees what ----------------------------------------------------------------------------


class Viewer(enum.Enum):
    PAYER = "payer"
    PAYEE = "payee"
    ADMIN = "admin"


# What only the payer's side may see: their bank's votes and questions, and their retries.
_ABOUT_ONE_BANK = frozenset({Kind.VOTED, Kind.NOT_ACKNOWLEDGED, Kind.ASKED})


def visible_steps(steps: Sequence[Step], viewer: Viewer, payment: PaymentView) -> list[Step]:
    """What VIEWER may see of PAYMENT's story. An admin sees every step; the payer every
    step but refunds not committed (the payee's affair until then, as an incoming payment
    is the payee's); the payee (of a committed payment: the caller checks) the steps without
    the payer's request details, replays, or any other bank's votes and questions."""
    if viewer is Viewer.ADMIN:
        return list(steps)
    if viewer is Viewer.PAYER:
        return [s for s in steps if s.kind is not Kind.REFUND or s.outcome == "COMMITTED"]
    shown = []
    for step in steps:
        if step.kind is Kind.REPLAYED:
            continue
        if step.kind in _ABOUT_ONE_BANK and step.bank != payment.to_bank:
            continue
        if step.kind is Kind.RECORDED:
            step = replace(step, attributes={})
        shown.append(step)
    return shown
