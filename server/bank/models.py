"""A bank's database: customers, accounts, the ledger, and its 2PC records (the payments it
voted on, with their holds, and tombstones for payments aborted before it saw them)."""

from __future__ import annotations

import enum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from server.common.clock import now


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20), default="customer")
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[float] = mapped_column(Float, default=now)

    accounts: Mapped[list[Account]] = relationship(back_populates="customer")


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        CheckConstraint("held >= 0 AND held <= balance", name="held_within_balance"),
    )

    number: Mapped[str] = mapped_column(String(34), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    # Minor units. ``held`` is the part of ``balance`` promised to payments still in doubt;
    # ``incoming`` is what such payments would add, so that no commit can overflow.
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    incoming: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    customer: Mapped[Customer] = relationship(back_populates="accounts")

    @property
    def available(self) -> int:
        return self.balance - self.held


class LedgerEntry(Base):
    """One change to one account's balance: a committed payment leg or a deposit."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_account", "account_number", "id"),
        # A payment's entries, for the reconcile (``books``).
        Index("ix_ledger_payment", "payment_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_number: Mapped[str] = mapped_column(ForeignKey("accounts.number"))
    amount: Mapped[int] = mapped_column(BigInteger)  # signed: negative for a debit
    balance_after: Mapped[int] = mapped_column(BigInteger)
    payment_id: Mapped[str | None] = mapped_column(String(64))
    deposit_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class ParticipantState(enum.StrEnum):
    """Where this bank is with a payment (the coordinator keeps a ``CoordinatorState``)."""

    PREPARED = "PREPARED"  # voted yes, holds placed, waiting for the decision
    COMMITTED = "COMMITTED"
    ABORTED = "ABORTED"  # voted no, told to abort, or a tombstone


class BankPayment(Base):
    """This bank's memory of one payment; its primary key serializes racing 2PC calls."""

    __tablename__ = "bank_payments"
    __table_args__ = (Index("ix_bank_payments_state", "state", "created_at"),)

    payment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[ParticipantState] = mapped_column(
        Enum(ParticipantState, name="paymentstate", native_enum=False, length=12)
    )
    reason_code: Mapped[str] = mapped_column(String(40), default="")
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[float] = mapped_column(Float, default=now)
    decided_at: Mapped[float | None] = mapped_column(Float)

    legs: Mapped[list[Leg]] = relationship(back_populates="payment", cascade="all")


class Leg(Base):
    """One leg of a payment at this bank (its debit, or one of its credits); while
    PREPARED, a debit leg is a hold."""

    __tablename__ = "legs"

    payment_id: Mapped[str] = mapped_column(
        ForeignKey("bank_payments.payment_id"), primary_key=True
    )
    side: Mapped[str] = mapped_column(String(6), primary_key=True)  # "debit" or "credit"
    # The leg's place among the payment's legs here: a split payment may credit several
    # accounts of one bank.
    number: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, default=0, server_default="0"
    )
    account_number: Mapped[str] = mapped_column(ForeignKey("accounts.number"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))

    payment: Mapped[BankPayment] = relationship(back_populates="legs")
