"""The payment coordinator: runs two-phase commit for each payment between the payer's bank
and the payee's bank, and decides each payment's outcome.

Per payment: record it durably (PREPARING, owned by this replica) -> Prepare at both banks
concurrently within the timeout -> decide (commit only on two yes votes) and store the
decision -> send Commit or Abort until every bank acknowledges -> mark it finished. The
decision is on disk before any bank hears it. Each phase goes through a ``Batcher``, so
concurrent payments share one transaction and one call per bank per round; the per-payment
rules stay in ``payment_state``.

Exactly one live replica drives a payment: the one whose fencing token the payment carries.
Every write for a payment is conditional on that token, so a replica that was paused and lost
the payment to a survivor can no longer change it; it answers its caller from the row. A
payment whose owner's lease has passed is taken over: aborted if undecided (presumed abort),
its decision delivered otherwise.

Plain Python over three seams: the payment log (a database), ``Participants`` (the banks,
reached through ``server.gateway.banks`` in production and a fake in the unit tests) and
``Owner`` (this replica's fencing token, from ``server.gateway.replicas``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from server.common.clock import now
from server.common.db import Database
from server.common.errors import InvalidArgument
from server.common.faults import Faults
from server.common.logs import REQUEST_ID, event
from server.common.metrics import IN_DOUBT, PAYMENTS, PHASE_SECONDS
from server.common.vocabulary import Leg, Reason
from server.gateway import payment_log
from server.gateway.batching import Batcher
from server.gateway.models import CoordinatorState
from server.gateway.payment_log import Deciding, PaymentOrder, PaymentView, Recorded, RecordKind
from server.gateway.payment_state import (
    Decision,
    Outcome,
    Status,
    Vote,
    abort,
    decide,
    legs_by_bank,
    no_vote,
    status_of,
)

log = logging.getLogger(__name__)

RESEND_BACKOFF_MAX = 2.0
ABORT_ACK_WAIT = 1.0
# How often a replica looks at a payment another replica is deciding.
ROW_POLL_FIRST, ROW_POLL_MAX = 0.02, 0.25
KEY_REUSED = (
    "this idempotency key was already used for a different payment; use a new key for a new payment"
)


class Participants(Protocol):
    """The banks, as the coordinator needs them."""

    async def prepare(
        self, bank: str, legs: Sequence[Leg], timeout: float, request_ids: Sequence[str]
    ) -> dict[str, Vote]:
        """The bank's vote on each payment the legs belong to (a failed call: every no)."""

    async def deliver(
        self,
        bank: str,
        commit: bool,
        payment_ids: Sequence[str],
        timeout: float,
        request_ids: Sequence[str],
    ) -> set[str]:
        """Sends the decision; returns the payments the bank acknowledged."""


class Owner(Protocol):
    """This replica, as the coordinator needs it: the fencing token of its incarnation."""

    @property
    def token(self) -> int: ...


@dataclass(frozen=True)
class PrepareItem:
    payment_id: str
    legs: tuple[Leg, ...]
    deadline: float
    request_id: str


@dataclass(frozen=True)
class DecisionItem:
    payment_id: str
    request_id: str


def outcome_of(payment: PaymentView, replayed: bool = False) -> Outcome:
    return Outcome(
        payment.id, status_of(payment.state), payment.reason_enum, payment.reason, replayed
    )


