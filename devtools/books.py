"""The banks' books and the gateway's payments, read straight from every database: what
tests and the benchmark judge a run by (balances, holds, ledgers, 2PC records, payment
states), and the benchmark's checks that a run conserved money (same total, cluster idle,
every balance moved by exactly the payments reported committed, and every balance the sum of
its ledger). The one copy for ``tests/`` and ``devtools/bench``."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, create_engine, func, select

from devtools.cluster import GATEWAY, Cluster
from server.bank.models import Account, BankPayment, LedgerEntry, ParticipantState
from server.gateway.models import Payment
from server.gateway.payment_state import OPEN_STATES, CoordinatorState

Moves = Mapping[tuple[str, str], int]  # net minor units per (bank, account)


@dataclass
class Books:
    balances: dict[tuple[str, str], int]
    held: int
    in_doubt: int  # bank records still PREPARED
    open_payments: int  # gateway payments not yet finished

    @property
    def total(self) -> int:
        return sum(self.balances.values())

    @property
    def idle(self) -> bool:
        return self.held == 0 and self.in_doubt == 0 and self.open_payments == 0


@dataclass(frozen=True)
class Checks:
    conserved: bool  # same total before and after
    balances_match: bool  # every balance moved by exactly the committed payments
    ledgers_match: bool  # every balance is the sum of its ledger entries
    problems: list[str]  # one line each, for the report


def database_url(cluster: Cluster, name: str) -> str:
    """The URL process NAME opens (SQLite in the cluster's folder, or its PostgreSQL one)."""
    return cluster.settings(name).db_url


@contextmanager
def connected(cluster: Cluster, name: str) -> Iterator[Connection]:
    """A connection to process NAME's database, its engine disposed of after."""
    engine = create_engine(database_url(cluster, name))
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


# -- one bank --------------------------------------------------------------------------------


def accounts(connection: Connection) -> dict[str, tuple[int, int]]:
    """Every account of a bank: number -> (balance, held)."""
    rows = connection.execute(select(Account.number, Account.balance, Account.held))
    return {number: (int(balance), int(held)) for number, balance, held in rows}


def ledger_sums(connection: Connection) -> dict[str, int]:
    """The sum of every account's ledger entries, by account number."""
    sums = select(LedgerEntry.account_number, func.sum(LedgerEntry.amount)).group_by(
        LedgerEntry.account_number
    )
    return {number: int(total or 0) for number, total in connection.execute(sums)}


def in_doubt(connection: Connection) -> int:
    """How many of a bank's payments are still PREPARED."""
    prepared = select(func.count()).select_from(BankPayment)
    return int(
        connection.scalar(prepared.where(BankPayment.state == ParticipantState.PREPARED)) or 0
    )


def bank_state(cluster: Cluster, bank: str) -> dict[str, Any]:
    """Balances and holds (``accounts``), ledger sums (``ledger``), 2PC records
    (``payments``: id -> state) and the payments' ledger entries (``entries``: payment id,
    account, amount) of one bank, read from its database."""
    with connected(cluster, bank) as connection:
        payments = {
            row.payment_id: row.state
            for row in connection.execute(select(BankPayment.payment_id, BankPayment.state))
        }
        entries = [
            (row.payment_id, row.account_number, row.amount)
            for row in connection.execute(
                select(
                    LedgerEntry.payment_id, LedgerEntry.account_number, LedgerEntry.amount
                ).where(LedgerEntry.payment_id.is_not(None))
            )
        ]
        return {
            "accounts": accounts(connection),
            "ledger": ledger_sums(connection),
            "payments": payments,
            "entries": entries,
        }


# -- the gateway -----------------------------------------------------------------------------


def gateway_payments(cluster: Cluster) -> dict[str, tuple[CoordinatorState, str | None]]:
    """Every payment the gateway recorded: its state and idempotency key."""
    with connected(cluster, GATEWAY) as connection:
        rows = connection.execute(select(Payment.id, Payment.state, Payment.idempotency_key))
        return {row.id: (row.state, row.idempotency_key) for row in rows}


def open_payments(cluster: Cluster) -> int:
    """How many of the gateway's payments are not finished yet."""
    with connected(cluster, GATEWAY) as connection:
        counted = select(func.count()).select_from(Payment).where(Payment.state.in_(OPEN_STATES))
        return int(connection.scalar(counted) or 0)


# -- the whole cluster -----------------------------------------------------------------------


def balances(cluster: Cluster) -> dict[tuple[str, str], int]:
    """Every account's balance, by (bank, number)."""
    found = {}
    for bank in cluster.bank_names:
        with connected(cluster, bank) as connection:
            found.update({(bank, n): balance for n, (balance, _) in accounts(connection).items()})
    return found


def read_books(cluster: Cluster) -> Books:
    """Balances, holds and open 2PC records, straight from every database."""
    balances: dict[tuple[str, str], int] = {}
    held = doubtful = 0
    for bank in cluster.bank_names:
        with connected(cluster, bank) as connection:
            for number, (balance, hold) in accounts(connection).items():
                balances[(bank, number)] = balance
                held += hold
            doubtful += in_doubt(connection)
    return Books(balances, held, doubtful, open_payments(cluster))


def wait_idle(cluster: Cluster, timeout: float) -> Books:
    """The books once no payment is open anywhere (or as they are when ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while True:
        books = read_books(cluster)
        if books.idle or time.monotonic() > deadline:
            return books
        time.sleep(0.2)


def ledger_mismatches(cluster: Cluster) -> list[str]:
    """Every account (``bank/number``) whose balance is not the sum of its ledger entries."""
    wrong = []
    for bank in cluster.bank_names:
        with connected(cluster, bank) as connection:
            sums = ledger_sums(connection)
            for number, (balance, _) in accounts(connection).items():
                if sums.get(number, 0) != balance:
                    wrong.append(f"{bank}/{number}")
    return wrong


def check(
    before: Books,
    after: Books,
    moves: Sequence[Moves],
    unknown: int,
    ledger_mismatched: Sequence[str] = (),
) -> Checks:
    """Compares the books around a run whose committed payments made ``moves``; with
    ``unknown`` outcomes (errors, pending answers) a balance mismatch proves nothing.
    LEDGER_MISMATCHED: the accounts whose balance is not the sum of their ledger."""
    problems = []
    if ledger_mismatched:
        problems.append(
            f"{len(ledger_mismatched)} balance(s) differ from the sum of their ledger: "
            + ", ".join(ledger_mismatched[:5])
        )
    if not after.idle:
        problems.append(
            f"cluster not idle: {after.held} held, {after.in_doubt} in doubt at banks, "
            f"{after.open_payments} open at the gateway"
        )
    conserved = before.total == after.total
    if not conserved:
        problems.append(f"money not conserved: {before.total} before, {after.total} after")
    expected = Counter(before.balances)
    for moved in moves:
        expected.update(moved)
    mismatched = [key for key in after.balances if after.balances[key] != expected.get(key, 0)]
    if mismatched and not unknown:
        problems.append(
            f"{len(mismatched)} balance(s) differ from the committed payments: "
            + ", ".join(f"{bank}/{account}" for bank, account in mismatched[:5])
        )
    return Checks(conserved, not mismatched, not ledger_mismatched, problems)
