"""Fixtures for the fast domain tests: temporary SQLite databases with each kind's schema,
a bank with a few accounts, and a fake of the banks at the coordinator's seam. Nothing here
starts a process or opens a socket."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from server.bank import accounts
from server.bank.models import Base as BankBase
from server.common.db import Database
from server.common.vocabulary import Leg, Reason
from server.gateway.models import Base as GatewayBase
from server.gateway.payment_state import Delivered, Prepared, Vote, no_vote
from server.gateway.replicas import Replica


@pytest.fixture(autouse=True)
def no_network_and_no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The domain tests run in this process alone: a network socket or a child process is
    a test in the wrong folder. (asyncio's own socketpair is neither.)"""

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a unit test tried to use the network or start a process")

    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


# Opening balances (minor units) of the unit tests' bank.
OPENING = {"A-1": 10_000, "A-2": 500, "A-3": 0}


def sqlite_database(path: Path, base: type[GatewayBase] | type[BankBase]) -> Database:
    database = Database(f"sqlite:///{path}")
    base.metadata.create_all(database.engine)
    return database


@pytest.fixture
def gateway_db(tmp_path: Path) -> Iterator[Database]:
    database = sqlite_database(tmp_path / "gateway.db", GatewayBase)
    yield database
    database.close()


@pytest.fixture
def replica(gateway_db: Database) -> Replica:
    """This replica, with a live lease (a minute long) in the gateway's database."""
    joined = Replica(gateway_db, "unit", lease=60.0)
    asyncio.run(joined.join(alone=True))
    return joined


@pytest.fixture
def bank_db(tmp_path: Path) -> Iterator[Database]:
    """A bank with USD accounts A-1 (100.00), A-2 (5.00) and A-3 (empty), and a JPY one."""
    database = sqlite_database(tmp_path / "bank.db", BankBase)

    def open_accounts(session: object) -> None:
        for number, balance in OPENING.items():
            accounts.open_customer(
                session,  # type: ignore[arg-type]
                username=f"user-{number}",
                name=number,
                password_hash="-",
                role="customer",
                account_number=number,
                currency="USD",
                initial_balance=balance,
            )
        accounts.open_customer(
            session,  # type: ignore[arg-type]
            username="yen",
            name="Yen",
            password_hash="-",
            role="customer",
            account_number="J-1",
            currency="JPY",
            initial_balance=1000,
        )

    database.run_sync(open_accounts)
    yield database
    database.close()


class FakeBanks:
    """The coordinator's ``Participants``, scripted: every bank votes yes and acknowledges
    unless told otherwise. Records every call; ``delivered`` holds only the decisions a bank
    applied (delivered alone or riding on a Prepare)."""

    def __init__(self) -> None:
        self.votes: dict[str, Vote] = {}  # bank -> the vote it gives every payment
        self.prepare_delay: dict[str, float] = {}  # bank -> seconds before it answers
        self.failing_prepares: dict[str, int] = {}  # bank -> how many Prepares fail whole
        self.unacknowledged: dict[str, int] = {}  # bank -> how many deliveries it ignores
        self.poison: set[str] = set()  # payments a bank refuses any call that names
        self.prepared: list[tuple[str, list[Leg]]] = []
        self.delivered: list[tuple[str, bool, list[str]]] = []
        self.riders: list[tuple[str, list[str]]] = []  # (bank, decisions) on every Prepare
        self.carried: list[tuple[str, bool, list[str]]] = []  # decisions that rode a Prepare
        self.calls: list[tuple[str, bool, list[str]]] = []  # every Commit and Abort sent
        self.request_ids: list[tuple[str, list[str]]] = []  # (method, ids) of every call

    async def prepare(
        self,
        bank: str,
        legs: Sequence[Leg],
        timeout: float,
        request_ids: Sequence[str],
        commit: Sequence[str] = (),
        abort: Sequence[str] = (),
    ) -> Prepared:
        self.prepared.append((bank, list(legs)))
        self.riders.append((bank, [*commit, *abort]))
        self.request_ids.append(("Prepare", list(request_ids)))
        ids = [leg.payment_id for leg in legs]
        if self.failing_prepares.get(bank, 0) > 0:  # what the real client makes of a failure
            self.failing_prepares[bank] -= 1
            return Prepared(dict.fromkeys(ids, no_vote(Reason.BANK_UNAVAILABLE)), set())
        try:
            await asyncio.wait_for(asyncio.sleep(self.prepare_delay.get(bank, 0)), timeout)
        except TimeoutError:  # what the real client makes of DEADLINE_EXCEEDED
            return Prepared(dict.fromkeys(ids, no_vote(Reason.TIMEOUT)), set())
        acknowledged = set()
        for decision, decided in ((True, commit), (False, abort)):
            if decided:
                self.carried.append((bank, decision, list(decided)))
                self.delivered.append((bank, decision, list(decided)))
                acknowledged |= set(decided)
        return Prepared(dict.fromkeys(ids, self.votes.get(bank, Vote(True))), acknowledged)

    async def deliver(
        self,
        bank: str,
        commit: bool,
        payment_ids: Sequence[str],
        timeout: float,
        request_ids: Sequence[str] = (),
    ) -> Delivered:
        self.calls.append((bank, commit, list(payment_ids)))
        self.request_ids.append(("Commit" if commit else "Abort", list(request_ids)))
        if self.poison.intersection(payment_ids):
            return Delivered(set(), refused=True)
        if self.unacknowledged.get(bank, 0) > 0:
            self.unacknowledged[bank] -= 1
            return Delivered(set(), unreachable=True)
        self.delivered.append((bank, commit, list(payment_ids)))
        return Delivered(set(payment_ids))

    def decisions_for(self, payment_id: str) -> list[tuple[str, bool]]:
        """Every (bank, commit?) applied for the payment, in order."""
        return [(bank, commit) for bank, commit, ids in self.delivered if payment_id in ids]
