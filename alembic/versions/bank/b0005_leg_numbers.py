"""legs.number: a payment's legs at this bank numbered, so that one payment may hold several
credits here (a split payment paying several accounts of this bank); the primary key becomes
(payment_id, side, number), every existing leg number 0

Revision ID: b0005
Revises: b0004
Create Date: 2026-12-09 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b0005"
down_revision: str | None = "b0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    number = sa.Column("number", sa.Integer(), nullable=False, server_default="0")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("legs", recreate="always") as batch_op:
            batch_op.add_column(number)
            batch_op.create_primary_key("pk_legs", ["payment_id", "side", "number"])
        return
    op.add_column("legs", number)
    op.drop_constraint("legs_pkey", "legs", type_="primary")
    op.create_primary_key("legs_pkey", "legs", ["payment_id", "side", "number"])


def downgrade() -> None:
    # Only a payment with one leg per side fits the old key: the others must be gone first.
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("legs", recreate="always") as batch_op:
            batch_op.drop_column("number")
            batch_op.create_primary_key("pk_legs", ["payment_id", "side"])
        return
    op.drop_constraint("legs_pkey", "legs", type_="primary")
    op.drop_column("legs", "number")
    op.create_primary_key("legs_pkey", "legs", ["payment_id", "side"])
