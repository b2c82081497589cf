"""The banks' books, read straight from every database (balances, holds, open 2PC records,
ledger sums), and the checks that the run conserved money: same total, cluster idle, every
balance moved by exactly the payments reported committed, and every balance the sum of its
ledger."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import create_engine, func, select

from devtools.cluster import GATEWAY, Cluster
from server.bank.models import Account, BankPayment, LedgerEntry, ParticipantState
from server.gateway.models import Payment
from server.gateway.payment_state import CoordinatorState

OPEN_STATES = (CoordinatorState.PREPARING, CoordinatorState.COMMITTING, CoordinatorState.ABORTING)

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


def read_books(cluster: Cluster) -> Books:
    """Balances, holds and open 2PC records, straight from every database."""
    balances: dict[tuple[str, str], int] = {}
    held = in_doubt = 0
    for bank in cluster.bank_names:
        engine = create_engine(database_url(cluster, bank))
        try:
            with engine.connect() as connection:
                for number, balance, hold in connection.execute(
                    select(Account.number, Account.balance, Account.held)
                ):
                    balances[(bank, number)] = int(balance)
                    held += int(hold)
                in_doubt += int(
                    connection.scalar(
                        select(func.count())
                        .select_from(BankPayment)
                        .where(BankPayment.state == ParticipantState.PREPARED)
                    )
                    or 0
                )
        finally:
            engine.dispose()
    engine = create_engine(database_url(cluster, GATEWAY))
    try:
        with engine.connect() as connection:
            open_payments = int(
                connection.scalar(
                    select(func.count()).select_from(Payment).where(Payment.state.in_(OPEN_STATES))
                )
                or 0
            )
    finally:
        engine.dispose()
    return Books(balances, held, in_doubt, open_payments)


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
        engine = create_engine(database_url(cluster, bank))
        try:
            with engine.connect() as connection:
                totals = select(LedgerEntry.account_number, func.sum(LedgerEntry.amount))
                sums = {
                    number: int(total or 0)
                    for number, total in connection.execute(
                        totals.group_by(LedgerEntry.account_number)
                    )
                }
                for number, balance in connection.execute(select(Account.number, Account.balance)):
                    if sums.get(number, 0) != int(balance):
                        wrong.append(f"{bank}/{number}")
        finally:
            engine.dispose()
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
