"""The gateway's side of a reconcile in its database: its payments and deposits page by page,
in id order (each page its own short transaction: a reconcile of millions of payments never
holds one open, nor more than a page in memory), and the reports of past reconciles, which
every replica reads (GetLastReconcile)."""

from __future__ import annotations

from sqlalchemy import Connection, text

from server.common import fastsql
from server.common.db import Database
from server.gateway.payment_state import CoordinatorState
from server.gateway.reconcile import GatewayDeposit, GatewayPayment

# Ids compare in the database as in Python (code-point order: the C collation PostgreSQL is
# set up with, SQLite's binary one): the reconcile merges the gateway's pages with the banks'.
PAYMENTS_PAGE = (
    "SELECT id, from_bank, from_account, to_bank, to_account, amount, currency, state, "
    "created_at, decided_at, completed_at FROM payments WHERE id > ? ORDER BY id LIMIT ?"
)
# A page's split payments' payees, in each payment's order.
SHARES = (
    "SELECT payment_id, bank, account, amount FROM payment_payees WHERE payment_id IN ({in}) "
    "ORDER BY payment_id, number"
)
# A state by its stored name: a dict lookup costs a tenth of CoordinatorState(name).
_STATES = {state.value: state for state in CoordinatorState}
DEPOSITS_PAGE = (
    "SELECT deposit_id, bank, account, amount, currency, state, created_at FROM deposits "
    "WHERE deposit_id > :after ORDER BY deposit_id LIMIT :limit"
)


def payments_page(connection: Connection, after: str, limit: int) -> list[GatewayPayment]:
    # Straight to the driver: a reconcile reads every payment there is.
    rows = fastsql.execute(connection, PAYMENTS_PAGE, [after, limit])
    page = [
        GatewayPayment(
            id_,
            from_bank,
            from_account,
            to_bank,
            to_account,
            amount,
            currency,
            _STATES[state],
            created_at,
            decided_at,
            completed_at,
        )
        for (
            id_,
            from_bank,
            from_account,
            to_bank,
            to_account,
            amount,
            currency,
            state,
            created_at,
            decided_at,
            completed_at,
        ) in rows
    ]
    splits = [payment.id for payment in page if not payment.to_bank]
    if not splits:  # the common page: no split payment, no more reading
        return page
    shares: dict[str, list[tuple[str, str, int]]] = {payment_id: [] for payment_id in splits}
    for payment_id, bank, account, amount in fastsql.execute(
        connection, SHARES, splits, len(splits)
    ):
        shares[payment_id].append((bank, account, int(amount)))
    for payment in page:
        if payment.id in shares:
            payment.shares = tuple(shares[payment.id])
    return page


def deposits_page(connection: Connection, after: str, limit: int) -> list[GatewayDeposit]:
    rows = connection.execute(text(DEPOSITS_PAGE), {"after": after, "limit": limit})
    return [GatewayDeposit(*row) for row in rows]


def save_run(
    connection: Connection,
    run_id: str,
    replica: str,
    started_at: float,
    finished_at: float,
    agreed: bool,
    report: bytes,
) -> None:
    connection.execute(
        text(
            "INSERT INTO reconcile_runs (run_id, replica, started_at, finished_at, agreed, "
            "report) VALUES (:run_id, :replica, :started_at, :finished_at, :agreed, :report)"
        ),
        {
            "run_id": run_id,
            "replica": replica,
            "started_at": started_at,
            "finished_at": finished_at,
            "agreed": agreed,
            "report": report,
        },
    )


def last_run(connection: Connection) -> bytes | None:
    """The newest report (serialized), if any reconcile ran."""
    row = connection.execute(
        text("SELECT report FROM reconcile_runs ORDER BY finished_at DESC LIMIT 1")
    ).first()
    return bytes(row[0]) if row is not None else None


def payments_page_of(db: Database, after: str, limit: int) -> list[GatewayPayment]:
    """A page of the gateway's payments, in its own transaction (from the walk's thread)."""
    return db.run_statements(lambda c: payments_page(c, after, limit))


def deposits_page_of(db: Database, after: str, limit: int) -> list[GatewayDeposit]:
    return db.run_statements(lambda c: deposits_page(c, after, limit))
