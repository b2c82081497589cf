"""usernames given out (one name, one identity across every bank); session rules keyed on the
identity instead of the bare name; when each revocation and rule was written, so replicas
reload only what is new; throttle keys long enough for an identity

Revision ID: g0005
Revises: g0004
Create Date: 2026-11-26 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "g0005"
down_revision: str | None = "g0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usernames",
        sa.Column("normalized", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("bank", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("normalized"),
    )
    # The names the gateway knows of: its admins, then its registered customers.
    op.execute(
        "INSERT INTO usernames (normalized, role, bank) "
        "SELECT LOWER(username), 'admin', '' FROM admins GROUP BY LOWER(username)"
    )
    op.execute(
        "INSERT INTO usernames (normalized, role, bank) "
        "SELECT LOWER(r.username), 'customer', MIN(r.bank) FROM registrations r "
        "WHERE NOT EXISTS (SELECT 1 FROM usernames u WHERE u.normalized = LOWER(r.username)) "
        "GROUP BY LOWER(r.username)"
    )

    op.create_table(
        "session_rules",
        sa.Column("identity", sa.String(length=160), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("not_before", sa.Float(), nullable=False),
        sa.Column("changed_at", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("identity"),
    )
    op.create_index("ix_session_rules_changed_at", "session_rules", ["changed_at"])
    # A rule of a registered customer becomes their identity's; an unregistered customer has
    # no token to cut (and their bank refuses them while disabled).
    op.execute(
        "INSERT INTO session_rules (identity, disabled, not_before, changed_at) "
        "SELECT 'customer:' || r.bank || ':' || LOWER(s.username), s.disabled, s.not_before, 0 "
        "FROM user_sessions s JOIN registrations r ON r.username = s.username"
    )
    op.drop_table("user_sessions")

    with op.batch_alter_table("revoked_tokens") as batch_op:
        batch_op.add_column(
            sa.Column("revoked_at", sa.Float(), server_default=sa.text("0"), nullable=False)
        )
    op.create_index("ix_revoked_tokens_revoked_at", "revoked_tokens", ["revoked_at"])

    with op.batch_alter_table("login_attempts") as batch_op:
        batch_op.alter_column(
            "key", type_=sa.String(length=160), existing_type=sa.String(length=100)
        )


def downgrade() -> None:
    # Counts of keys too long for the old column are dropped: they are a window's worth.
    op.execute("DELETE FROM login_attempts WHERE LENGTH(key) > 100")
    with op.batch_alter_table("login_attempts") as batch_op:
        batch_op.alter_column(
            "key", type_=sa.String(length=100), existing_type=sa.String(length=160)
        )
    op.drop_index("ix_revoked_tokens_revoked_at", table_name="revoked_tokens")
    with op.batch_alter_table("revoked_tokens") as batch_op:
        batch_op.drop_column("revoked_at")
    op.create_table(
        "user_sessions",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("not_before", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("username"),
    )
    # Back to bare names: each customer's rule under the name their registration holds.
    op.execute(
        "INSERT INTO user_sessions (username, disabled, not_before) "
        "SELECT r.username, s.disabled, s.not_before FROM session_rules s "
        "JOIN registrations r ON s.identity = 'customer:' || r.bank || ':' || LOWER(r.username)"
    )
    op.drop_index("ix_session_rules_changed_at", table_name="session_rules")
    op.drop_table("session_rules")
    op.drop_table("usernames")
