"""payment_steps: each payment's story (its trace), step by step

Revision ID: g0007
Revises: g0004
Create Date: 2026-12-07 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "g0007"
down_revision: str | None = "g0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_steps",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("sent_ms", sa.BigInteger(), nullable=True),
        sa.Column("replica", sa.String(length=64), nullable=False),
        sa.Column("bank", sa.String(length=64), nullable=False),
        sa.Column("round", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=40), nullable=False),
        sa.Column("detail", sa.String(length=200), nullable=False),
        sa.Column("attributes", sa.String(length=1000), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_payment_steps_payment", "payment_steps", ["payment_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_payment_steps_payment", table_name="payment_steps")
    op.drop_table("payment_steps")
