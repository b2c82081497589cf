"""Test helpers: PostgreSQL databases per test, a synchronous facade over the client
library, and reading balances and ledgers straight from the banks' databases."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
from sqlalchemy import create_engine, func, select, text

from client.api import ClientConfig, GatewayClient, RetryPolicy
from protofiles.minipay.v1 import gateway_pb2
from server.bank.models import Account, BankPayment, LedgerEntry, PaymentState
from server.cluster import GATEWAY, Cluster

T = TypeVar("T")
COMMITTED = gateway_pb2.PAYMENT_STATUS_COMMITTED
ABORTED = gateway_pb2.PAYMENT_STATUS_ABORTED
POSTGRES_URL = os.environ.get("MINIPAY_TEST_POSTGRES_URL", "")


def postgres_available() -> bool:
    if not POSTGRES_URL:
        return False
    try:
        with create_engine(POSTGRES_URL).connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@contextmanager
def postgres_databases(names: list[str]) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database per name, dropped afterwards."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    prefix = f"minipay_{uuid.uuid4().hex[:10]}"
    urls = {}
    base = POSTGRES_URL.rsplit("/", 1)[0]
    with admin.connect() as connection:
        for name in names:
            database = f"{prefix}_{name}".replace("-", "_")
            connection.execute(text(f'CREATE DATABASE "{database}"'))
            urls[name] = f"{base}/{database}"
    try:
        yield urls
    finally:
        with admin.connect() as connection:
            for url in urls.values():
                database = url.rsplit("/", 1)[1]
                connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def bank_url(cluster: Cluster, bank: str) -> str:
    return cluster.database_urls.get(bank) or f"sqlite:///{cluster.data_dir / f'bank-{bank}.db'}"


def gateway_url(cluster: Cluster) -> str:
    return cluster.database_urls.get(GATEWAY) or f"sqlite:///{cluster.data_dir / 'gateway.db'}"


def bank_state(cluster: Cluster, bank: str) -> dict[str, Any]:
    """Balances, holds, ledger sums and 2PC records of one bank, read from its database."""
    engine = create_engine(bank_url(cluster, bank))
    try:
        with engine.connect() as connection:
            accounts = {
                row.number: (row.balance, row.held)
                for row in connection.execute(select(Account.number, Account.balance, Account.held))
            }
            ledger = dict(
                connection.execute(
                    select(LedgerEntry.account_number, func.sum(LedgerEntry.amount)).group_by(
                        LedgerEntry.account_number
                    )
                ).all()
            )
            payments = dict(
                connection.execute(select(BankPayment.payment_id, BankPayment.state)).all()
            )
            entries = [
                tuple(row)
                for row in connection.execute(
                    select(
                        LedgerEntry.payment_id, LedgerEntry.account_number, LedgerEntry.amount
                    ).where(LedgerEntry.payment_id.is_not(None))
                )
            ]
    finally:
        engine.dispose()
    return {"accounts": accounts, "ledger": ledger, "payments": payments, "entries": entries}


def total_money(cluster: Cluster) -> int:
    return sum(
        balance
        for bank in cluster.bank_names
        for balance, _ in bank_state(cluster, bank)["accounts"].values()
    )


def assert_books_balance(cluster: Cluster) -> None:
    """Every balance equals its ledger, none is negative, no hold is left."""
    for bank in cluster.bank_names:
        state = bank_state(cluster, bank)
        for number, (balance, held) in state["accounts"].items():
            assert balance >= 0, f"{bank}/{number} is negative"
            assert held == 0, f"{bank}/{number} still holds {held}"
            assert balance == (state["ledger"].get(number) or 0), f"{bank}/{number} ledger"
        assert PaymentState.PREPARED not in state["payments"].values(), f"{bank} in doubt"


class Client:
    """A synchronous client for tests: each call runs on a fresh event loop."""

    def __init__(
        self,
        cluster: Cluster,
        certs: Path,
        cert: str = "client-1",
        token: str = "",
        max_attempts: int = 1,
    ) -> None:
        self.config = ClientConfig(
            gateway=cluster.gateway_address,
            ca=certs / "ca.pem",
            cert=certs / f"{cert}.pem",
            key=certs / f"{cert}-key.pem",
            home=cluster.data_dir / "home",
            timeout=30,
            max_attempts=max_attempts,
        )
        self.token = token

    def run(self, work: Callable[[GatewayClient], Awaitable[T]]) -> T:
        async def go() -> T:
            async with GatewayClient(
                self.config, self.token, RetryPolicy(max_attempts=self.config.max_attempts)
            ) as client:
                result = await work(client)
                self.token = client.token
                return result

        return asyncio.run(go())

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return self.run(lambda client: getattr(client, name)(*args, **kwargs))

        return call

    def error(self, name: str, *args: Any, **kwargs: Any) -> grpc.aio.AioRpcError:
        """Calls and returns the error it must raise."""
        try:
            getattr(self, name)(*args, **kwargs)
        except grpc.aio.AioRpcError as error:
            return error
        raise AssertionError(f"{name} succeeded but should have failed")


SEED_PASSWORDS = {
    "alice": "alice-dev-pass",
    "bob": "bob-dev-pass",
    "amir": "amir-dev-pass",
    "carol": "carol-dev-pass",
    "dave": "dave-dev-pass",
    "bea": "bea-dev-pass",
    "erin": "erin-dev-pass",
    "frank": "frank-dev-pass",
    "gia": "gia-dev-pass",
}
SEED_ACCOUNTS = {
    "alice": ("alpha", "A-1001"),
    "bob": ("alpha", "A-1002"),
    "amir": ("alpha", "A-1003"),
    "carol": ("beta", "B-2001"),
    "dave": ("beta", "B-2002"),
    "bea": ("beta", "B-2003"),
    "erin": ("gamma", "G-3001"),
    "frank": ("gamma", "G-3002"),
    "gia": ("gamma", "G-3003"),
}
ADMIN = ("admin", "admin-dev-pass")


def customer(
    cluster: Cluster, certs: Path, username: str, cert: str = "client-1", register: bool = True
) -> Client:
    """A registered, logged-in seed customer."""
    client = Client(cluster, certs, cert)
    bank, account = SEED_ACCOUNTS[username]
    if register:
        client.register(username, SEED_PASSWORDS[username], bank, account)
    client.login(username, SEED_PASSWORDS[username])
    return client


def admin(cluster: Cluster, certs: Path) -> Client:
    client = Client(cluster, certs, "admin")
    client.login(*ADMIN)
    return client
