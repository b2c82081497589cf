"""The coordinator's recovery: at start-up and then periodically, deliver every stored
decision not yet acknowledged, abort payments that nobody is deciding (recorded before a
crash, or past their deadline), and forget expired idempotency keys and revoked tokens."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import delete
from sqlalchemy.orm import Session

from server.common.clock import now
from server.common.db import Database
from server.common.logs import event
from server.gateway import payment_log
from server.gateway.coordinator import Coordinator
from server.gateway.models import PaymentState, RevokedToken
from server.gateway.tokens import TokenService

log = logging.getLogger(__name__)


class Recovery:
    def __init__(
        self, db: Database, coordinator: Coordinator, tokens: TokenService, idempotency_ttl: float
    ) -> None:
        self._db = db
        self._coordinator = coordinator
        self._tokens = tokens
        self._idempotency_ttl = idempotency_ttl

    async def run_once(self, *, at_start: bool = False) -> None:
        open_payments = await self._db.transaction(
            lambda s: payment_log.in_state(
                s, [PaymentState.PREPARING, PaymentState.COMMITTING, PaymentState.ABORTING]
            )
        )
        moment = now()
        for payment in open_payments:
            if payment.state is PaymentState.PREPARING:
                # At start-up nothing here is deciding it; later, only what outlived its deadline.
                orphan = not self._coordinator.is_in_flight(payment.id) and (
                    at_start or payment.deadline < moment
                )
                if orphan:
                    event(log, "recovery_abort", payment_id=payment.id)
                    await self._coordinator.abort_orphan(payment)
            else:
                self._coordinator.resume(payment)
        await self._db.transaction(self._forget_expired)
        self._tokens.forget_expired()

    def _forget_expired(self, session: Session) -> None:
        payment_log.forget_keys(session, now() - self._idempotency_ttl)
        session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now()))

    async def run_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("recovery pass failed")
