"""Test helpers shared by the files that run real clusters: PostgreSQL databases per test,
the dev seed (read from the seed file itself), a synchronous facade over the client library,
certificate files by name, and reading balances, ledgers and 2PC states straight from the
databases to judge what a test did."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
from sqlalchemy import select

from certificate.ca import SERVICES_CA
from devtools.books import balances as balances
from devtools.books import bank_state as bank_state
from devtools.books import connected, database_url
from devtools.books import gateway_payments as gateway_payments
from devtools.cluster import GATEWAY, SETTINGS_PREFIX, Cluster
from devtools.customers import ADMIN as ADMIN
from devtools.customers import log_in_everyone as log_in_everyone
from devtools.customers import seed_customers
from devtools.scratch import fresh_postgres_databases, postgres_reachable
from minipay.client.api import ApiError, ClientConfig, GatewayClient, PaymentStatus, RetryPolicy
from minipay.service_names import GATEWAY_SERVER_NAME, bank_server_name
from server.bank.models import ParticipantState
from server.common.settings import (
    ProcessSettings,
    environment,
)
from server.common.tls import TlsFiles, channel_credentials, channel_options, secure_channel
from server.gateway.models import Payment, PaymentPayee
from server.gateway.payment_state import OPEN_STATES as OPEN_STATES
from server.gateway.payment_state import CoordinatorState

T = TypeVar("T")
COMMITTED = PaymentStatus.COMMITTED
ABORTED = PaymentStatus.ABORTED
POSTGRES_URL = os.environ.get("MINIPAY_TEST_POSTGRES_URL", "")

# -- the dev seed, as the seed file says ----------------------------------------------------

_SEED = seed_customers()
SEED_PASSWORDS = {row.username: row.password for row in _SEED}
SEED_ACCOUNTS = {row.username: (row.bank, row.account) for row in _SEED}
SEED_BALANCES = {(row.bank, row.account): row.balance for row in _SEED}


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def server_env(**values: object) -> dict[str, str]:
    """The variables that give every server process these settings (fields they share)."""
    return environment(ProcessSettings, **values)


@contextmanager
def only_variables(given: Mapping[str, str]) -> Iterator[None]:
    """For a while, GIVEN are this process's only MINIPAY_* variables (the settings of a
    server's or a command line's main() called in this process); then they are as before."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(SETTINGS_PREFIX)}
    for name in saved:
        del os.environ[name]
    os.environ.update(given)
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith(SETTINGS_PREFIX)]:
            del os.environ[name]
        os.environ.update(saved)


def certificate_files(certs: Path, name: str) -> TlsFiles:
    """The services CA, and the certificate and key of NAME, in folder CERTS."""
    return TlsFiles(certs / SERVICES_CA, certs / f"{name}.pem", certs / f"{name}-key.pem")


def server_name(target: str) -> str:
    """The name process TARGET's certificate proves (a gateway replica's, or a bank's)."""
    return GATEWAY_SERVER_NAME if target.startswith(GATEWAY) else bank_server_name(target)


def channel(cluster: Cluster, certs: Path, target: str, cert: str) -> grpc.Channel:
    """A channel to process TARGET presenting certificate CERT, checking TARGET's name."""
    return grpc.secure_channel(
        cluster.address(target),
        channel_credentials(certificate_files(certs, cert)),
        channel_options(server_name(target)),
    )


def aio_channel(cluster: Cluster, certs: Path, target: str, cert: str) -> grpc.aio.Channel:
    return secure_channel(
        cluster.address(target), certificate_files(certs, cert), server_name(target)
    )


# -- PostgreSQL ----------------------------------------------------------------------------


def postgres_available() -> bool:
    return postgres_reachable(POSTGRES_URL)