class Coordinator:
    def __init__(
        self,
        db: Database,
        participants: Participants,
        owner: Owner,
        bank_names: Sequence[str],
        timeout: float,
        batch_max: int,
        faults: Faults | None = None,
    ) -> None:
        self._db = db
        self._participants = participants
        self._owner = owner
        self._timeout = timeout
        self._faults = faults or Faults()
        self._record = Batcher(self._record_round, batch_max)
        self._decide = Batcher(self._decide_round, batch_max)
        self._complete = Batcher(self._complete_round, batch_max)
        self._prepare = {name: Batcher(self._prepare_round(name), batch_max) for name in bank_names}
        self._deliver_rounds = {
            (name, commit): Batcher(self._decision_round(name, commit), batch_max)
            for name in bank_names
            for commit in (True, False)
        }
        # Payment id -> the task running its 2PC; it runs to the end even if the caller goes.
        self._in_flight: dict[str, asyncio.Task[Outcome]] = {}
        # Payment id -> (the task delivering its decision, done once every bank has it).
        self._finishing: dict[str, tuple[asyncio.Task[None], asyncio.Future[None]]] = {}
        IN_DOUBT.set_function(lambda: len(self._in_flight) + len(self._finishing))

    # -- the payment's life --------------------------------------------------------------

    async def pay(self, order: PaymentOrder, wait: float | None = None) -> Outcome:
        """The payment's outcome. A repeat of its key waits at most WAIT seconds (the caller's
        deadline) for a payment still being decided elsewhere, then answers PENDING."""
        with PHASE_SECONDS.labels("record").time():
            recorded = await self._record.submit((order, REQUEST_ID.get()))
        if recorded.kind is RecordKind.KEY_REUSED:
            raise InvalidArgument(KEY_REUSED)
        assert recorded.payment is not None
        if recorded.kind is RecordKind.REPLAY:
            return await self._replay(recorded.payment, wait)
        return await asyncio.shield(self._in_flight[recorded.payment.id])

    def _start(self, payment: PaymentView, request_id: str) -> None:
        log.debug(
            "payment_recorded",
            extra={
                "fields": {
                    "payment_id": payment.id,
                    "amount_minor_units": payment.amount,
                    "currency": payment.currency,
                }
            },
        )
        task = asyncio.create_task(self._run(payment, request_id))
        self._in_flight[payment.id] = task
        task.add_done_callback(lambda _: self._in_flight.pop(payment.id, None))

    async def _run(self, payment: PaymentView, request_id: str) -> Outcome:
        REQUEST_ID.set(request_id)
        self._faults.crash_point("crash_after_record")
        legs = legs_by_bank(
            payment.id,
            payment.from_bank,
            payment.from_account,
            payment.to_bank,
            payment.to_account,
            payment.amount,
            payment.currency,
        )
        with PHASE_SECONDS.labels("prepare").time():
            votes = await asyncio.gather(
                *(
                    self._prepare[bank].submit(
                        PrepareItem(payment.id, bank_legs, payment.deadline, request_id)
                    )
                    for bank, bank_legs in legs.items()
                )
            )
        with PHASE_SECONDS.labels("decide").time():
            stored = await self._store_decision(payment, decide(votes))
        if stored.owner_token != payment.owner_token:
            # Paused past the lease: a survivor took the payment. Write nothing; tell the
            # caller what the row says.
            event(log, "payment_lost", payment_id=payment.id, to_owner=stored.owner_token)
            return await self._outcome_from_row(payment.id, self._timeout)
        self._faults.crash_point("crash_after_decision")
        delivered = self._finish_in_background(stored)
        # The client waits for the banks to apply the decision, so its next balance read
        # shows it, but only so long: the outcome is fixed already, and delivery goes on
        # until every bank acknowledges. An abort moves no money, so it waits less.
        wait = self._timeout if stored.state is CoordinatorState.COMMITTING else ABORT_ACK_WAIT
        try:
            await asyncio.wait_for(asyncio.shield(delivered), timeout=min(wait, self._timeout))
        except TimeoutError:
            event(log, "decision_delivery_slow", payment_id=payment.id)
        return outcome_of(stored)

    async def _store_decision(self, payment: PaymentView, decision: Decision) -> PaymentView:
        owner = payment.owner_token if payment.owner_token is not None else self._owner.token
        stored: PaymentView = await self._decide.submit(Deciding(payment.id, decision, owner))
        if stored.decided_now:
            PAYMENTS.labels(status_of(stored.state).value, stored.reason_code or "none").inc()
            event(
                log,
                "decision",
                payment_id=payment.id,
                decision=stored.state.value,
                reason_code=stored.reason_code,
            )
        return stored

    def _finish_in_background(self, payment: PaymentView) -> asyncio.Future[None]:
        """Starts delivering the decision (once); returns what is done when banks have it."""
        if payment.id not in self._finishing:
            delivered = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._finish(payment, delivered))
            self._finishing[payment.id] = (task, delivered)
            task.add_done_callback(lambda _: self._finishing.pop(payment.id, None))
        return self._finishing[payment.id][1]

    async def _finish(self, payment: PaymentView, delivered: asyncio.Future[None]) -> None:
        commit = status_of(payment.state) is Status.COMMITTED
        with PHASE_SECONDS.labels("deliver").time():
            await asyncio.gather(
                *(self._deliver(bank, payment.id, commit) for bank in payment.banks)
            )
        delivered.set_result(None)
        assert payment.owner_token is not None
        await self._complete.submit((payment.id, payment.owner_token))
        log.debug(
            "payment_finished",
            extra={
                "fields": {
                    "payment_id": payment.id,
                    "outcome": "COMMITTED" if commit else "ABORTED",
                }
            },
        )

    async def _deliver(self, bank: str, payment_id: str, commit: bool) -> None:
        """Sends the decision to one bank until it acknowledges."""
        batcher = self._deliver_rounds[(bank, commit)]
        backoff = 0.05
        while not await batcher.submit(DecisionItem(payment_id, REQUEST_ID.get())):
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESEND_BACKOFF_MAX)
        if commit:
            self._faults.crash_point("crash_after_first_commit_ack")

    async def _replay(self, payment: PaymentView, wait: float | None) -> Outcome:
        if payment.state is not CoordinatorState.PREPARING:
            return outcome_of(payment, replayed=True)
        running = self._in_flight.get(payment.id)
        if running is not None:
            outcome = await asyncio.shield(running)
        else:
            # Another replica (or a crashed one) has it: wait on the row for its outcome.
            outcome = await self._outcome_from_row(payment.id, wait or self._timeout)
        return Outcome(
            outcome.payment_id, outcome.status, outcome.reason_code, outcome.reason, True
        )

    async def _outcome_from_row(self, payment_id: str, wait: float) -> Outcome:
        """The payment's outcome as its row tells it, once decided; taken over and aborted
        if its owner died meanwhile; PENDING if WAIT seconds pass first."""
        deadline = time.monotonic() + max(wait, 0.0)
        pause = ROW_POLL_FIRST
        while True:
            taken = await self.take_over([payment_id])
            if taken:
                settled = taken[0]
            else:
                known = await self._db.statements(lambda c: payment_log.by_ids(c, [payment_id]))
                settled = known[payment_id]
            if settled.state is not CoordinatorState.PREPARING or time.monotonic() >= deadline:
                return outcome_of(settled)
            await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
            pause = min(pause * 2, ROW_POLL_MAX)

    # -- taking over, recovery and the banks' questions --------------------------------------

    async def take_over(self, payment_ids: Sequence[str] | None = None) -> list[PaymentView]:
        """Takes the open payments (among PAYMENT_IDS, or any) whose owner's lease has passed:
        aborts the undecided ones (presumed abort) and delivers the decided ones. Returns
        them as they stand now."""
        token = self._owner.token
        claimed = await self._db.statements(
            lambda c: payment_log.claim_orphans(c, token, payment_ids)
        )
        settled = []
        for payment in claimed:
            event(log, "payment_taken_over", payment_id=payment.id, state=payment.state.value)
            if payment.state is CoordinatorState.PREPARING:
                event(log, "recovery_abort", payment_id=payment.id)
                payment = await self._store_decision(payment, abort(Reason.TIMEOUT))
            if payment.owner_token == token:
                self._finish_in_background(payment)
            settled.append(payment)
        return settled

    async def resume_own(self) -> None:
        """Goes on with this replica's own open payments that nothing here is driving."""
        token = self._owner.token
        mine = await self._db.statements(lambda c: payment_log.owned_open(c, token))
        moment = now()
        for payment in mine:
            if payment.id in self._in_flight or payment.id in self._finishing:
                continue
            if payment.state is not CoordinatorState.PREPARING:
                self._finish_in_background(payment)
            elif payment.deadline < moment:  # its coroutine is gone
                event(log, "recovery_abort", payment_id=payment.id)
                stored = await self._store_decision(payment, abort(Reason.TIMEOUT))
                if stored.owner_token == token:
                    self._finish_in_background(stored)

    async def decisions(self, payment_ids: Sequence[str]) -> dict[str, Status]:
        """Answers a bank in doubt: the decision; PENDING while a live replica decides; for a
        payment nobody recorded, or whose owner died undecided, abort (presumed abort)."""
        known = await self._db.statements(lambda c: payment_log.by_ids(c, payment_ids))
        undecided = [
            pid
            for pid, payment in known.items()
            if payment.state is CoordinatorState.PREPARING and pid not in self._in_flight
        ]
        if undecided:
            known.update({p.id: p for p in await self.take_over(undecided)})
        return {
            pid: status_of(known[pid].state) if pid in known else Status.ABORTED
            for pid in payment_ids
        }

    async def stop(self) -> None:
        tasks = [task for task, _ in self._finishing.values()] + list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- rounds: one transaction or one call per bank for every payment waiting ----------------

    async def _record_round(self, items: list[tuple[PaymentOrder, str]]) -> list[Recorded]:
        orders = [order for order, _ in items]
        token = self._owner.token
        results = await self._db.statements(
            lambda c: payment_log.record(c, orders, self._timeout, token)
        )
        # Started here, before any caller resumes, so that a repeat of the key in this very
        # round finds the payment running, and so that it runs even if its caller goes.
        for (_, request_id), result in zip(items, results, strict=True):
            if result.kind is RecordKind.NEW and result.payment is not None:
                self._start(result.payment, request_id)
        return results

    async def _decide_round(self, decisions: list[Deciding]) -> list[PaymentView]:
        return await self._db.statements(lambda c: payment_log.decide(c, decisions))

    async def _complete_round(self, finished: list[tuple[str, int]]) -> list[None]:
        return await self._db.statements(lambda c: payment_log.complete(c, finished))

    def _prepare_round(self, bank: str) -> Callable[[list[PrepareItem]], Awaitable[list[Vote]]]:
        async def prepare(items: list[PrepareItem]) -> list[Vote]:
            ids = [item.payment_id for item in items]
            event(log, "prepare_sent", bank=bank, payment_ids=ids, count=len(ids))
            remaining = min(item.deadline for item in items) - now()
            if remaining <= 0:
                votes = dict.fromkeys(ids, no_vote(Reason.TIMEOUT))
            else:
                votes = await self._participants.prepare(
                    bank,
                    [leg for item in items for leg in item.legs],
                    remaining,
                    [item.request_id for item in items],
                )
            # One record for the round's votes: per payment, "yes" or the no's reason code.
            event(
                log,
                "vote",
                bank=bank,
                payment_ids=ids,
                votes={pid: _vote_word(votes[pid]) for pid in ids},
            )
            return [votes[pid] for pid in ids]

        return prepare

    def _decision_round(
        self, bank: str, commit: bool
    ) -> Callable[[list[DecisionItem]], Awaitable[list[bool]]]:
        decision = "commit" if commit else "abort"

        async def send(items: list[DecisionItem]) -> list[bool]:
            ids = [item.payment_id for item in items]
            event(log, f"{decision}_sent", bank=bank, payment_ids=ids, count=len(ids))
            acknowledged = (
                set()
                if self._faults.is_on("withhold_decisions")
                else await self._participants.deliver(
                    bank,
                    commit,
                    ids,
                    max(self._timeout, 1.0),
                    [item.request_id for item in items],
                )
            )
            missing = [pid for pid in ids if pid not in acknowledged]
            if len(missing) < len(ids):
                event(
                    log,
                    "decision_acknowledged",
                    bank=bank,
                    decision=decision,
                    payment_ids=[pid for pid in ids if pid in acknowledged],
                )
            if missing:
                event(
                    log,
                    "decision_not_acknowledged",
                    bank=bank,
                    decision=decision,
                    payment_ids=missing,
                )
            return [pid in acknowledged for pid in ids]

        return send


def _vote_word(vote: Vote) -> str:
    return "yes" if vote.yes else str(vote.reason_code or Reason.ABORTED)
