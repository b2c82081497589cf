"""The payment coordinator: runs two-phase commit for each payment between the payer's bank
and the payee's bank, and decides each payment's outcome.

Per payment: record it durably (PREPARING) -> Prepare at both banks concurrently within the
timeout -> decide (commit only on two yes votes) and store the decision -> send Commit or Abort
until every bank acknowledges -> mark it finished. The decision is on disk before any bank
hears it. Each phase goes through a ``Batcher``, so concurrent payments share one transaction
and one RPC per bank per round; the per-payment rules stay in ``payment_state``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from protofiles.minipay.v1 import bank_pb2, common_pb2
from server.common.clock import now
from server.common.db import Database
from server.common.errors import Conflict, InvalidArgument
from server.common.faults import Faults
from server.common.logs import REQUEST_ID, event
from server.common.metrics import IN_DOUBT, PAYMENTS, PHASE_SECONDS
from server.gateway import payment_log
from server.gateway.banks import BankDirectory, call_metadata
from server.gateway.batching import Batcher
from server.gateway.models import PaymentState
from server.gateway.payment_log import PaymentOrder, PaymentView, Recorded
from server.gateway.payment_state import (
    REASONS,
    Decision,
    Outcome,
    Status,
    Vote,
    decide,
    status_of,
)

log = logging.getLogger(__name__)

RESEND_BACKOFF_MAX = 2.0
ABORT_ACK_WAIT = 1.0


@dataclass(frozen=True)
class PrepareItem:
    payment_id: str
    legs: tuple[bank_pb2.Leg, ...]
    deadline: float
    request_id: str


# A payment to commit or abort at one bank, with the request id that began it.
DecisionItem = tuple[str, str]


def outcome_of(payment: PaymentView, replayed: bool = False) -> Outcome:
    return Outcome(
        payment.id, status_of(payment.state), payment.reason_code, payment.reason, replayed
    )


class Coordinator:
    def __init__(
        self, db: Database, banks: BankDirectory, timeout: float, batch_max: int, faults: Faults
    ) -> None:
        self._db = db
        self._banks = banks
        self._timeout = timeout
        self._faults = faults
        self._record = Batcher(self._record_round, batch_max)
        self._decide = Batcher(self._decide_round, batch_max)
        self._complete = Batcher(self._complete_round, batch_max)
        self._prepare = {
            name: Batcher(self._prepare_round(name), batch_max) for name in banks.names
        }
        self._commit = {
            name: Batcher(self._decision_round(name, True), batch_max) for name in banks.names
        }
        self._abort = {
            name: Batcher(self._decision_round(name, False), batch_max) for name in banks.names
        }
        self._in_flight: dict[str, asyncio.Future[Outcome]] = {}
        # Payment id -> (the task delivering its decision, done once every bank has it).
        self._finishing: dict[str, tuple[asyncio.Task[None], asyncio.Future[None]]] = {}
        IN_DOUBT.set_function(lambda: len(self._in_flight) + len(self._finishing))

    # -- the payment's life --------------------------------------------------------------

    async def pay(self, order: PaymentOrder) -> Outcome:
        with PHASE_SECONDS.labels("record").time():
            recorded = await self._record.submit(order)
        if isinstance(recorded, InvalidArgument):
            raise recorded
        if not recorded.created:
            return await self._replay(recorded.payment)
        payment = recorded.payment
        log.debug(
            "payment_recorded",
            extra={
                "fields": {
                    "payment_id": payment.id,
                    "amount_minor": payment.amount,
                    "currency": payment.currency,
                    "idempotency_key": order.idempotency_key,
                }
            },
        )
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._in_flight[payment.id] = future
        try:
            outcome = await self._run(payment)
            future.set_result(outcome)
            return outcome
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # a replay may never come to read it
            raise
        finally:
            del self._in_flight[payment.id]

    async def _run(self, payment: PaymentView) -> Outcome:
        self._faults.crash_point("crash_after_record")
        with PHASE_SECONDS.labels("prepare").time():
            votes = await asyncio.gather(
                *(self._prepare[bank].submit(item) for bank, item in self._prepare_items(payment))
            )
        with PHASE_SECONDS.labels("decide").time():
            stored = await self._store_decision(payment.id, decide(votes))
        self._faults.crash_point("crash_after_decision")
        delivered = self._finish_in_background(stored)
        # The client waits for the banks to apply the decision, so its next balance read
        # shows it, but only so long: the outcome is fixed already, and delivery goes on
        # until every bank acknowledges. An abort moves no money, so it waits less.
        wait = self._timeout if stored.state is PaymentState.COMMITTING else ABORT_ACK_WAIT
        try:
            await asyncio.wait_for(asyncio.shield(delivered), timeout=min(wait, self._timeout))
        except TimeoutError:
            event(log, "decision_delivery_slow", payment_id=payment.id)
        return outcome_of(stored)

    def _prepare_items(self, payment: PaymentView) -> list[tuple[str, PrepareItem]]:
        def leg(side: bank_pb2.LegSide, account: str) -> bank_pb2.Leg:
            return bank_pb2.Leg(
                payment_id=payment.id,
                side=side,
                account=account,
                amount=common_pb2.Money(minor_units=payment.amount, currency=payment.currency),
            )

        debit = leg(bank_pb2.LEG_SIDE_DEBIT, payment.from_account)
        credit = leg(bank_pb2.LEG_SIDE_CREDIT, payment.to_account)
        request_id = REQUEST_ID.get()
        legs: dict[str, tuple[bank_pb2.Leg, ...]]
        if payment.from_bank == payment.to_bank:
            legs = {payment.from_bank: (debit, credit)}
        else:
            legs = {payment.from_bank: (debit,), payment.to_bank: (credit,)}
        return [
            (bank, PrepareItem(payment.id, bank_legs, payment.deadline, request_id))
            for bank, bank_legs in legs.items()
        ]

    async def _store_decision(self, payment_id: str, decision: Decision) -> PaymentView:
        stored = await self._decide.submit((payment_id, decision))
        if stored.decided_now:
            PAYMENTS.labels(status_of(stored.state).value, stored.reason_code or "none").inc()
        event(
            log,
            "decision",
            payment_id=payment_id,
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
        commit = payment.state in (PaymentState.COMMITTING, PaymentState.COMMITTED)
        with PHASE_SECONDS.labels("deliver").time():
            await asyncio.gather(
                *(self._deliver(bank, payment.id, commit) for bank in payment.banks)
            )
        delivered.set_result(None)
        await self._complete.submit(payment.id)
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
        batchers = self._commit if commit else self._abort
        backoff = 0.05
        while True:
            if await batchers[bank].submit((payment_id, REQUEST_ID.get())):
                if commit:
                    self._faults.crash_point("crash_after_first_commit_ack")
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESEND_BACKOFF_MAX)

    async def _replay(self, payment: PaymentView) -> Outcome:
        if payment.state is not PaymentState.PREPARING:
            return outcome_of(payment, replayed=True)
        future = self._in_flight.get(payment.id)
        if future is not None:
            outcome = await asyncio.shield(future)
            return Outcome(
                outcome.payment_id,
                outcome.status,
                outcome.reason_code,
                outcome.reason,
                replayed=True,
            )
        if payment.deadline < now():
            return outcome_of(await self.abort_orphan(payment), replayed=True)
        raise Conflict("a payment with this idempotency key is still in progress; retry shortly")

    # -- recovery and the banks' questions ------------------------------------------------

    def is_in_flight(self, payment_id: str) -> bool:
        return payment_id in self._in_flight

    async def abort_orphan(self, payment: PaymentView) -> PaymentView:
        """Aborts a payment no coroutine here is deciding (e.g. recorded before a crash)."""
        stored = await self._store_decision(
            payment.id, Decision(False, "timeout", REASONS["timeout"])
        )
        self._finish_in_background(stored)
        return stored

    def resume(self, payment: PaymentView) -> None:
        """Goes on delivering a stored decision (after a restart, or a slow bank)."""
        if payment.state in (PaymentState.COMMITTING, PaymentState.ABORTING):
            self._finish_in_background(payment)

    async def decisions(self, payment_ids: Sequence[str]) -> dict[str, Status]:
        """Answers a bank in doubt; no record means abort (presumed abort)."""
        known = await self._db.transaction(lambda s: payment_log.get(s, payment_ids))
        answers: dict[str, Status] = {}
        for payment_id in payment_ids:
            payment = known.get(payment_id)
            if payment is None:
                answers[payment_id] = Status.ABORTED
            elif payment.state is PaymentState.PREPARING and not self.is_in_flight(payment_id):
                answers[payment_id] = status_of((await self.abort_orphan(payment)).state)
            else:
                answers[payment_id] = status_of(payment.state)
        return answers

    async def stop(self) -> None:
        tasks = [task for task, _ in self._finishing.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- rounds: one transaction or one RPC for every payment waiting ----------------------

    async def _record_round(self, orders: list[PaymentOrder]) -> list[Recorded | InvalidArgument]:
        return await self._db.statements(lambda s: payment_log.record(s, orders, self._timeout))

    async def _decide_round(self, decisions: list[tuple[str, Decision]]) -> list[PaymentView]:
        return await self._db.statements(lambda s: payment_log.decide(s, decisions))

    async def _complete_round(self, payment_ids: list[str]) -> list[None]:
        return await self._db.statements(lambda s: payment_log.complete(s, payment_ids))

    def _prepare_round(self, bank: str):  # type: ignore[no-untyped-def]
        async def prepare(items: list[PrepareItem]) -> list[Vote]:
            legs = [leg for item in items for leg in item.legs]
            remaining = min(item.deadline for item in items) - now()
            ids = [item.payment_id for item in items]
            event(log, "prepare_sent", bank=bank, payment_ids=ids, count=len(ids))
            if remaining <= 0:
                return [Vote(False, "timeout", REASONS["timeout"])] * len(items)
            try:
                answer = await self._banks.get(bank).participant.Prepare(
                    bank_pb2.PrepareRequest(legs=legs),
                    timeout=remaining,
                    metadata=call_metadata([item.request_id for item in items]),
                )
            except grpc.aio.AioRpcError as error:
                code = (
                    "timeout"
                    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    else ("bank_unavailable")
                )
                event(
                    log,
                    "prepare_failed",
                    bank=bank,
                    payment_ids=ids,
                    reason_code=code,
                    status=error.code().name,
                )
                return [Vote(False, code, f"bank {bank}: {REASONS[code]}")] * len(items)
            votes: dict[str, Vote] = {}
            for vote in answer.votes:
                yes = vote.value == bank_pb2.VOTE_VALUE_YES
                if vote.payment_id not in votes or not yes:
                    votes[vote.payment_id] = Vote(yes, vote.reason_code, vote.reason)
            # One record for the round's votes: per payment, "yes" or the no's reason code.
            event(
                log,
                "vote",
                bank=bank,
                payment_ids=list(votes),
                votes={pid: "yes" if v.yes else v.reason_code for pid, v in votes.items()},
            )
            return [votes.get(pid, Vote(False, "aborted", "the bank gave no vote")) for pid in ids]

        return prepare

    def _decision_round(self, bank: str, commit: bool):  # type: ignore[no-untyped-def]
        async def send(items: list[DecisionItem]) -> list[bool]:
            stub = self._banks.get(bank).participant
            call = stub.Commit if commit else stub.Abort
            payment_ids = [payment_id for payment_id, _ in items]
            event(
                log,
                "commit_sent" if commit else "abort_sent",
                bank=bank,
                payment_ids=payment_ids,
                count=len(payment_ids),
            )
            try:
                answer = await call(
                    bank_pb2.DecisionRequest(payment_ids=payment_ids),
                    timeout=max(self._timeout, 1.0),
                    metadata=call_metadata([request_id for _, request_id in items]),
                )
            except grpc.aio.AioRpcError as error:
                event(
                    log,
                    "decision_not_acknowledged",
                    bank=bank,
                    payment_ids=payment_ids,
                    decision="commit" if commit else "abort",
                    status=error.code().name,
                )
                return [False] * len(payment_ids)
            acknowledged = set(answer.acknowledged)
            event(
                log,
                "decision_acknowledged",
                bank=bank,
                decision="commit" if commit else "abort",
                payment_ids=list(answer.acknowledged),
            )
            return [pid in acknowledged for pid in payment_ids]

        return send
