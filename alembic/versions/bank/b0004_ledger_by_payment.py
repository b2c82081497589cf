"""ledger entries by payment: the reconcile reads each payment's entries beside its record

Revision ID: b0004
Revises: b0003
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b0004"
down_revision: str | None = "b0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # The reconcile pages through these ids here and merges them in Python with the
        # gateway's: both must order them alike, byte by byte, whatever the server's locale.
        for table, column in (
            ("bank_payments", "payment_id"),
            ("legs", "payment_id"),
            ("ledger_entries", "payment_id"),
            ("ledger_entries", "deposit_id"),
        ):
            op.execute(f'ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR(64) COLLATE "C"')
    op.create_index("ix_ledger_payment", "ledger_entries", ["payment_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_ledger_payment", table_name="ledger_entries")
