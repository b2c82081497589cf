"""Preloading: N finished payments written straight into the databases (not through the API)
before a run, so that it measures a gateway whose tables are as full as a day of traffic
leaves them.

Every payment is COMMITTED, cross-bank, between two seed customers, created at a random
moment of the past day. The gateway's database gets its ``payments`` row (idempotency key,
fingerprint, owner); the payer's bank and the payee's get its ``bank_payments`` record, its
leg and its ledger entry, in time order with running ``balance_after``. Where an account's
running balance would go below zero, one deposit before the first payment covers it, so that
every balance stays the sum of its ledger. The cluster must be stopped (its servers hold the
SQLite files): rows go in with one transaction per database, ``executemany`` under ``PRAGMA
synchronous=OFF`` on SQLite and ``COPY`` on PostgreSQL (then ``ANALYZE``, as autovacuum would
after such a load), one database after the other (threads only fought over the GIL).
"""

from __future__ import annotations

import functools
import os
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from devtools.bench.books import database_url
from devtools.bench.load import AMOUNT_RANGE, Customer
from devtools.cluster import GATEWAY, Cluster
from server.bank.models import Account, BankPayment, LedgerEntry, Leg, ParticipantState
from server.common.db import is_sqlite, sqlite_path
from server.common.vocabulary import Side
from server.gateway.models import Deposit, Payment
from server.gateway.payment_log import new_payment_id
from server.gateway.payment_state import CoordinatorState, PaymentOrder

DAY = 86_400.0

OWNER = 0  # owner_token and decided_by of the preloaded payments: no live replica's
# Column order of the rows written; checked against the models when the module loads.
PAYMENT_COLUMNS = [
    "id",
    "payer",
    "from_bank",
    "from_account",
    "to_bank",
    "to_account",
    "amount",
    "currency",
    "state",
    "reason_code",
    "reason",
    "idempotency_key",
    "fingerprint",
    "deadline",
    "created_at",
    "decided_at",
    "completed_at",
    "owner_token",
    "decided_by",
]
BANK_PAYMENT_COLUMNS = ["payment_id", "state", "reason_code", "reason", "created_at", "decided_at"]
LEG_COLUMNS = ["payment_id", "side", "account_number", "amount", "currency"]
LEDGER_COLUMNS = [
    "account_number",
    "amount",
    "balance_after",
    "payment_id",
    "deposit_id",
    "created_at",
]
DEPOSIT_COLUMNS = [
    "deposit_id",
    "bank",
    "account",
    "amount",
    "currency",
    "admin",
    "state",
    "created_at",
    "applied_at",
]
TABLES = {
    "payments": (Payment, PAYMENT_COLUMNS),
    "deposits": (Deposit, DEPOSIT_COLUMNS),
    "bank_payments": (BankPayment, BANK_PAYMENT_COLUMNS),
    "legs": (Leg, LEG_COLUMNS),
    "ledger_entries": (LedgerEntry, LEDGER_COLUMNS),
}
for _model, _columns in TABLES.values():
    assert set(_columns) <= set(_model.__table__.columns.keys()), _model

Row = tuple[Any, ...]
Balances = dict[str, int]  # account number -> its new balance
Writer = Callable[[str, Iterable[tuple[str, Iterable[Row]]], Balances], int]


@dataclass(frozen=True)
class Replay:
    """A preloaded payment that a replay asks for again: same payer, payee, amount, key."""

    payer: int  # index into the customers
    payee: int
    amount: int
    key: str
    payment_id: str


@dataclass
class Preloaded:
    payments: int
    seconds: float
    rows: dict[str, int]  # rows written per database
    deposits: int  # minor units deposited so that no running balance went below zero
    busiest: int  # the customer with the most preloaded payments (in and out)
    replays: list[Replay] = field(default_factory=list)


@dataclass
class Plan:
    """The payments, in time order, as columns."""

    times: list[float]
    payers: list[int]
    payees: list[int]
    amounts: list[int]
    ids: list[str]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.times)


def make_plan(customers: Sequence[Customer], count: int, rng: random.Random, end: float) -> Plan:
    """COUNT cross-bank payments at random moments of the day before END."""
    elsewhere = [
        [i for i, other in enumerate(customers) if other.bank != customer.bank]
        for customer in customers
    ]
    times = sorted(end - DAY + rng.random() * (DAY - 1.0) for _ in range(count))
    payers = [rng.randrange(len(customers)) for _ in range(count)]
    payees = [rng.choice(elsewhere[payer]) for payer in payers]
    amounts = [rng.randint(*AMOUNT_RANGE) for _ in range(count)]
    ids = [new_payment_id(at, rng.getrandbits(80)) for at in times]
    keys = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]
    return Plan(times, payers, payees, amounts, ids, keys)


