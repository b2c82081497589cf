"""reason codes upper-snake, as the API spells them (INSUFFICIENT_FUNDS); an index of the
idempotency keys still remembered, by age

Revision ID: g0004
Revises: g0003
Create Date: 2026-11-25 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "g0004"
down_revision: str | None = "g0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE payments SET reason_code = UPPER(reason_code) WHERE reason_code <> ''")
    remembered = sa.text("idempotency_key IS NOT NULL")
    op.create_index(
        "ix_payments_key_expiry",
        "payments",
        ["created_at"],
        sqlite_where=remembered,
        postgresql_where=remembered,
    )


def downgrade() -> None:
    op.drop_index("ix_payments_key_expiry", table_name="payments")
    op.execute("UPDATE payments SET reason_code = LOWER(reason_code) WHERE reason_code <> ''")
