"""The coordinator's recovery: at start-up and then periodically, deliver every stored
decision not yet acknowledged, abort payments that nobody is deciding (recorded before a
crash, or past their deadline), forget expired idempotency keys, and run the other clean-ups
it is given (expired revocations, old throttle counts)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from server.common.clock import now
from server.common.db import Database
from server.common.logs import event
from server.gateway import payment_log
from server.gateway.coordinator import Coordinator
from server.gateway.models import CoordinatorState

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

    async def run_once(self, *, at_start: bool = False) -> None:
        open_payments = await self._db.transaction(
            lambda s: payment_log.in_state(
                s,
                [
                    CoordinatorState.PREPARING,
                    CoordinatorState.COMMITTING,
                    CoordinatorState.ABORTING,
                ],
            )
        )
        moment = now()
        for payment in open_payments:
            if payment.state is CoordinatorState.PREPARING:
                # At start-up nothing here is deciding it; later, only what outlived its deadline.
                orphan = not self._coordinator.is_in_flight(payment.id) and (
                    at_start or payment.deadline < moment
                )
                if orphan:
                    event(log, "recovery_abort", payment_id=payment.id)
                    await self._coordinator.abort_orphan(payment)
            else:
                self._coordinator.resume(payment)
        cutoff = now() - self._idempotency_ttl
        await self._db.transaction(lambda s: payment_log.forget_keys(s, cutoff))
        for chore in self._chores:
            await chore()

    async def run_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("recovery pass failed")
