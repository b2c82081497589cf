"""The gateway's database: admins, registrations, revoked tokens, and payments with their
coordinator state, decision and idempotency key (the coordinator's durable log)."""

from __future__ import annotations

import enum

from sqlalchemy import BigInteger, Enum, Float, Index, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.common.clock import now


class Base(DeclarativeBase):
    pass


class Admin(Base):
    __tablename__ = "admins"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Registration(Base):
    """A customer's bank account linked to the gateway; the username is unique system-wide."""

    __tablename__ = "registrations"
    __table_args__ = (UniqueConstraint("bank", "account", name="uq_registration_account"),)

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    bank: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(34))
    created_at: Mapped[float] = mapped_column(Float, default=now)


class RevokedToken(Base):
    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float)


class PaymentState(enum.StrEnum):
    PREPARING = "PREPARING"  # recorded; phase one under way, no decision yet
    COMMITTING = "COMMITTING"  # decided commit; not every bank has acknowledged
    ABORTING = "ABORTING"  # decided abort; not every bank has acknowledged
    COMMITTED = "COMMITTED"  # every bank applied it
    ABORTED = "ABORTED"  # every bank released it


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("payer", "idempotency_key", name="uq_payment_idempotency_key"),
        Index("ix_payments_state", "state"),
        Index("ix_payments_from", "from_bank", "from_account", "created_at"),
        Index("ix_payments_to", "to_bank", "to_account", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    payer: Mapped[str] = mapped_column(String(64))
    from_bank: Mapped[str] = mapped_column(String(64))
    from_account: Mapped[str] = mapped_column(String(34))
    to_bank: Mapped[str] = mapped_column(String(64))
    to_account: Mapped[str] = mapped_column(String(34))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[PaymentState] = mapped_column(Enum(PaymentState, native_enum=False, length=12))
    reason_code: Mapped[str] = mapped_column(String(40), default="")
    reason: Mapped[str] = mapped_column(String(200), default="")
    # Kept for ``idempotency_ttl`` seconds, then cleared so the key may be used again.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    deadline: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    decided_at: Mapped[float | None] = mapped_column(Float)
    completed_at: Mapped[float | None] = mapped_column(Float)
