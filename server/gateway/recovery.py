"""The coordinator's recovery: at start-up and then periodically, take over the open payments
of replicas whose lease has passed (this replica's earlier incarnation included: abort the
undecided, deliver the decided), go on with this replica's own open payments that nothing
drives, forget expired idempotency keys, and run the other clean-ups it is given (expired
revocations, old throttle counts, retired token keys)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from server.common.clock import now
from server.common.db import Database
from server.common.periodic import repeat
from server.gateway import payment_log
from server.gateway.coordinator import Coordinator

log = logging.getLogger(__name__)


class Recovery:
    def __init__(
        self,
        db: Database,
        coordinator: Coordinator,
        idempotency_ttl: float,
        chores: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self._db = db
        self._coordinator = coordinator
        self._idempotency_ttl = idempotency_ttl
        self._chores = chores  # other clean-ups to run with every pass

    async def run_once(self) -> None:
        await self._coordinator.take_over()
        await self._coordinator.resume_own()
        cutoff = now() - self._idempotency_ttl
        await self._db.transaction(lambda s: payment_log.forget_keys(s, cutoff))
        for chore in self._chores:
            await chore()

    async def run_forever(self, interval: float) -> None:
        await repeat(self.run_once, interval, log, "recovery pass failed")
