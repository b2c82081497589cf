"""events, audit_log and journal_heads: the event stream and the audit chain

Revision ID: g0008
Revises: g0007
Create Date: 2026-12-06 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "g0008"
down_revision: str | None = "g0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journal_heads",
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.bulk_insert(
        sa.table(
            "journal_heads",
            sa.column("name", sa.String),
            sa.column("sequence", sa.BigInteger),
            sa.column("hash", sa.String),
        ),
        [
            {"name": "events", "sequence": 0, "hash": ""},
            {"name": "pruned", "sequence": 0, "hash": ""},
            {"name": "audit", "sequence": 0, "hash": "0" * 64},
        ],
    )
    op.create_table(
        "events",
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("type", sa.String(length=24), nullable=False),
        sa.Column("occurred_at", sa.Float(), nullable=False),
        sa.Column("payer_key", sa.String(length=100), nullable=True),
        sa.Column("payee_key", sa.String(length=100), nullable=True),
        sa.Column("subject", sa.String(length=2000), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
    )
    op.create_index("ix_events_payer", "events", ["payer_key", "sequence"])
    op.create_index("ix_events_payee", "events", ["payee_key", "sequence"])
    op.create_index("ix_events_occurred", "events", ["occurred_at"])
    op.create_table(
        "audit_log",
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_index("ix_events_occurred", table_name="events")
    op.drop_index("ix_events_payee", table_name="events")
    op.drop_index("ix_events_payer", table_name="events")
    op.drop_table("events")
    op.drop_table("journal_heads")
