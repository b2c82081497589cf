"""A bank's side of recovery: for every payment it voted yes on and has heard no decision
for within the timeout, ask the coordinator and apply the answer. Runs at start-up and then
periodically, so an outage of either side resolves by itself once it is over."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from server.bank import participant
from server.common.clock import now
from server.common.db import Database
from server.common.errors import Unavailable
from server.common.logs import event
from server.common.metrics import IN_DOUBT
from server.common.vocabulary import Status

log = logging.getLogger(__name__)


class Coordinator(Protocol):
    async def statuses(self, payment_ids: Sequence[str], timeout: float) -> dict[str, Status]:
        """Each payment's status: COMMITTED, ABORTED, or PENDING; raises Unavailable."""


class DecisionAsker:
    def __init__(self, db: Database, coordinator: Coordinator, timeout: float) -> None:
        self._db = db
        self._coordinator = coordinator
        self._timeout = timeout

    async def resolve_in_doubt(self) -> int:
        """One pass; returns how many payments it resolved."""
        cutoff = now() - self._timeout
        ids, waiting = await self._db.transaction(
            lambda s: (participant.in_doubt(s, cutoff), participant.count_in_doubt(s))
        )
        IN_DOUBT.set(waiting)
        if not ids:
            return 0
        event(log, "asking_decisions", payment_ids=ids, count=len(ids))
        statuses = await self._coordinator.statuses(ids, self._timeout)
        commits = [pid for pid, status in statuses.items() if status is Status.COMMITTED]
        aborts = [pid for pid, status in statuses.items() if status is Status.ABORTED]
        if commits:
            await self._db.statements(lambda c: participant.commit(c, commits))
        if aborts:
            await self._db.statements(lambda c: participant.abort(c, aborts))
        for payment_id in commits:
            event(log, "recovered_commit", payment_id=payment_id)
        for payment_id in aborts:
            event(log, "recovered_abort", payment_id=payment_id)
        return len(commits) + len(aborts)

    async def run_forever(self, interval: float) -> None:
        while True:
            try:
                await self.resolve_in_doubt()
            except Unavailable as error:
                log.warning("cannot ask for decisions: %s", error.message)
            except Exception:
                log.exception("recovery pass failed")
            await asyncio.sleep(interval)
