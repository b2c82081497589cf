"""deposits recorded at the gateway, and the reports of the reconciles

Revision ID: g0009
Revises: g0008
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "g0009"
down_revision: str | None = "g0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deposits",
        sa.Column("deposit_id", sa.String(length=64), nullable=False),
        sa.Column("bank", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=34), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("admin", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("applied_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("deposit_id"),
    )
    op.create_table(
        "reconcile_runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("replica", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=False),
        sa.Column("agreed", sa.Boolean(), nullable=False),
        sa.Column("report", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index("ix_reconcile_runs_finished", "reconcile_runs", ["finished_at"])
    if op.get_bind().dialect.name == "postgresql":
        # The reconcile pages through ids in the database and merges them in Python: both
        # must order them alike, byte by byte, whatever the server's locale (en_US would
        # order "B-2001" after "B2000"). The C collation also keeps these indexes usable
        # for that order.
        for table, column in (("payments", "id"), ("deposits", "deposit_id")):
            op.execute(f'ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR(64) COLLATE "C"')


def downgrade() -> None:
    op.drop_index("ix_reconcile_runs_finished", table_name="reconcile_runs")
    op.drop_table("reconcile_runs")
    op.drop_table("deposits")
