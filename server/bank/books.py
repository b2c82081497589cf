"""A bank's books as the gateway's reconcile reads them: its payment records with their legs
and ledger entries (by payment id), its deposits (by deposit id), and its totals with every
disagreement inside its own books (``books``), read in one snapshot so that payments
committing meanwhile never show as a mismatch. Read only; plain functions over a
connection, the caller owns the transaction."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import Connection, text

from server.common import fastsql
from server.common.clock import now

T = TypeVar("T")
MAX_LISTED = 1000  # mismatching accounts and stray entries listed; all are counted


@dataclass(frozen=True)
class EntryRow:
    id: int
    account: str
    amount: int  # signed: negative for a debit


@dataclass
class BankPaymentColumns:
    """A page of payment records as parallel columns (what Ledger/ListBankPayments sends):
    record i is payment_ids[i], states[i], created_at[i]; its legs the next leg_counts[i] rows
    of the leg_ columns, its entries the next entry_counts[i] rows of the entry_ columns. Made
    from the driver's rows by transposing them, never by a Python object per record."""

    payment_ids: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    created_at: list[float] = field(default_factory=list)
    leg_counts: list[int] = field(default_factory=list)
    leg_sides: list[str] = field(default_factory=list)  # "debit" or "credit"
    leg_accounts: list[str] = field(default_factory=list)
    leg_amounts: list[int] = field(default_factory=list)
    leg_currencies: list[str] = field(default_factory=list)
    entry_counts: list[int] = field(default_factory=list)
    entry_ids: list[int] = field(default_factory=list)
    entry_accounts: list[str] = field(default_factory=list)
    entry_amounts: list[int] = field(default_factory=list)  # signed: negative for a debit


@dataclass(frozen=True)
class DepositRow:
    deposit_id: str
    account: str
    amount: int
    currency: str
    created_at: float
    entry_id: int


@dataclass
class CurrencyTotals:
    currency: str
    accounts: int = 0
    balances: int = 0
    held: int = 0
    incoming: int = 0
    deposits: int = 0
    debits: int = 0  # payment debits, a positive number
    credits: int = 0


@dataclass(frozen=True)
class AccountMismatch:
    account: str
    currency: str
    balance: int
    ledger_sum: int
    held: int
    open_holds: int
    incoming: int
    open_credits: int


@dataclass
class Books:
    currencies: list[CurrencyTotals]
    accounts: int
    payments: int
    ledger_entries: int
    in_doubt: int
    oldest_in_doubt: float | None
    mismatches: list[AccountMismatch]
    mismatches_total: int
    stray_entries: list[EntryRow]
    stray_entries_total: int
    read_at: float


def list_bank_payments(connection: Connection, after: str, limit: int) -> BankPaymentColumns:
    """Up to LIMIT payment records with an id after AFTER, in id order, each with its legs
    and the ledger entries naming it (an entry naming no record is a stray: ``books``).
    Straight to the driver, and columns rather than an object per record: a reconcile reads
    every record there is. The three statements order by payment id alike, so each record's
    legs (entries) are one run of rows, in the records' order."""
    rows = fastsql.execute(connection, PAYMENTS_PAGE, [after, limit])
    page = BankPaymentColumns()
    if not rows:
        return page
    ids, states, created_at = (list(column) for column in zip(*rows, strict=True))
    page.payment_ids, page.states, page.created_at = ids, states, created_at
    bounds = [after, ids[-1]]
    legs = fastsql.execute(connection, LEGS_PAGE, bounds)
    page.leg_counts, legs = _runs(ids, legs)
    if legs:
        _, page.leg_sides, page.leg_accounts, page.leg_amounts, page.leg_currencies = (
            list(column) for column in zip(*legs, strict=True)
        )
    entries = fastsql.execute(connection, ENTRIES_PAGE, bounds)
    page.entry_counts, entries = _runs(ids, entries)
    if entries:
        _, page.entry_ids, page.entry_accounts, page.entry_amounts = (
            list(column) for column in zip(*entries, strict=True)
        )
    return page


def _runs(ids: list[str], rows: list[Any]) -> tuple[list[int], list[Any]]:
    """How many of ROWS (ordered by payment id, first column) belong to each of IDS, and the
    rows less any naming a payment not among IDS (no record: not this page's to show)."""
    counts = Counter(map(itemgetter(0), rows))
    known = set(ids)
    if not counts.keys() <= known:
        rows = [row for row in rows if row[0] in known]
        counts = Counter(map(itemgetter(0), rows))
    return list(map(counts.__getitem__, ids)), rows


PAYMENTS_PAGE = (
    "SELECT payment_id, state, created_at FROM bank_payments "
    "WHERE payment_id > ? ORDER BY payment_id LIMIT ?"
)
LEGS_PAGE = (
    "SELECT payment_id, side, account_number, amount, currency FROM legs "
    "WHERE payment_id > ? AND payment_id <= ? ORDER BY payment_id, side"
)
ENTRIES_PAGE = (
    "SELECT payment_id, id, account_number, amount FROM ledger_entries "
    "WHERE payment_id > ? AND payment_id <= ? ORDER BY payment_id, id"
)


def list_deposits(connection: Connection, after: str, limit: int) -> list[DepositRow]:
    """Up to LIMIT deposit entries with a deposit id after AFTER, in deposit id order."""
    rows = connection.execute(
        text(
            "SELECT e.deposit_id, e.account_number, e.amount, a.currency, e.created_at, e.id "
            "FROM ledger_entries e JOIN accounts a ON a.number = e.account_number "
            "WHERE e.deposit_id > :after ORDER BY e.deposit_id LIMIT :limit"
        ),
        {"after": after, "limit": limit},
    )
    return [DepositRow(*row) for row in rows]


