"""Delivering stored decisions to the banks, until every bank of each payment acknowledges
it; then the payment is complete (COMMITTED or ABORTED in the log).

A decision waits in its bank's outbox. It rides on the next Prepare to that bank (the
coordinator takes it with ``riders``, and the bank applies it in the transaction of its
votes), or goes alone in a Commit or Abort when no round is under way, or once it has waited
DELIVERY_MAX_DELAY. It is sent again until the bank acknowledges it, each decision with its
own backoff, beside the rest:

- a decision that went unacknowledged once no longer rides on Prepares, so it can never
  fail a round's new payments;
- a call the bank refuses (it answered with an error: something in the call is at fault) is
  split in two for the next try, so one decision the bank cannot take ends up alone and
  holds up no other;
- calls carry at most MAX_PER_CALL decisions, and nothing a caller sent: a queued decision
  keeps no request id or other metadata.

Completions (every bank acknowledged) ride on the next round's decision transaction
(``take_completions``), or are written alone after COMPLETION_DELAY; so do the trace's steps
of each answer (acknowledged, or not), which wait in the trace's buffer for any write. A
balance read first delivers every decision on its account's payments that its bank may not
have applied yet, whichever replica made it (``deliver_before_read``).

Plain Python over two seams: the payment log (a database) and ``Recipients`` (the banks,
``server.gateway.banks`` in production, a fake in the unit tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Connection

from server.common.db import Database
from server.common.faults import Faults
from server.common.logs import REQUEST_ID, event
from server.common.metrics import PHASE_SECONDS
from server.gateway import payment_log, trace
from server.gateway.payment_state import (
    DELIVERING_STATES,
    CoordinatorState,
    Delivered,
    PaymentView,
)

log = logging.getLogger(__name__)

# Decisions wait for a Prepare to the same bank to ride on; they go alone when no round is
# under way, or once the oldest has waited DELIVERY_MAX_DELAY.
DELIVERY_DELAY = 0.01
DELIVERY_MAX_DELAY = 0.2
RESEND_BACKOFF_FIRST, RESEND_BACKOFF_MAX = 0.05, 2.0
# Decisions in one call: a bounded request, whatever piled up while a bank was away.
MAX_PER_CALL = 500
# Completions are written with the next round's decisions, or alone after this long.
COMPLETION_DELAY = 0.2


class Recipients(Protocol):
    """The banks, as delivery needs them."""

    async def deliver(
        self,
        bank: str,
        commit: bool,
        payment_ids: Sequence[str],
        timeout: float,
        request_ids: Sequence[str] = (),
    ) -> Delivered:
        """Sends the decision on PAYMENT_IDS; the bank's acknowledgements."""


@dataclass
class Pending:
    """A decision its bank has not acknowledged yet."""

    commit: bool
    since: float  # when it was queued (monotonic)
    failures: int = 0  # sends in a row it went unacknowledged
    due: float = 0.0  # not sent again before this (monotonic)
    group: int = MAX_PER_CALL  # most decisions it goes with: halved by each refused call


