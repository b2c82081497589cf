"""The payment coordinator: runs two-phase commit for each payment between the payer's bank
and the payee's bank, and decides each payment's outcome.

Payments go in rounds: whatever is waiting when a round starts goes into it. A round records
its payments durably (PREPARING, owned by this replica) in one transaction (``_record``),
asks each bank for its votes in one Prepare, stores the decisions (commit only on every yes
vote) in one transaction (``_store``) and answers the callers. The decision is on disk
before any bank hears it; ``delivery`` then brings it to the banks (riding on the next
round's Prepares when it can). A caller does not wait for the banks to apply the decision:
its outcome is final once stored.

A refund is a payment too (from the original's payee back to its payer), in the same rounds:
``_record`` reserves its amount on the payment it gives back or refuses it, and ``_store``
releases the reservation if it aborts (``payment_log``).

Exactly one live replica drives a payment: the one whose fencing token the payment carries.
Every write for a payment is conditional on that token, so a replica that was paused and lost
the payment to a survivor can no longer change it; it answers its caller from the row. A
payment whose owner's lease has passed is taken over: aborted if undecided (presumed abort),
its decision delivered otherwise.

Each of these transactions also writes the payment's story (``trace``): the record, each
bank's vote with its times, the decision and why, a take-over; and whatever steps were
waiting for a write (acknowledgements, banks' questions).

Plain Python over three seams: the payment log (a database), ``Participants`` (the banks,
reached through ``server.gateway.banks`` in production and a fake in the unit tests) and
``Owner`` (this replica's name and fencing token, from ``server.gateway.replicas``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection

from minipay.errors import ErrorReason
from server.common.clock import now
from server.common.db import Database
from server.common.errors import InvalidArgument
from server.common.faults import Faults
from server.common.logs import REQUEST_ID, event
from server.common.metrics import IN_DOUBT, PAYMENTS, PHASE_SECONDS
from server.common.principal import peek_principal
from server.common.vocabulary import Leg, Reason, Status
from server.gateway import audit, events, journal, payment_log, refunds, trace
from server.gateway.delivery import Delivery, Recipients
from server.gateway.payment_log import Deciding, RecordKind
from server.gateway.payment_state import (
    CoordinatorState,
    Outcome,
    PaymentOrder,
    PaymentView,
    Prepared,
    Vote,
    abort,
    decide,
    legs_by_bank,
    no_vote,
    status_of,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# One round at a time gathers the most payments per round (the fewest transactions and calls
# per payment); a round slower than ROUND_OVERLAP (a slow bank) lets the next one start, up to
# MAX_ROUNDS at once, so that one slow bank does not hold up every payment.
ROUND_OVERLAP = 0.05
MAX_ROUNDS = 8
# How often a replica looks at a payment another replica is deciding.
ROW_POLL_FIRST, ROW_POLL_MAX = 0.02, 0.25
KEY_REUSED = (
    "this idempotency key was already used for a different payment; use a new key for a new payment"
)


class Participants(Recipients, Protocol):
    """The banks, as the coordinator needs them: phase one here, phase two in ``delivery``."""

    async def prepare(
        self,
        bank: str,
        legs: Sequence[Leg],
        timeout: float,
        request_ids: Sequence[str],
        commit: Sequence[str] = (),
        abort: Sequence[str] = (),
    ) -> Prepared:
        """The bank's votes (a failed call: every no), and the decisions it applied."""


class Owner(Protocol):
    """This replica, as the coordinator needs it: its name and the fencing token of its
    incarnation."""

    @property
    def name(self) -> str: ...

    @property
    def token(self) -> int: ...


