"""accounts.incoming: credits voted yes on and not yet decided

Revision ID: b0002
Revises: b0001
Create Date: 2026-11-25 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b0002"
down_revision: str | None = "b0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.add_column(
            sa.Column("incoming", sa.BigInteger(), nullable=False, server_default="0")
        )
    # Credits already voted yes on count from the start.
    op.execute(
        "UPDATE accounts SET incoming = (SELECT COALESCE(SUM(legs.amount), 0) FROM legs "
        "JOIN bank_payments ON bank_payments.payment_id = legs.payment_id "
        "WHERE legs.account_number = accounts.number AND legs.side = 'credit' "
        "AND bank_payments.state = 'PREPARED')"
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_column("incoming")
