"""reason codes upper-snake, as the API spells them (INSUFFICIENT_FUNDS)

Revision ID: b0003
Revises: b0002
Create Date: 2026-11-25 16:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b0003"
down_revision: str | None = "b0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE bank_payments SET reason_code = UPPER(reason_code) WHERE reason_code <> ''"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE bank_payments SET reason_code = LOWER(reason_code) WHERE reason_code <> ''"
    )