@functools.lru_cache(maxsize=100_000)
def _fingerprint(to_bank: str, to_account: str, amount: int, currency: str) -> str:
    """What the gateway stores to tell a replay from a reuse of the key (the same formula)."""
    order = PaymentOrder("", "", "", to_bank, to_account, amount, currency, "")
    return order.fingerprint


def gateway_rows(
    plan: Plan, customers: Sequence[Customer], currencies: dict[str, str], timeout: float
) -> Iterator[Row]:
    committed = CoordinatorState.COMMITTED.name
    for i, created in enumerate(plan.times):
        payer, payee = customers[plan.payers[i]], customers[plan.payees[i]]
        currency = currencies[payer.account]
        amount = plan.amounts[i]
        yield (
            plan.ids[i],
            payer.username,
            payer.bank,
            payer.account,
            payee.bank,
            payee.account,
            amount,
            currency,
            committed,
            "",
            "",
            plan.keys[i],
            _fingerprint(payee.bank, payee.account, amount, currency),
            created + timeout,
            created,
            created + 0.008,
            created + 0.012,
            OWNER,
            OWNER,
        )


@dataclass
class BankLoad:
    """What one bank gets: its records of the payments it took part in, their legs, the
    ledger entries with running balances, and each account's new balance."""

    payments: list[Row] = field(default_factory=list)
    legs: list[Row] = field(default_factory=list)
    ledger: list[Row] = field(default_factory=list)
    balances: dict[str, int] = field(default_factory=dict)
    deposited: int = 0
    deposits: list[Row] = field(default_factory=list)  # the gateway's records of them


def bank_load(
    plan: Plan,
    customers: Sequence[Customer],
    bank: str,
    accounts: dict[str, tuple[int, str]],  # number -> (balance now, currency)
) -> BankLoad:
    """Bank BANK's rows for the plan; a deposit first wherever a running balance would go
    below zero."""
    moves: list[tuple[int, str, str, int]] = []  # (payment index, account, side, change)
    for i in range(len(plan)):
        payer, payee = customers[plan.payers[i]], customers[plan.payees[i]]
        if payer.bank == bank:
            moves.append((i, payer.account, Side.DEBIT.value, -plan.amounts[i]))
        if payee.bank == bank:
            moves.append((i, payee.account, Side.CREDIT.value, plan.amounts[i]))
    running: Counter[str] = Counter()
    lowest: Counter[str] = Counter()
    for _, account, _, change in moves:
        running[account] += change
        lowest[account] = min(lowest[account], running[account])
    load = BankLoad()
    balance = {number: now for number, (now, _) in accounts.items()}
    first = plan.times[0] if len(plan) else time.time()
    for number in sorted(lowest):
        deposit = max(0, -(balance[number] + lowest[number]))
        if deposit:
            balance[number] += deposit
            load.deposited += deposit
            deposit_id = f"preload:{number}:{uuid.uuid4().hex}"
            load.ledger.append((number, deposit, balance[number], None, deposit_id, first - 1.0))
            # Known to the gateway too, as an admin's deposit is: reconcile finds it there.
            currency = accounts[number][1]
            load.deposits.append(
                (
                    deposit_id,
                    bank,
                    number,
                    deposit,
                    currency,
                    "preload",
                    "APPLIED",
                    first - 1.0,
                    first - 1.0,
                )
            )
    committed = ParticipantState.COMMITTED.name
    seen: set[int] = set()
    for i, account, side, change in moves:
        created = plan.times[i]
        if i not in seen:
            seen.add(i)
            load.payments.append((plan.ids[i], committed, "", "", created + 0.004, created + 0.01))
        load.legs.append((plan.ids[i], side, account, abs(change), accounts[account][1]))
        balance[account] += change
        load.ledger.append((account, change, balance[account], plan.ids[i], None, created + 0.01))
    load.balances = {number: balance[number] for number in running}
    return load


# -- writing -----------------------------------------------------------------------------------


def _write_sqlite(
    path: str, tables: Iterable[tuple[str, Iterable[Row]]], balances: Balances
) -> int:
    connection = sqlite3.connect(path, isolation_level=None)
    written = 0
    try:
        connection.execute("PRAGMA synchronous=OFF")  # this connection, for the load only
        connection.execute("PRAGMA cache_size=-1048576")  # 1 GiB: the indexes stay in memory
        connection.execute("BEGIN IMMEDIATE")
        for table, rows in tables:
            # Secondary indexes are built once at the end: faster than row by row.
            indexes = connection.execute(
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                (table,),
            ).fetchall()
            for name, _ in indexes:
                connection.execute(f'DROP INDEX "{name}"')
            columns = TABLES[table][1]
            marks = ", ".join("?" * len(columns))
            cursor = connection.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
            )
            written += cursor.rowcount
            for _, sql in indexes:
                connection.execute(sql)
        if balances:
            connection.executemany(
                "UPDATE accounts SET balance = ? WHERE number = ?",
                [(balance, number) for number, balance in balances.items()],
            )
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return written


