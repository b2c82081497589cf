"""This gateway replica's membership: its stable name, the fencing token of its current
incarnation, and its lease, all in the shared database and measured in the database's clock.

A replica renews its lease every third of its length. One that is killed, or paused, stops
renewing; once the lease has passed, the payments it owned are anyone's to take over (see
``payment_log.claim_orphans``). A replica that finds its own lease gone (it was paused) takes
a new token: every write it would still make with the old one is refused by the database, so
it can never overwrite what a survivor decided. Each renewal also counts the live replicas
(``live``): the rate limit gives each replica its share.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import ModuleType

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.sql import Executable

from server.common.db import Database, db_now, per_dialect
from server.common.errors import ConfigError
from server.common.logs import event
from server.gateway.models import Base

log = logging.getLogger(__name__)

REPLICAS = Base.metadata.tables["replicas"]
INCARNATIONS = Base.metadata.tables["incarnations"]
# How often a replica whose name is still leased looks again before refusing to start.
_WAIT_STEP = 0.25
# A lease is renewed this many times over its length: a renewal that is late, or lost once,
# still finds it live.
RENEWALS_PER_LEASE = 3


class Replica:
    def __init__(
        self,
        db: Database,
        name: str,
        lease: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._db = db
        self.name = name
        self.lease = lease
        self.token = 0  # none until ``join``
        self.live = 1  # replicas with a live lease (this one among them), as last counted
        self._on_new_token: list[Callable[[int], None]] = []
        self._sleep = sleep

    def on_new_token(self, callback: Callable[[int], None]) -> None:
        self._on_new_token.append(callback)

    async def join(self, *, alone: bool = False) -> None:
        """Takes the name with a new incarnation. A name whose lease is still renewed by a
        live process is refused; one left by a dead process is taken once its lease ends
        (at once when ``alone``: this process holds the database exclusively)."""
        deadline = asyncio.get_running_loop().time() + self.lease + 1.0
        while True:
            token = await self._db.statements(lambda c: _join(c, self.name, self.lease, alone))
            if token is not None:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise ConfigError(
                    f"replica name {self.name!r} is in use by a running gateway; "
                    "give this one another name (--name, MINIPAY_GATEWAY_NAME)"
                )
            await asyncio.sleep(_WAIT_STEP)
        self._take(token)
        await self._count_live()
        event(log, "replica_joined", replica=self.name, token=token, live=self.live)

    async def renew(self) -> bool:
        """Extends the lease (and counts the live replicas); False when it was lost (this
        replica was paused too long). A lease that has lapsed is never extended: its payments
        may be a survivor's by now."""
        renewed, live = await self._db.statements(
            lambda c: _renew(c, self.name, self.token, self.lease)
        )
        self.live = max(live, 1)
        return renewed

    async def _count_live(self) -> None:
        live = await self._db.statements(lambda c: int(c.execute(COUNT_LIVE).scalar_one()))
        self.live = max(live, 1)

    async def run_forever(self) -> None:
        while True:
            await self._sleep(self.lease / RENEWALS_PER_LEASE)
            try:
                if await self.renew():
                    continue
                event(log, "lease_lost", replica=self.name, token=self.token)
                await self.join()
            except ConfigError as error:
                log.error("cannot rejoin: %s", error)
            except Exception:
                log.exception("cannot renew the lease")

    async def leave(self) -> None:
        """Gives the lease up at a clean stop, so survivors need not wait for it."""
        await self._db.statements(
            lambda c: c.execute(LEAVE, {"b_name": self.name, "b_token": self.token})
        )

    def _take(self, token: int) -> None:
        self.token = token
        for callback in self._on_new_token:
            callback(token)


def _join(connection: Connection, name: str, lease: float, alone: bool) -> int | None:
    current = connection.execute(SELECT_REPLICA, {"b_name": name}).one_or_none()
    if current is not None and current.live and not alone:
        return None
    token = int(
        connection.execute(
            insert(INCARNATIONS)
            .values(replica=name, started_at=db_now())
            .returning(INCARNATIONS.c.token)
        ).scalar_one()
    )
    connection.execute(
        _UPSERT[connection.dialect.name], {"b_name": name, "b_token": token, "b_lease": lease}
    )
    return token


def _renew(connection: Connection, name: str, token: int, lease: float) -> tuple[bool, int]:
    result = connection.execute(RENEW, {"b_name": name, "b_token": token, "b_lease": lease})
    return bool(result.rowcount), int(connection.execute(COUNT_LIVE).scalar_one())


SELECT_REPLICA = select(
    REPLICAS.c.token, (REPLICAS.c.lease_expires_at > db_now()).label("live")
).where(REPLICAS.c.name == bindparam("b_name"))
RENEW = (
    update(REPLICAS)
    .where(
        REPLICAS.c.name == bindparam("b_name"),
        REPLICAS.c.token == bindparam("b_token"),
        REPLICAS.c.lease_expires_at > db_now(),
    )
    .values(lease_expires_at=db_now() + bindparam("b_lease"))
)
COUNT_LIVE = (
    select(func.count()).select_from(REPLICAS).where(REPLICAS.c.lease_expires_at > db_now())
)
LEAVE = (
    update(REPLICAS)
    .where(REPLICAS.c.name == bindparam("b_name"), REPLICAS.c.token == bindparam("b_token"))
    .values(lease_expires_at=0.0)
)


def _upsert(dialect: ModuleType) -> Executable:
    statement = dialect.insert(REPLICAS).values(
        name=bindparam("b_name"),
        token=bindparam("b_token"),
        lease_expires_at=db_now() + bindparam("b_lease"),
        started_at=db_now(),
    )
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "token": statement.excluded.token,
            "lease_expires_at": statement.excluded.lease_expires_at,
            "started_at": statement.excluded.started_at,
        },
    )
    return upsert


_UPSERT = per_dialect(_upsert)