def books(connection: Connection, accounts_only: bool = False) -> Books:
    """The bank's totals and the disagreements within its books, all in one snapshot; with
    ACCOUNTS_ONLY, only the accounts' totals and the payments in doubt (no pass over the
    ledger)."""
    _snapshot(connection)
    totals: dict[str, CurrencyTotals] = {}
    for currency, count, balances, held, incoming in connection.execute(
        text(
            "SELECT currency, COUNT(*), SUM(balance), SUM(held), SUM(incoming) FROM accounts "
            "GROUP BY currency"
        )
    ):
        totals[currency] = CurrencyTotals(
            currency, count, int(balances), int(held), int(incoming or 0)
        )
    entries = 0
    in_doubt, oldest = connection.execute(
        text("SELECT COUNT(*), MIN(created_at) FROM bank_payments WHERE state = 'PREPARED'")
    ).one()
    if accounts_only:
        return Books(
            [totals[currency] for currency in sorted(totals)],
            sum(row.accounts for row in totals.values()),
            0,
            0,
            int(in_doubt),
            oldest,
            [],
            0,
            [],
            0,
            now(),
        )
    for currency, deposits, debits, credits, count in connection.execute(text(LEDGER_TOTALS)):
        row = totals.setdefault(currency, CurrencyTotals(currency))
        row.deposits, row.debits, row.credits = int(deposits), int(debits), int(credits)
        entries += count
    payments = int(connection.execute(text("SELECT COUNT(*) FROM bank_payments")).scalar_one())
    mismatches, mismatches_total = _capped(
        AccountMismatch(*row) for row in connection.execute(text(ACCOUNT_MISMATCHES))
    )
    strays, strays_total = _capped(
        EntryRow(*row) for row in connection.execute(text(STRAY_ENTRIES))
    )
    return Books(
        currencies=[totals[currency] for currency in sorted(totals)],
        accounts=sum(row.accounts for row in totals.values()),
        payments=payments,
        ledger_entries=entries,
        in_doubt=int(in_doubt),
        oldest_in_doubt=oldest,
        mismatches=mismatches,
        mismatches_total=mismatches_total,
        stray_entries=strays,
        stray_entries_total=strays_total,
        read_at=now(),
    )


def _snapshot(connection: Connection) -> None:
    """Makes every read of this transaction see one snapshot: REPEATABLE READ on PostgreSQL
    (read committed would let each statement see later commits); on SQLite an explicit
    BEGIN, since the driver starts no transaction before a read (WAL keeps the snapshot)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        return
    dbapi = connection.connection.dbapi_connection
    if dbapi is not None and not dbapi.in_transaction:  # type: ignore[attr-defined]
        dbapi.execute("BEGIN")  # type: ignore[attr-defined]


def _capped(rows: Iterable[T]) -> tuple[list[T], int]:
    """The first MAX_LISTED of ROWS, and how many there were."""
    listed: list[T] = []
    total = 0
    for row in rows:
        total += 1
        if len(listed) < MAX_LISTED:
            listed.append(row)
    return listed, total


# Deposits, and payment debits and credits, per currency (every entry is one or the other:
# a deposit has a deposit id).
LEDGER_TOTALS = (
    "SELECT a.currency, "
    "COALESCE(SUM(CASE WHEN e.deposit_id IS NOT NULL THEN e.amount ELSE 0 END), 0), "
    "COALESCE(SUM(CASE WHEN e.deposit_id IS NULL AND e.amount < 0 THEN -e.amount ELSE 0 END), 0), "
    "COALESCE(SUM(CASE WHEN e.deposit_id IS NULL AND e.amount > 0 THEN e.amount ELSE 0 END), 0), "
    "COUNT(*) FROM ledger_entries e JOIN accounts a ON a.number = e.account_number "
    "GROUP BY a.currency"
)
# Accounts whose balance is not the sum of their ledger, or whose held (incoming) is not the
# sum of the debit (credit) legs of the payments still PREPARED.
ACCOUNT_MISMATCHES = (
    "SELECT a.number, a.currency, a.balance, COALESCE(l.total, 0), a.held, "
    "COALESCE(h.debits, 0), a.incoming, COALESCE(h.credits, 0) FROM accounts a "
    "LEFT JOIN (SELECT account_number, SUM(amount) AS total FROM ledger_entries "
    "GROUP BY account_number) l ON l.account_number = a.number "
    "LEFT JOIN (SELECT g.account_number, "
    "SUM(CASE WHEN g.side = 'debit' THEN g.amount ELSE 0 END) AS debits, "
    "SUM(CASE WHEN g.side = 'credit' THEN g.amount ELSE 0 END) AS credits "
    "FROM legs g JOIN bank_payments p ON p.payment_id = g.payment_id "
    "WHERE p.state = 'PREPARED' GROUP BY g.account_number) h ON h.account_number = a.number "
    "WHERE a.balance <> COALESCE(l.total, 0) OR a.held <> COALESCE(h.debits, 0) "
    "OR a.incoming <> COALESCE(h.credits, 0) ORDER BY a.number"
)
# Entries that are no deposit and name no payment this bank has a record of.
STRAY_ENTRIES = (
    "SELECT e.id, e.account_number, e.amount FROM ledger_entries e "
    "WHERE e.deposit_id IS NULL AND (e.payment_id IS NULL OR NOT EXISTS "
    "(SELECT 1 FROM bank_payments p WHERE p.payment_id = e.payment_id)) ORDER BY e.id"
)