# The indexes of a table that no constraint owns (those a load may drop and build again).
_PLAIN_INDEXES = """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.schemaname = current_schema() AND i.tablename = %s
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
"""


def _write_postgres(
    url: str, tables: Iterable[tuple[str, Iterable[Row]]], balances: Balances
) -> int:
    written = 0
    with psycopg.connect(url) as connection:  # one transaction, committed on exit
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
            for table, rows in tables:
                # Secondary indexes are built once at the end: faster than row by row.
                indexes = cursor.execute(_PLAIN_INDEXES, (table,)).fetchall()
                for name, _ in indexes:
                    cursor.execute(f'DROP INDEX "{name}"')
                columns = ", ".join(TABLES[table][1])
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                        written += 1
                for _, definition in indexes:
                    cursor.execute(definition)
            if balances:
                cursor.executemany(
                    "UPDATE accounts SET balance = %s WHERE number = %s",
                    [(balance, number) for number, balance in balances.items()],
                )
        connection.commit()
        connection.execute("ANALYZE")  # what autovacuum would do soon after such a load
        connection.commit()
    return written


def _writer(url: str) -> tuple[Writer, str]:
    """How to write the database at URL, and the address that writer takes."""
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is None:
            raise ValueError(f"cannot preload an in-memory database ({url})")
        return _write_sqlite, str(path)
    return _write_postgres, make_url(url).set(drivername="postgresql").render_as_string(False)


def read_accounts(cluster: Cluster, bank: str) -> dict[str, tuple[int, str]]:
    """Every account of BANK: its balance and currency; none may be in doubt."""
    from sqlalchemy import create_engine, select

    engine = create_engine(database_url(cluster, bank))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    Account.number,
                    Account.balance,
                    Account.held,
                    Account.incoming,
                    Account.currency,
                )
            ).all()
    finally:
        engine.dispose()
    if any(row.held or row.incoming for row in rows):
        raise RuntimeError(f"bank {bank} has payments in doubt: preload a stopped, idle cluster")
    return {row.number: (int(row.balance), row.currency) for row in rows}


def preload(
    cluster: Cluster,
    customers: Sequence[Customer],
    count: int,
    seed: int,
    timeout: float,
    sample: int = 300,
) -> Preloaded:
    """Writes COUNT finished payments into the stopped CLUSTER's databases; returns what it
    wrote and SAMPLE recent payments to replay."""
    started = time.perf_counter()
    rng = random.Random(f"preload-{seed}")
    plan = make_plan(customers, count, rng, time.time() - 60.0)
    accounts = {bank: read_accounts(cluster, bank) for bank in cluster.bank_names}
    currencies = {
        number: currency for rows in accounts.values() for number, (_, currency) in rows.items()
    }
    missing = {c.account for c in customers} - currencies.keys()
    if missing:
        raise RuntimeError(f"accounts not found at their banks: {', '.join(sorted(missing))}")
    rows = {}
    loads = {bank: bank_load(plan, customers, bank, accounts[bank]) for bank in cluster.bank_names}
    writer, address = _writer(database_url(cluster, GATEWAY))
    payments = gateway_rows(plan, customers, currencies, timeout)
    made = [row for load in loads.values() for row in load.deposits]
    rows[GATEWAY] = writer(address, [("payments", payments), ("deposits", made)], {})
    deposits = 0
    for bank in cluster.bank_names:
        load = loads[bank]
        deposits += load.deposited
        writer, address = _writer(database_url(cluster, bank))
        tables: list[tuple[str, Iterable[Row]]] = [
            ("bank_payments", load.payments),
            ("legs", load.legs),
            ("ledger_entries", load.ledger),
        ]
        rows[bank] = writer(address, tables, load.balances)
    # The SQLite load skipped fsync: flush it now, or the kernel's writeback of a gigabyte
    # would slow the measured run's fsyncs, which a day of real traffic would not.
    os.sync()
    involved: Counter[int] = Counter(plan.payers)
    involved.update(plan.payees)
    busiest = involved.most_common(1)[0][0] if involved else 0
    return Preloaded(
        payments=count,
        seconds=round(time.perf_counter() - started, 2),
        rows=rows,
        deposits=deposits,
        busiest=busiest,
        replays=_replays(plan, rng, sample),
    )


def _replays(plan: Plan, rng: random.Random, sample: int) -> list[Replay]:
    """SAMPLE of the newest payments (the last hour, or more when that has too few): their
    keys are far from expiring."""
    newest = max(sample * 4, len(plan) // 24)
    candidates = range(max(0, len(plan) - newest), len(plan))
    chosen = sorted(rng.sample(candidates, min(sample, len(candidates))))
    return [
        Replay(plan.payers[i], plan.payees[i], plan.amounts[i], plan.keys[i], plan.ids[i])
        for i in chosen
    ]
