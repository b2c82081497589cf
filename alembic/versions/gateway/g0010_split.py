"""split payments: payment_payees (one row per payee of a split payment, with the refunds of
its share), event_readers (the payees who read a split payment's event), and events.subject
as text (a split payment's subject names up to 100 payees)

A plain payment has no row in payment_payees; nothing about it changes. PostgreSQL changes
the subject's type without rewriting the events; SQLite keeps its column as it is (its
lengths are not enforced).

Revision ID: g0010
Revises: g0009
Create Date: 2026-12-09 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "g0010"
down_revision: str | None = "g0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_payees",
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("bank", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=34), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("refund_reserved", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("refunded", sa.BigInteger(), nullable=False, server_default="0"),
        sa.CheckConstraint(
            "refund_reserved >= 0 AND refund_reserved <= amount",
            name="ck_payment_payees_refund_reserved",
        ),
        sa.CheckConstraint(
            "refunded >= 0 AND refunded <= refund_reserved", name="ck_payment_payees_refunded"
        ),
        sa.PrimaryKeyConstraint("payment_id", "number"),
    )
    op.create_index(
        "ix_payment_payees_account", "payment_payees", ["bank", "account", "created_at"]
    )
    op.create_table(
        "event_readers",
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("reader_key", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("sequence", "reader_key"),
    )
    op.create_index("ix_event_readers_reader", "event_readers", ["reader_key", "sequence"])
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("events", "subject", type_=sa.Text(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "events", "subject", type_=sa.String(length=2000), existing_nullable=False
        )
    op.drop_index("ix_event_readers_reader", table_name="event_readers")
    op.drop_table("event_readers")
    op.drop_index("ix_payment_payees_account", table_name="payment_payees")
    op.drop_table("payment_payees")
