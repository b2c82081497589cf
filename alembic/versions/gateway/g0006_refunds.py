"""refunds: a refund is a payment linked to the one it gives back (refund_of); a payment
counts its refunds reserved (committed or in flight) and committed, within its amount;
indexes for a payment's refunds, for every refund and for every payment newest first

PostgreSQL adds the columns without rewriting the table; SQLite rebuilds it (seconds per
million payments).

Revision ID: g0006
Revises: g0004
Create Date: 2026-12-07 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "g0006"
down_revision: str | None = "g0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS = {
    "ck_payments_refund_reserved": "refund_reserved >= 0 AND refund_reserved <= amount",
    "ck_payments_refunded": "refunded >= 0 AND refunded <= refund_reserved",
}


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch_op:
        batch_op.add_column(sa.Column("refund_of", sa.String(length=64), nullable=True))
        for name in ("refund_reserved", "refunded"):
            batch_op.add_column(
                sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
            )
        for name, condition in CHECKS.items():
            batch_op.create_check_constraint(name, condition)
    refunds_only = sa.text("refund_of IS NOT NULL")
    op.create_index(
        "ix_payments_refund_of",
        "payments",
        ["refund_of", "created_at"],
        sqlite_where=refunds_only,
        postgresql_where=refunds_only,
    )
    op.create_index(
        "ix_payments_refunds_created",
        "payments",
        ["created_at", "id"],
        sqlite_where=refunds_only,
        postgresql_where=refunds_only,
    )
    op.create_index("ix_payments_created", "payments", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_payments_created", table_name="payments")
    op.drop_index("ix_payments_refunds_created", table_name="payments")
    op.drop_index("ix_payments_refund_of", table_name="payments")
    with op.batch_alter_table("payments") as batch_op:
        for name in CHECKS:
            batch_op.drop_constraint(name, type_="check")
        batch_op.drop_column("refunded")
        batch_op.drop_column("refund_reserved")
        batch_op.drop_column("refund_of")