@contextmanager
def running_cluster(folder: Path, certs: Path, env: dict[str, str]) -> Iterator[Cluster]:
    """A cluster started in FOLDER for a module's tests, stopped whatever happens."""
    cluster = Cluster(folder, env=dict(env), certs=certs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def postgres_databases(names: list[str]) -> AbstractContextManager[dict[str, str]]:
    """A fresh PostgreSQL database per name on the test server, dropped afterwards."""
    return fresh_postgres_databases(POSTGRES_URL, names, prefix=f"minipay_{uuid.uuid4().hex[:10]}")


# -- what the databases say ---------------------------------------------------------------


def bank_url(cluster: Cluster, bank: str) -> str:
    return database_url(cluster, bank)


def gateway_url(cluster: Cluster) -> str:
    return database_url(cluster, GATEWAY)


def gateway_states(cluster: Cluster) -> dict[str, CoordinatorState]:
    return {pid: state for pid, (state, _) in gateway_payments(cluster).items()}


Balances = dict[tuple[str, str], int]


def moved(before: Balances, after: Balances) -> Balances:
    """Only the accounts whose balance changed, with the change."""
    return {key: after[key] - before[key] for key in after if after[key] != before.get(key)}


def total_money(cluster: Cluster) -> int:
    return sum(balances(cluster).values())


def ledger_entries(cluster: Cluster, payment_id: str) -> set[tuple[str, str, int]]:
    """(bank, account, amount) of every ledger entry the payment made, at any bank."""
    return {
        (bank, account, amount)
        for bank in cluster.bank_names
        for pid, account, amount in bank_state(cluster, bank)["entries"]
        if pid == payment_id
    }


def ledger_counts(cluster: Cluster) -> Counter[str]:
    """How many ledger entries each payment has, over every bank."""
    return Counter(
        entry[0] for bank in cluster.bank_names for entry in bank_state(cluster, bank)["entries"]
    )


def assert_books_balance(cluster: Cluster) -> None:
    """Every balance equals its ledger, none is negative, no hold is left, nothing in doubt."""
    for bank in cluster.bank_names:
        state = bank_state(cluster, bank)
        for number, (balance, held) in state["accounts"].items():
            assert balance >= 0, f"{bank}/{number} is negative"
            assert held == 0, f"{bank}/{number} still holds {held}"
            assert balance == (state["ledger"].get(number) or 0), f"{bank}/{number} ledger"
        assert ParticipantState.PREPARED not in state["payments"].values(), f"{bank} in doubt"


def settled(cluster: Cluster) -> bool:
    """Nothing in doubt anywhere: every payment finished at the gateway and every bank."""
    if any(state in OPEN_STATES for state in gateway_states(cluster).values()):
        return False
    try:
        assert_books_balance(cluster)
    except AssertionError:
        return False
    return True


def settle(cluster: Cluster, timeout: float = 30.0) -> None:
    """Waits for every decision to reach every bank, then checks the books."""
    wait_until(lambda: settled(cluster), timeout, "every payment to settle")
    assert_books_balance(cluster)


def payee_counts(cluster: Cluster) -> Counter[str]:
    """How many payees each split payment has (a plain payment has none here)."""
    with connected(cluster, GATEWAY) as connection:
        rows = connection.execute(select(PaymentPayee.payment_id))
        return Counter(row.payment_id for row in rows)


def assert_atomic(cluster: Cluster, money_before: int) -> None:
    """Once settled: every payment committed at every bank involved or at none (a debit and
    a credit, or a split payment's debit and one credit per payee), money conserved."""
    settle(cluster)
    entries = ledger_counts(cluster)
    payees = payee_counts(cluster)
    for payment_id, state in gateway_states(cluster).items():
        legs = 1 + (payees[payment_id] or 1)
        expected = legs if state is CoordinatorState.COMMITTED else 0
        assert entries[payment_id] == expected, (payment_id, state)
    assert total_money(cluster) == money_before


def refund_counts(cluster: Cluster) -> dict[str, tuple[int, int, int]]:
    """(amount, reserved for refunds, refunded) of every payment that is not a refund."""
    with connected(cluster, GATEWAY) as connection:
        rows = connection.execute(
            select(Payment.id, Payment.amount, Payment.refund_reserved, Payment.refunded).where(
                Payment.refund_of.is_(None)
            )
        )
        return {row.id: (row.amount, row.refund_reserved, row.refunded) for row in rows}


def assert_refunds_within_payments(cluster: Cluster) -> None:
    """No payment refunded beyond its amount: what each payment reserves for its refunds is
    what its refunds committed or in flight add up to, what it counts as refunded what they
    committed, and neither is more than its amount."""
    with connected(cluster, GATEWAY) as connection:
        refunds = connection.execute(
            select(Payment.refund_of, Payment.amount, Payment.state).where(
                Payment.refund_of.is_not(None)
            )
        ).all()
    reserved: Counter[str] = Counter()
    refunded: Counter[str] = Counter()
    for original, amount, state in refunds:
        if state is not CoordinatorState.ABORTING and state is not CoordinatorState.ABORTED:
            reserved[original] += amount
        if state in (CoordinatorState.COMMITTING, CoordinatorState.COMMITTED):
            refunded[original] += amount
    for payment_id, (amount, kept, counted) in refund_counts(cluster).items():
        assert 0 <= counted <= kept <= amount, (payment_id, amount, kept, counted)
        assert (kept, counted) == (reserved[payment_id], refunded[payment_id]), payment_id


# -- clients -------------------------------------------------------------------------------


def client_config(
    cluster: Cluster,
    certs: Path,
    cert: str = "client-1",
    timeout: float = 30,
    attempts: int = 1,
    gateway: str = "",
) -> ClientConfig:
    """A client's configuration: the first gateway replica unless GATEWAY says otherwise
    (one address, or several, comma separated)."""
    files = certificate_files(certs, cert)
    return ClientConfig(
        gateway=gateway or cluster.gateway_address,
        ca=files.ca,
        cert=files.cert,
        key=files.key,
        home=cluster.data_dir / "home",
        timeout=timeout,
        max_attempts=attempts,
    )


class Client:
    """A synchronous client for tests: each call runs on a fresh event loop."""

    def __init__(
        self,
        cluster: Cluster,
        certs: Path,
        cert: str = "client-1",
        token: str = "",
        max_attempts: int = 1,
        gateway: str = "",
    ) -> None:
        self.config = client_config(cluster, certs, cert, attempts=max_attempts, gateway=gateway)
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

    def error(self, method: str, /, *args: Any, **kwargs: Any) -> ApiError:
        """Calls METHOD and returns the error it must raise."""
        try:
            getattr(self, method)(*args, **kwargs)
        except ApiError as error:
            return error
        raise AssertionError(f"{method} succeeded but should have failed")


def customer(
    cluster: Cluster, certs: Path, username: str, cert: str = "client-1", register: bool = True
) -> Client:
    """A seed customer, registered (once per cluster) and logged in."""
    client = Client(cluster, certs, cert)
    if register:
        client.register(username, SEED_PASSWORDS[username], *SEED_ACCOUNTS[username])
    client.login(username, SEED_PASSWORDS[username])
    return client


def admin(cluster: Cluster, certs: Path) -> Client:
    client = Client(cluster, certs, "admin")
    client.login(*ADMIN)
    return client


def assert_reconciled(cluster: Cluster, certs: Path, older_than: int = 1) -> Any:
    """Runs ``admin reconcile`` (through the gateway, as an admin) and fails on any finding,
    naming each; returns the report. For the end of a test, once everything settled."""
    # Any live replica will do (the first may be the one a test killed).
    boss = Client(cluster, certs, "admin", max_attempts=3, gateway=cluster.gateway_addresses)
    boss.login(*ADMIN)
    # A bank restarted by the test may not be reachable again from the gateway just yet.
    wait_until(
        lambda: all(bank.serving for bank in boss.list_banks().banks), what="every bank to answer"
    )
    report = boss.reconcile(older_than)
    findings = "\n".join(f"{f.code} {f.bank} {f.payment_id} {f.detail}" for f in report.findings)
    assert report.agreed, f"reconcile found {report.findings_total}:\n{findings}"
    return report
