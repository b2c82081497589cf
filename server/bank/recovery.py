"""A bank's side of recovery: for every payment it voted yes on and has heard no decision
for within the timeout, ask the coordinator and apply the answer. Runs at start-up and then
periodically, so an outage of either side resolves by itself once it is over."""

from __future__ import annotations

import asyncio
import logging

import grpc

from protofiles.minipay.v1 import gateway_pb2, gateway_pb2_grpc
from server.bank import participant
from server.common.clock import now
from server.common.db import Database
from server.common.logs import event
from server.common.metrics import IN_DOUBT

log = logging.getLogger(__name__)


class DecisionAsker:
    def __init__(self, db: Database, channel: grpc.aio.Channel, timeout: float) -> None:
        self._db = db
        self._coordinator = gateway_pb2_grpc.CoordinatorStub(channel)
        self._timeout = timeout

    async def resolve_in_doubt(self) -> int:
        """One pass; returns how many payments it settled."""
        cutoff = now() - self._timeout
        ids, waiting = await self._db.transaction(
            lambda s: (participant.in_doubt(s, cutoff), participant.count_in_doubt(s))
        )
        IN_DOUBT.set(waiting)
        if not ids:
            return 0
        event(log, "asking_decisions", payment_ids=ids, count=len(ids))
        answer = await self._coordinator.GetDecision(
            gateway_pb2.GetDecisionRequest(payment_ids=ids), timeout=self._timeout
        )
        commits = [
            d.payment_id for d in answer.decisions if d.decision == gateway_pb2.DECISION_COMMIT
        ]
        aborts = [
            d.payment_id for d in answer.decisions if d.decision == gateway_pb2.DECISION_ABORT
        ]
        if commits:
            await self._db.statements(lambda s: participant.commit(s, commits))
        if aborts:
            await self._db.statements(lambda s: participant.abort(s, aborts))
        for payment_id in commits:
            event(log, "recovered_commit", payment_id=payment_id)
        for payment_id in aborts:
            event(log, "recovered_abort", payment_id=payment_id)
        return len(commits) + len(aborts)

    async def run_forever(self, interval: float) -> None:
        while True:
            try:
                await self.resolve_in_doubt()
            except grpc.aio.AioRpcError as error:
                log.warning("cannot reach the coordinator: %s", error.code().name)
            except Exception:
                log.exception("recovery pass failed")
            await asyncio.sleep(interval)
