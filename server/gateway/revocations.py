"""Which login tokens the gateway no longer honours: revoked token ids (logout) and identities
whose sessions were cut (disabled by an admin). Kept in the gateway's database, mirrored in
memory for the per-call check, and reloaded often enough that every replica honours a change
made at another within a second; the replica that makes a change applies it at once.

A reload reads only the rows written since the one before (by the database's clock, with a
margin for transactions still committing then), and revoked tokens leave memory, and the
database, once they would have expired anyway: customers logging in and out all day do not
make every replica read more twice a second.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from sqlalchemy import Connection, bindparam, case, delete, select
from sqlalchemy.sql import Executable

from minipay.errors import ErrorReason
from server.common.db import Database, db_now, per_dialect
from server.common.errors import Unauthenticated
from server.common.periodic import repeat
from server.common.principal import Claims
from server.gateway.models import Base

log = logging.getLogger(__name__)

REVOKED = Base.metadata.tables["revoked_tokens"]
RULES = Base.metadata.tables["session_rules"]
REFRESH_INTERVAL = 0.5
# A reload also reads what was written this long before the last one began: a transaction
# that wrote then may have committed only after it (a paused writer's open transaction is
# ended by the database within 5 s; see ``db.make_engine``).
OVERLAP = 15.0


@dataclass(frozen=True)
class SessionRule:
    disabled: bool
    not_before: float


class Revocations:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._revoked: dict[str, float] = {}  # jti -> when the token would have expired
        self._expiries: list[tuple[float, str]] = []  # the same, soonest first
        self._rules: dict[str, SessionRule] = {}  # identity -> rule
        self._loaded_at: float | None = None  # the database's clock at the last reload

    @property
    def held(self) -> int:
        """How many revoked tokens are held in memory."""
        return len(self._revoked)

    def refusal(self, claims: Claims) -> Unauthenticated | None:
        """Why a valid token is no longer honoured, or None."""
        if claims.jti in self._revoked:
            return Unauthenticated(
                "the login token was revoked: log in again", ErrorReason.TOKEN_REVOKED
            )
        rule = self._rules.get(claims.identity)
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

    def is_disabled(self, identity: str) -> bool:
        rule = self._rules.get(identity)
        return rule is not None and rule.disabled

    async def revoke(self, claims: Claims) -> None:
        await self._db.statements(
            lambda c: c.execute(
                _INSERT_REVOKED[c.dialect.name], {"b_jti": claims.jti, "b_exp": claims.expires_at}
            )
        )
        self._remember(claims.jti, claims.expires_at)

    async def set_disabled(self, identity: str, disabled: bool) -> None:
        """Disabling cuts every token of the identity now; enabling lets them log in again,
        while the tokens from before stay refused."""
        moment = self._clock()
        rule = await self._db.statements(lambda c: _save_rule(c, identity, disabled, moment))
        self._rules[identity] = rule

    async def refresh(self) -> int:
        """Reads what changed since the last reload (everything, the first time); returns how
        many rows it read."""
        since = None if self._loaded_at is None else self._loaded_at - OVERLAP
        loaded_at, revoked, rules = await self._db.statements(lambda c: _load(c, since))
        for jti, expires_at in revoked:
            self._remember(jti, expires_at)
        self._rules.update(rules)
        self._loaded_at = loaded_at
        self._forget_expired_in_memory()
        return len(revoked) + len(rules)

    async def forget_expired(self) -> None:
        cutoff = self._clock()
        await self._db.statements(
            lambda c: c.execute(delete(REVOKED).where(REVOKED.c.expires_at < cutoff))
        )

    async def run_forever(self, interval: float = REFRESH_INTERVAL) -> None:
        await repeat(self.refresh, interval, log, "cannot reload revoked tokens and disabled users")

    def _remember(self, jti: str, expires_at: float) -> None:
        if jti not in self._revoked:
            self._revoked[jti] = expires_at
            heapq.heappush(self._expiries, (expires_at, jti))

    def _forget_expired_in_memory(self) -> None:
        """A token past its expiry is refused for that alone: its revocation need not be kept."""
        moment = self._clock()
        while self._expiries and self._expiries[0][0] < moment:
            _, jti = heapq.heappop(self._expiries)
            self._revoked.pop(jti, None)


def _load(
    connection: Connection, since: float | None
) -> tuple[float, list[tuple[str, float]], dict[str, SessionRule]]:
    loaded_at = float(connection.execute(select(db_now())).scalar_one())
    revoked = select(REVOKED.c.jti, REVOKED.c.expires_at)
    rules = select(RULES.c.identity, RULES.c.disabled, RULES.c.not_before)
    if since is not None:
        revoked = revoked.where(REVOKED.c.revoked_at >= since)
        rules = rules.where(RULES.c.changed_at >= since)
    return (
        loaded_at,
        [(row.jti, row.expires_at) for row in connection.execute(revoked)],
        {
            row.identity: SessionRule(row.disabled, row.not_before)
            for row in connection.execute(rules)
        },
    )


def _save_rule(connection: Connection, identity: str, disabled: bool, moment: float) -> SessionRule:
    row = connection.execute(
        _UPSERT_RULE[connection.dialect.name],
        {
            "b_identity": identity,
            "b_disabled": disabled,
            "b_moment": moment,
            "b_first_not_before": moment if disabled else 0.0,
        },
    ).one()
    return SessionRule(row.disabled, row.not_before)


def _insert_revoked(dialect: ModuleType) -> Executable:
    statement: Executable = (
        dialect.insert(REVOKED)
        .values(jti=bindparam("b_jti"), expires_at=bindparam("b_exp"), revoked_at=db_now())
        .on_conflict_do_nothing(index_elements=["jti"])
    )
    return statement


def _upsert_rule(dialect: ModuleType) -> Executable:
    """Disabling moves ``not_before`` to now; enabling leaves it where the last cut put it."""
    statement = dialect.insert(RULES).values(
        identity=bindparam("b_identity"),
        disabled=bindparam("b_disabled"),
        not_before=bindparam("b_first_not_before"),
        changed_at=db_now(),
    )
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["identity"],
        set_={
            "disabled": statement.excluded.disabled,
            "not_before": case(
                (statement.excluded.disabled, bindparam("b_moment")), else_=RULES.c.not_before
            ),
            "changed_at": db_now(),
        },
    ).returning(RULES.c.disabled, RULES.c.not_before)
    return upsert


_INSERT_REVOKED = per_dialect(_insert_revoked)
_UPSERT_RULE = per_dialect(_upsert_rule)
