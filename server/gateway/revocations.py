"""Which login tokens the gateway no longer honours: revoked token ids (logout) and users whose
sessions were cut (disabled by an admin). Kept in the gateway's database, mirrored in memory
for the per-call check, and reloaded often enough that every replica honours a change made
at another within a second; the replica that makes a change applies it at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from minipay.errors import ErrorReason
from server.common.db import Database
from server.common.errors import Unauthenticated
from server.common.periodic import repeat
from server.common.principal import Claims
from server.gateway.models import RevokedToken, UserSession

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 0.5


@dataclass(frozen=True)
class SessionRule:
    disabled: bool
    not_before: float


class Revocations:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._revoked: dict[str, float] = {}  # jti -> when the token would have expired
        self._rules: dict[str, SessionRule] = {}  # username -> rule

    def refusal(self, claims: Claims) -> Unauthenticated | None:
        """Why a valid token is no longer honoured, or None."""
        if claims.jti in self._revoked:
            return Unauthenticated(
                "the login token was revoked: log in again", ErrorReason.TOKEN_REVOKED
            )
        rule = self._rules.get(claims.subject)
        if rule is not None:
            if rule.disabled:
                return Unauthenticated(
                    "this user is disabled; ask an admin", ErrorReason.ACCOUNT_DISABLED
                )
            if claims.issued_at < rule.not_before:
                return Unauthenticated(
                    "this session was ended by an admin: log in again", ErrorReason.TOKEN_REVOKED
                )
        return None

    def is_disabled(self, username: str) -> bool:
        rule = self._rules.get(username)
        return rule is not None and rule.disabled

    async def revoke(self, claims: Claims) -> None:
        def save(session: Session) -> None:
            if session.get(RevokedToken, claims.jti) is None:
                session.add(RevokedToken(jti=claims.jti, expires_at=claims.expires_at))

        await self._db.transaction(save)
        self._revoked[claims.jti] = claims.expires_at

    async def set_disabled(self, username: str, disabled: bool) -> None:
        """Disabling cuts every token of the user now; enabling lets them log in again, while
        the tokens from before stay refused."""
        moment = self._clock()

        def save(session: Session) -> SessionRule:
            row = session.get(UserSession, username)
            if row is None:
                row = UserSession(username=username, disabled=disabled, not_before=0.0)
                session.add(row)
            row.disabled = disabled
            if disabled:
                row.not_before = moment
            return SessionRule(row.disabled, row.not_before)

        self._rules[username] = await self._db.transaction(save)

    async def refresh(self) -> None:
        def load(session: Session) -> tuple[dict[str, float], dict[str, SessionRule]]:
            revoked = {row.jti: row.expires_at for row in session.scalars(select(RevokedToken))}
            rules = {
                row.username: SessionRule(row.disabled, row.not_before)
                for row in session.scalars(select(UserSession))
            }
            return revoked, rules

        self._revoked, self._rules = await self._db.transaction(load)

    async def forget_expired(self) -> None:
        cutoff = self._clock()
        await self._db.transaction(
            lambda s: s.execute(delete(RevokedToken).where(RevokedToken.expires_at < cutoff))
        )

    async def run_forever(self, interval: float = REFRESH_INTERVAL) -> None:
        await repeat(self.refresh, interval, log, "cannot reload revoked tokens and disabled users")