@dataclass
class Asked:
    """A payment a caller asked for, waiting for its round."""

    order: PaymentOrder
    request_id: str
    wait: float | None
    answer: asyncio.Future[Outcome]
    certificate: str = ""  # the caller's (its common name), for the payment's story


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
        steps: trace.Trace | None = None,
        journaled: bool = True,
    ) -> None:
        self._db = db
        self._journaled = journaled  # events and audit records of decisions (off: benchmarks)
        self._participants = participants
        self._owner = owner
        self._timeout = timeout
        self._batch_max = max(1, batch_max)
        self._faults = faults or Faults()
        self._asked: list[Asked] = []
        self._arrived = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()  # payment rounds under way
        self._rounds: set[asyncio.Task[None]] = set()  # and every other task of this class
        self._background: list[asyncio.Task[None]] = []
        # Payment id -> its outcome once its round decides it (a repeat of its key waits).
        self._in_flight: dict[str, asyncio.Future[Outcome]] = {}
        self._rounds_begun = 0  # numbers this incarnation's rounds, for the trace
        self.trace = steps or trace.Trace(owner.name)
        # Decisions go to the banks from here; they wait for a round under way to ride on.
        self.delivery = Delivery(
            db,
            participants,
            bank_names,
            timeout,
            self._faults,
            lambda: bool(self._running),
            self.trace,
        )
        IN_DOUBT.set_function(lambda: len(self._in_flight) + self.delivery.undelivered)

    def start(self) -> None:
        """Starts the loop that runs rounds, and the delivery of decisions (once)."""
        self.delivery.start()
        if not self._background:
            # A context of its own: the rounds serve every caller, not the first one's request.
            loop = self._round_loop()
            self._background = [asyncio.create_task(loop, context=contextvars.Context())]

    async def stop(self) -> None:
        tasks = [*self._background, *self._rounds]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._background = []
        await self.delivery.stop()

    @property
    def quiet(self) -> bool:
        """Nothing under way: no round, no decision to deliver, no completion to write."""
        return not (self._asked or self._in_flight or self._rounds) and self.delivery.quiet

    # -- a payment ----------------------------------------------------------------------------

    async def pay(self, order: PaymentOrder, wait: float | None = None) -> Outcome:
        """The payment's outcome. A repeat of its key waits at most WAIT seconds (the caller's
        deadline) for a payment still being decided elsewhere, then answers PENDING."""
        self.start()
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        principal = peek_principal()
        certificate = principal.peer.common_name if principal is not None else ""
        self._asked.append(Asked(order, REQUEST_ID.get(), wait, answer, certificate))
        self._arrived.set()
        # Shielded: a caller that goes away does not stop the round its payment is in.
        return await asyncio.shield(answer)

    async def pay_many(
        self, orders: Sequence[PaymentOrder], wait: float | None = None
    ) -> list[Outcome | Exception]:
        """Each order's outcome, or the error that refused it (a reused key), in order: each
        as if ``pay`` were called for it alone. They join the rounds together, and this waits
        for nothing but them. An order whose key an earlier one in ORDERS has is asked once
        that one's outcome is known: it is then a replay of it (or KEY_REUSED), in order."""
        self.start()
        loop = asyncio.get_running_loop()
        request_id = REQUEST_ID.get()
        answers: list[asyncio.Future[Outcome]] = []
        first_of_key: dict[tuple[str, str], asyncio.Future[Outcome]] = {}
        for order in orders:
            answer: asyncio.Future[Outcome] = loop.create_future()
            answers.append(answer)
            asked = Asked(order, request_id, wait, answer)
            earlier = first_of_key.setdefault((order.payer, order.idempotency_key), answer)
            if earlier is answer:
                self._asked.append(asked)
            else:
                self._ask_after(earlier, asked)
        self._arrived.set()
        # Shielded, as in ``pay``; every answer ends (a failed round fails its own).
        done = await asyncio.shield(asyncio.gather(*answers, return_exceptions=True))
        return [_settled(result) for result in done]

    def _ask_after(self, earlier: asyncio.Future[Outcome], asked: Asked) -> None:
        async def ask() -> None:
            try:
                await asyncio.wait([earlier])
            except asyncio.CancelledError:  # stopping: the caller is told it was cancelled
                asked.answer.cancel()
                raise
            self._asked.append(asked)
            self._arrived.set()

        self._rounds.add(task := asyncio.create_task(ask()))
        task.add_done_callback(self._rounds.discard)

    async def _round_loop(self) -> None:
        round_done = asyncio.Event()
        last_start = 0.0
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._asked:
                # Wait for the round under way, unless it is slow; never more than MAX_ROUNDS.
                while self._running and (
                    len(self._running) >= MAX_ROUNDS
                    or time.monotonic() - last_start < ROUND_OVERLAP
                ):
                    round_done.clear()
                    wait = max(ROUND_OVERLAP - (time.monotonic() - last_start), 0.001)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(round_done.wait(), wait)
                batch = self._asked[: self._batch_max]
                del self._asked[: self._batch_max]
                last_start = time.monotonic()
                task = asyncio.create_task(self._round(batch))
                self._running.add(task)
                self._rounds.add(task)
                task.add_done_callback(self._rounds.discard)
                task.add_done_callback(self._running.discard)
                task.add_done_callback(lambda _: round_done.set())

    async def _round(self, batch: list[Asked]) -> None:
        fresh: list[tuple[Asked, PaymentView]] = []
        self._rounds_begun += 1
        round_id = f"{self._owner.token}.{self._rounds_begun}"
        try:
            started = time.perf_counter()
            recorded = await self._record(batch)
            PHASE_SECONDS.labels("record").observe(time.perf_counter() - started)
            for asked, result in zip(batch, recorded, strict=True):
                if result.kind is RecordKind.KEY_REUSED:
                    _fail(
                        asked.answer,
                        InvalidArgument(
                            KEY_REUSED, ErrorReason.IDEMPOTENCY_KEY_REUSED, field="idempotency_key"
                        ),
                    )
                elif result.kind is RecordKind.REFUSED:
                    _fail(asked.answer, refunds.refused(asked.order, result.original))
                elif result.kind is RecordKind.REPLAY and result.payment is not None:
                    self._answer_later(asked, self._replay(result.payment, asked.wait))
                elif result.payment is not None:
                    fresh.append((asked, result.payment))
                    self._in_flight[result.payment.id] = asked.answer
            if fresh:
                self._faults.crash_point("crash_after_record")
                await self._decide_round(fresh, round_id)
        except Exception as error:  # every caller of a failed round learns it failed
            log.exception("a payment round failed")
            for asked in batch:
                _fail(asked.answer, error)
        finally:
            for _, payment in fresh:
                self._in_flight.pop(payment.id, None)

    async def _record(self, batch: list[Asked]) -> list[payment_log.Recorded]:
        """The round's first transaction: each payment recorded as PREPARING and owned by
        this replica, or found by its key (and the story of each)."""
        token = self._owner.token
        orders = [asked.order for asked in batch]

        def write(connection: Connection, waiting: list[trace.Row]) -> list[payment_log.Recorded]:
            recorded = payment_log.record(connection, orders, self._timeout, token)
            trace.write(connection, [*waiting, *self._recorded_steps(batch, recorded)])
            return recorded

        return await self._write(write)

    def _recorded_steps(
        self, batch: list[Asked], recorded: list[payment_log.Recorded]
    ) -> list[trace.Row | None]:
        steps: list[trace.Row | None] = []
        for asked, result in zip(batch, recorded, strict=True):
            if result.payment is None:  # a key reused: no payment of the caller's
                continue
            payment = result.payment
            if result.kind is RecordKind.NEW:
                steps.append(self.trace.recorded(payment, asked.request_id, asked.certificate))
                if payment.refund_of:  # a step of the refunded payment's story too
                    steps.append(
                        self.trace.refund(payment.refund_of, payment.id, payment.amount, "PENDING")
                    )
            else:
                steps.append(self.trace.replayed(payment, asked.request_id))
        return steps

    async def _write(self, work: Callable[[Connection, list[trace.Row]], T]) -> T:
        """WORK in one transaction, with the trace's steps that wait for a write (put back
        to wait again if the transaction fails)."""
        waiting = self.trace.take()
        try:
            return await self._db.statements(lambda connection: work(connection, waiting))
        except BaseException:
            self.trace.put_back(waiting)
            raise

    async def _decide_round(self, fresh: list[tuple[Asked, PaymentView]], round_id: str) -> None:
        started = time.perf_counter()
        votes, steps, causes = await self._votes(fresh, round_id)
        PHASE_SECONDS.labels("prepare").observe(time.perf_counter() - started)
        started = time.perf_counter()
        decisions = [
            Deciding(payment.id, decide(votes[payment.id]), payment.owner) for _, payment in fresh
        ]
        stored = await self._store(decisions, steps, causes, round_id)
        PHASE_SECONDS.labels("decide").observe(time.perf_counter() - started)
        self._faults.crash_point("crash_after_decision")
        for (asked, payment), result in zip(fresh, stored, strict=True):
            if result.owner_token != payment.owner_token:
                # Paused past the lease: a survivor took the payment. Write nothing; tell the
                # caller what the row says.
                event(log, "payment_lost", payment_id=payment.id, to_owner=result.owner_token)
                self._answer_later(asked, self._outcome_from_row(payment.id, self._timeout))
                continue
            self.delivery.post(result)
            if not asked.answer.done():
                asked.answer.set_result(Outcome(result))

    async def _store(
        self,
        decisions: list[Deciding],
        steps: Sequence[trace.Row] = (),
        causes: Mapping[str, str] | None = None,
        round_id: str = "",
    ) -> list[PaymentView]:
        """The decision transaction, of a round or of a take-over: the decisions (each only
        while its payment is undecided and still its decider's), and the completions
        delivery gathered meanwhile; with the round's STEPS (its votes), and a DECIDED step
        with its cause (CAUSES) for each decision stored now. Returns the payments as they
        stand."""
        completed = self.delivery.take_completions()
        why = causes or {}

        def write(connection: Connection, waiting: list[trace.Row]) -> list[PaymentView]:
            payment_log.complete(connection, completed)
            stored = payment_log.store_decisions(connection, decisions)
            decided = [
                self.trace.decided(p, why.get(p.id, trace.ALL_YES), round_id) for p in stored
            ]
            refunded = [
                self.trace.refund(p.refund_of, p.id, p.amount, status_of(p.state).value)
                for p in stored
                if p.decided_now and p.refund_of
            ]
            trace.write(connection, [*waiting, *steps, *decided, *refunded])
            if self._journaled:  # last: the journal's heads stay locked only while this commits
                record = audit.decisions(now(), self._owner.name, stored)
                journal.write(connection, events.of_decisions(stored), [record] if record else [])
            return stored

        stored = await self._write(write)
        self._log_decisions(stored)
        return stored

    async def _votes(
        self, fresh: list[tuple[Asked, PaymentView]], round_id: str
    ) -> tuple[dict[str, list[Vote]], list[trace.Row], dict[str, str]]:
        """Every bank's votes on the round's payments, one Prepare per bank, at once; the
        VOTED steps; and why each payment that got a no will be aborted."""
        by_bank: dict[str, list[Leg]] = defaultdict(list)
        request_ids: dict[str, list[str]] = defaultdict(list)
        for asked, payment in fresh:
            for bank, legs in legs_by_bank(payment).items():
                by_bank[bank].extend(legs)
                request_ids[bank].append(asked.request_id)
        deadline = min(payment.deadline for _, payment in fresh)
        answers = await asyncio.gather(
            *(
                self._prepare(bank, legs, deadline, request_ids[bank], round_id)
                for bank, legs in by_bank.items()
            )
        )
        votes: dict[str, list[Vote]] = defaultdict(list)
        steps: list[trace.Row] = []
        causes: dict[str, str] = {}
        for bank, (answer, sent_ms, at_ms) in zip(by_bank, answers, strict=True):
            for payment_id, vote in answer.items():
                votes[payment_id].append(vote)
                if self.trace.enabled:
                    steps.append(self.trace.voted(payment_id, bank, round_id, sent_ms, at_ms, vote))
                if not vote.yes and payment_id not in causes:  # ``decide``: the first no
                    causes[payment_id] = trace.cause_of(trace.vote_outcome(vote), bank)
        return votes, steps, causes

    async def _prepare(
        self, bank: str, legs: list[Leg], deadline: float, request_ids: list[str], round_id: str
    ) -> tuple[dict[str, Vote], int, int]:
        """One bank's votes, and when the Prepare left and its answer came (ms); the
        decisions waiting for that bank ride along."""
        ids = list(dict.fromkeys(leg.payment_id for leg in legs))
        commits: list[str] = []
        aborts: list[str] = []
        remaining = deadline - now()
        sent_ms = trace.now_ms()
        if remaining <= 0:
            prepared = Prepared(dict.fromkeys(ids, no_vote(Reason.TIMEOUT)), set())
        else:
            commits, aborts = self.delivery.riders(bank)
            prepared = await self._participants.prepare(
                bank, legs, remaining, request_ids, commits, aborts
            )
        at_ms = trace.now_ms()
        # One record per bank and round: its payments, the no votes among them (every other
        # was yes), and the decisions that rode along. Per-payment words only for the few:
        # a word per payment was the largest part of a round's logging.
        no_votes = {pid: _no_word(vote) for pid, vote in prepared.votes.items() if not vote.yes}
        event(
            log,
            "prepare",
            bank=bank,
            payment_ids=ids,
            **({"no_votes": no_votes} if no_votes else {}),
            **({"commit": commits} if commits else {}),
            **({"abort": aborts} if aborts else {}),
        )
        self.delivery.answered(bank, [*commits, *aborts], prepared.acknowledged, sent_ms, round_id)
        return prepared.votes, sent_ms, at_ms

    def _log_decisions(self, stored: list[PaymentView]) -> None:
        decided = {p.id: p for p in stored if p.decided_now}
        for payment in decided.values():
            PAYMENTS.labels(status_of(payment.state).value, payment.reason_code or "none").inc()
        if decided:
            aborted = {
                pid: p.reason_code
                for pid, p in decided.items()
                if status_of(p.state) is not Status.COMMITTED
            }
            event(
                log,
                "decision",
                payment_ids=list(decided),
                **({"aborted": aborted} if aborted else {}),
            )

    def _answer_later(self, asked: Asked, work: Coroutine[Any, Any, Outcome]) -> None:
        """Answers ASKED when WORK ends, without holding up the round."""

        async def answer() -> None:
            try:
                outcome = await work
            except Exception as error:
                _fail(asked.answer, error)
            else:
                if not asked.answer.done():
                    asked.answer.set_result(outcome)

        self._rounds.add(task := asyncio.create_task(answer()))
        task.add_done_callback(self._rounds.discard)

    async def _replay(self, payment: PaymentView, wait: float | None) -> Outcome:
        if payment.state is not CoordinatorState.PREPARING:
            return Outcome(payment, replayed=True)
        running = self._in_flight.get(payment.id)
        if running is not None:
            outcome = await asyncio.shield(running)
        else:
            # Another replica (or a crashed one) has it: wait on the row for its outcome.
            outcome = await self._outcome_from_row(payment.id, wait or self._timeout)
        return Outcome(outcome.payment, replayed=True)

    async def _outcome_from_row(self, payment_id: str, wait: float) -> Outcome:
        """The payment's outcome as its row tells it, once decided; taken over and aborted
        if its owner died meanwhile; PENDING if WAIT seconds pass first."""
        deadline = time.monotonic() + max(wait, 0.0)
        pause = ROW_POLL_FIRST
        while True:
            taken = await self.take_over([payment_id])
            if taken:
                current = taken[0]
            else:
                known = await self._db.statements(lambda c: payment_log.by_ids(c, [payment_id]))
                current = known[payment_id]
            if current.state is not CoordinatorState.PREPARING or time.monotonic() >= deadline:
                return Outcome(current)
            await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
            pause = min(pause * 2, ROW_POLL_MAX)

    # -- taking over, recovery and the banks' questions --------------------------------------

    async def take_over(self, payment_ids: Sequence[str] | None = None) -> list[PaymentView]:
        """Takes the open payments (among PAYMENT_IDS, or any) whose owner's lease has passed:
        aborts the undecided ones (presumed abort) and delivers the decided ones. Returns
        them as they stand now."""
        self.start()
        token = self._owner.token

        def claim(connection: Connection, waiting: list[trace.Row]) -> list[PaymentView]:
            previous: dict[str, int | None] = {}
            claimed = payment_log.claim_orphans(
                connection, token, payment_ids, previous_owners=previous
            )
            steps: list[trace.Row | None] = list(waiting)
            if claimed and self.trace.enabled:
                names = trace.replica_names(connection, previous.values())
                for payment in claimed:
                    lost = previous.get(payment.id)
                    steps.append(self.trace.taken_over(payment.id, names.get(lost or 0, "")))
            trace.write(connection, steps)
            return claimed

        claimed = await self._write(claim)
        undecided = [p for p in claimed if p.state is CoordinatorState.PREPARING]
        for payment in claimed:
            event(log, "payment_taken_over", payment_id=payment.id, state=payment.state.value)
        current = {p.id: p for p in claimed}
        if undecided:
            event(log, "recovery_abort", payment_ids=[p.id for p in undecided])
            current.update(await self._abort(undecided, trace.PRESUMED_ABORT))
        for payment in current.values():
            if payment.owner_token == token:
                self.delivery.post(payment)
        return list(current.values())

    async def _abort(self, payments: list[PaymentView], cause: str) -> dict[str, PaymentView]:
        decisions = [Deciding(p.id, abort(Reason.TIMEOUT), p.owner) for p in payments]
        causes = dict.fromkeys((p.id for p in payments), cause)
        return {p.id: p for p in await self._store(decisions, causes=causes)}

    async def resume_own(self) -> None:
        """Goes on with this replica's own open payments that nothing here is driving."""
        self.start()
        token = self._owner.token
        mine = await self._db.statements(lambda c: payment_log.owned_open(c, token))
        moment = now()
        stuck = []
        for payment in mine:
            if payment.state is not CoordinatorState.PREPARING:
                self.delivery.post(payment)
            elif payment.id not in self._in_flight and payment.deadline < moment:
                stuck.append(payment)  # its round is gone
        if stuck:
            event(log, "recovery_abort", payment_ids=[p.id for p in stuck])
            for payment in (await self._abort(stuck, trace.ROUND_LOST)).values():
                if payment.owner_token == token:
                    self.delivery.post(payment)

    async def statuses(self, payment_ids: Sequence[str], asked_by: str = "") -> dict[str, Status]:
        """Answers a bank in doubt (ASKED_BY, for the payments' stories): each payment's
        status, COMMITTED or ABORTED once decided; PENDING while a live replica decides it;
        for a payment nobody recorded, or whose owner died undecided, ABORTED (presumed
        abort)."""
        asked_ms = trace.now_ms()
        known = await self._db.statements(lambda c: payment_log.by_ids(c, payment_ids))
        undecided = [
            pid
            for pid, payment in known.items()
            if payment.state is CoordinatorState.PREPARING and pid not in self._in_flight
        ]
        if undecided:
            known.update({p.id: p for p in await self.take_over(undecided)})
        answers = {
            pid: status_of(known[pid].state) if pid in known else Status.ABORTED
            for pid in payment_ids
        }
        if asked_by:  # a payment nobody recorded has no story to add to
            words = {Status.COMMITTED: trace.COMMIT, Status.ABORTED: trace.ABORT}
            told = {pid: words.get(answers[pid], "PENDING") for pid in known}
            self.trace.asked(asked_by, told, asked_ms)
        return answers


def _fail(answer: asyncio.Future[Outcome], error: BaseException) -> None:
    if not answer.done():
        answer.set_exception(error)


def _no_word(vote: Vote) -> str:
    return str(vote.reason_code or Reason.ABORTED)


def _settled(result: Outcome | BaseException) -> Outcome | Exception:
    """An item's outcome or its error; a cancellation (the server stopping) is not an item's."""
    if isinstance(result, Exception | Outcome):
        return result
    raise result