@dataclass
class Outbox:
    """One bank's decisions not acknowledged yet, by payment id."""

    pending: dict[str, Pending] = field(default_factory=dict)
    sending: set[str] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, payment_id: str, commit: bool) -> None:
        if payment_id not in self.pending:
            self.pending[payment_id] = Pending(commit, time.monotonic())
            self.arrived.set()

    def riders(self) -> tuple[list[str], list[str]]:
        """(commits, aborts) that may ride on a Prepare: those not on their way that never
        went unacknowledged."""
        commits: list[str] = []
        aborts: list[str] = []
        for payment_id, item in self.pending.items():
            if len(commits) + len(aborts) >= MAX_PER_CALL:
                break
            if payment_id not in self.sending and not item.failures:
                (commits if item.commit else aborts).append(payment_id)
        self.sending.update(commits)
        self.sending.update(aborts)
        return commits, aborts

    def calls(self, moment: float, round_under_way: bool) -> list[tuple[bool, list[str]]]:
        """The calls to send now, (commit?, payment ids) each: every decision that is due,
        none with more others than its group allows. Decisions never sent yet wait while a
        round under way may carry them, unless the oldest has waited DELIVERY_MAX_DELAY."""
        waiting = [
            (payment_id, item)
            for payment_id, item in self.pending.items()
            if payment_id not in self.sending and item.due <= moment
        ]
        fresh = [item.since for _, item in waiting if not item.failures]
        if round_under_way and fresh and moment - min(fresh) < DELIVERY_MAX_DELAY:
            waiting = [(payment_id, item) for payment_id, item in waiting if item.failures]
        calls: list[tuple[bool, list[str]]] = []
        for commit in (True, False):
            # Smallest group first: the first decision of a call sets how many go in it.
            same = sorted((item.group, pid) for pid, item in waiting if item.commit == commit)
            call: list[str] = []
            size = 0
            for group, payment_id in same:
                size = size if call else group
                call.append(payment_id)
                if len(call) == size:
                    calls.append((commit, call))
                    call = []
            if call:
                calls.append((commit, call))
        for _, ids in calls:
            self.sending.update(ids)
        return calls

    def answered(self, sent: Sequence[str], acknowledged: set[str], refused: bool) -> None:
        """The bank's answer to SENT: acknowledged ones are done; the others go again after
        their backoff, in smaller calls if the bank refused the call."""
        moment = time.monotonic()
        for payment_id in sent:
            self.sending.discard(payment_id)
            item = self.pending.get(payment_id)
            if item is None:
                continue
            if payment_id in acknowledged:
                del self.pending[payment_id]
                continue
            item.failures += 1
            backoff = RESEND_BACKOFF_FIRST * 2 ** min(item.failures - 1, 10)
            item.due = moment + min(backoff, RESEND_BACKOFF_MAX)
            if refused:
                item.group = max(1, len(sent) // 2)
        if any(payment_id in self.pending for payment_id in sent):
            self.arrived.set()

    def next_wake(self) -> float | None:
        """Seconds until a decision not on its way is due; None if there is none."""
        dues = [item.due for pid, item in self.pending.items() if pid not in self.sending]
        return max(min(dues) - time.monotonic(), 0.0) if dues else None


class Delivery:
    def __init__(
        self,
        db: Database,
        recipients: Recipients,
        bank_names: Sequence[str],
        timeout: float,
        faults: Faults | None = None,
        round_under_way: Callable[[], bool] = lambda: False,
        steps: trace.Trace | None = None,
    ) -> None:
        self._db = db
        self._recipients = recipients
        self._bank_names = list(bank_names)
        self._timeout = max(timeout, 1.0)
        self._faults = faults or Faults()
        self._round_under_way = round_under_way
        self._outboxes = {bank: Outbox() for bank in bank_names}
        # Payment id -> (owner, banks still to acknowledge its decision).
        self._unacknowledged: dict[str, tuple[int, set[str]]] = {}
        # Payment id -> owner, of payments every bank acknowledged: to be marked complete.
        self._completed: dict[str, int] = {}
        self._completions = asyncio.Event()
        self._writing = 0  # completion writes under way
        self._background: list[asyncio.Task[None]] = []
        # The story of each decision sent: its steps wait for a write (this one's, if none).
        self.trace = steps or trace.Trace("", enabled=False)
        self.trace.on_waiting(self._completions.set)

    def start(self) -> None:
        """Starts the loops that send decisions and write completions (once)."""
        if self._background:
            return
        loops = [self._completion_loop(), *(self._delivery_loop(b) for b in self._bank_names)]
        # A context of their own: they serve every caller, not the request that started them.
        self._background = [
            asyncio.create_task(loop, context=contextvars.Context()) for loop in loops
        ]

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background = []
        await self._write_completions()  # a clean stop keeps what it knows

    @property
    def undelivered(self) -> int:
        """Decided payments not every bank has acknowledged yet."""
        return len(self._unacknowledged)

    @property
    def quiet(self) -> bool:
        """Nothing to deliver and no completion to write."""
        return (
            not self._unacknowledged
            and not self._completed
            and not self._writing
            and not self.trace.waiting
            and not any(outbox.pending for outbox in self._outboxes.values())
        )

    def post(self, payment: PaymentView) -> None:
        """Queues a stored decision for every bank of the payment (once; not again while its
        completion waits to be written)."""
        if (
            payment.state not in DELIVERING_STATES
            or payment.id in self._unacknowledged
            or payment.id in self._completed
        ):
            return
        commit = payment.state is CoordinatorState.COMMITTING
        banks = payment.banks
        self._unacknowledged[payment.id] = (payment.owner, set(banks))
        for bank in banks:
            self._outboxes[bank].add(payment.id, commit)

    def riders(self, bank: str) -> tuple[list[str], list[str]]:
        """(commits, aborts) to ride on a Prepare to BANK; the coordinator reports the bank's
        answer with ``answered``."""
        if self._faults.is_on("withhold_decisions"):
            return [], []
        return self._outboxes[bank].riders()

    def answered(
        self,
        bank: str,
        sent: Sequence[str],
        acknowledged: set[str],
        sent_ms: int = 0,
        round_id: str = "",
    ) -> None:
        """What BANK acknowledged of the decisions SENT on a Prepare (none if it failed),
        sent at SENT_MS in round ROUND_ID."""
        self._traced(bank, sent, acknowledged, sent_ms, trace.VIA_PREPARE, round_id)
        self._outboxes[bank].answered(sent, acknowledged, refused=False)
        self._note(bank, sent, acknowledged)

    def take_completions(self) -> list[tuple[str, int]]:
        """(payment id, owner) of the payments every bank acknowledged, for the caller to
        mark complete in its transaction (``payment_log.complete``)."""
        completed, self._completed = self._completed, {}
        return list(completed.items())

    async def deliver_before_read(self, bank: str, account: str) -> set[str]:
        """Delivers, before a balance is read (or a refund takes money back), every decision
        on the account's payments that its bank may not have applied yet, whichever replica
        made it: commits and aborts. Returns the ids of those the bank did not acknowledge."""
        pending = await self._db.statements(lambda c: payment_log.undelivered(c, bank, account))
        missing: set[str] = set()
        for commit in (True, False):
            ids = [p.id for p in pending if (p.state is CoordinatorState.COMMITTING) == commit]
            for start in range(0, len(ids), MAX_PER_CALL):
                sent = ids[start : start + MAX_PER_CALL]
                sent_ms = trace.now_ms()
                # The reader's own request id: this call is theirs, not a queued one.
                answer = await self._send(bank, commit, sent, (REQUEST_ID.get(),))
                self._traced(bank, sent, answer.acknowledged, sent_ms, commit=commit)
                self._acknowledged_elsewhere(bank, sent, answer.acknowledged)
                missing.update(set(sent) - answer.acknowledged)
        return missing

    def _acknowledged_elsewhere(
        self, bank: str, sent: Sequence[str], acknowledged: set[str]
    ) -> None:
        """Acknowledgements got outside the outbox: the outbox need not send them again."""
        outbox = self._outboxes[bank]
        acked = [payment_id for payment_id in sent if payment_id in acknowledged]
        for payment_id in acked:
            if payment_id not in outbox.sending:
                outbox.pending.pop(payment_id, None)
        self._note(bank, acked, acknowledged)

    def _traced(
        self,
        bank: str,
        sent: Sequence[str],
        acknowledged: set[str],
        sent_ms: int,
        via: str = "",
        round_id: str = "",
        commit: bool = True,
    ) -> None:
        """The trace's steps of BANK's answer to decisions SENT at SENT_MS (before the
        outbox forgets them or counts the failure): each decision, and the sends of it
        that went unacknowledged before, as the outbox knows them."""
        if not self.trace.enabled:
            return
        pending = self._outboxes[bank].pending
        decisions = []
        for payment_id in sent:
            item = pending.get(payment_id)
            if item is None:
                decisions.append((payment_id, commit, 0))
            else:
                decisions.append((payment_id, item.commit, item.failures))
        self.trace.answered(bank, decisions, acknowledged, sent_ms, via, round_id)

    def _note(self, bank: str, sent: Sequence[str], acknowledged: set[str]) -> None:
        """Logs the bank's answer; a payment every bank acknowledged is complete."""
        acked = [payment_id for payment_id in sent if payment_id in acknowledged]
        if acked:
            event(log, "decision_acknowledged", bank=bank, payment_ids=acked)
        missing = [payment_id for payment_id in sent if payment_id not in acknowledged]
        if missing:
            event(log, "decision_not_acknowledged", bank=bank, payment_ids=missing)
        for payment_id in acked:
            owner, banks = self._unacknowledged.get(payment_id, (0, set()))
            banks.discard(bank)
            if banks:
                self._faults.crash_point("crash_after_first_commit_ack")
            elif payment_id in self._unacknowledged:
                del self._unacknowledged[payment_id]
                self._completed[payment_id] = owner
                self._completions.set()

    async def _delivery_loop(self, bank: str) -> None:
        """Sends one bank the decisions no Prepare carried, again until it acknowledges."""
        outbox = self._outboxes[bank]
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outbox.arrived.wait(), outbox.next_wake())
            outbox.arrived.clear()
            await asyncio.sleep(DELIVERY_DELAY)
            if self._faults.is_on("withhold_decisions"):
                await asyncio.sleep(RESEND_BACKOFF_MAX)
                continue
            calls = outbox.calls(time.monotonic(), self._round_under_way())
            for number, (commit, ids) in enumerate(calls):
                event(log, "commit_sent" if commit else "abort_sent", bank=bank, payment_ids=ids)
                sent_ms = trace.now_ms()
                answer = await self._send(bank, commit, ids)
                self._traced(bank, ids, answer.acknowledged, sent_ms, commit=commit)
                outbox.answered(ids, answer.acknowledged, answer.refused)
                self._note(bank, ids, answer.acknowledged)
                if answer.unreachable:
                    # The bank is not answering: the rest of this pass waits with it.
                    for _, unsent in calls[number + 1 :]:
                        outbox.answered(unsent, set(), refused=False)
                    break

    async def _send(
        self, bank: str, commit: bool, ids: Sequence[str], request_ids: Sequence[str] = ()
    ) -> Delivered:
        started = time.perf_counter()
        try:
            return await self._recipients.deliver(bank, commit, ids, self._timeout, request_ids)
        except Exception:
            log.exception("delivering decisions to bank %s failed", bank)
            return Delivered(set(), unreachable=True)
        finally:
            PHASE_SECONDS.labels("deliver").observe(time.perf_counter() - started)

    async def _completion_loop(self) -> None:
        """Writes completions and trace steps no round carried (when no round came for a
        while)."""
        while True:
            await self._completions.wait()
            self._completions.clear()
            await asyncio.sleep(COMPLETION_DELAY)
            await self._write_completions()

    async def _write_completions(self) -> None:
        """Completions and the trace's waiting steps that no other write carried."""
        completed = self.take_completions()
        steps = self.trace.take()
        if not completed and not steps:
            return
        self._writing += 1

        def write(connection: Connection) -> None:
            payment_log.complete(connection, completed)
            trace.write(connection, steps)

        try:
            await self._db.statements(write)
        except Exception:
            log.exception("cannot mark payments complete")
            self._completed.update(completed)
            self.trace.put_back(steps)
            self._completions.set()
        finally:
            self._writing -= 1
