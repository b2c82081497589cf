"""The gateway's database, shared by every gateway replica: admins, registrations, the
usernames given out, revoked tokens and cut sessions, the login throttle's counts, the
replicas with their leases and the public keys they sign tokens with, payments with their
coordinator state, decision, idempotency key and owner (the coordinator's durable log),
each payment's steps (its trace), the event stream, the audit chain and the heads that order
both, the admins' deposits, and the reports of the reconciles."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Enum,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.common.clock import now
from server.gateway.payment_state import CoordinatorState


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


class Username(Base):
    """Every username given out, in lower case, and whose it is: an admin's, or a customer's at
    one bank. A name is taken before its user is made (by an admin, by the seed, or at a
    customer's registration), so one name is one identity across every bank."""

    __tablename__ = "usernames"

    normalized: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    bank: Mapped[str] = mapped_column(String(64), default="")  # "" for an admin


class RevokedToken(Base):
    """A token logged out. ``revoked_at`` is in the database's clock: replicas reload only the
    rows written since their last reload."""

    __tablename__ = "revoked_tokens"
    __table_args__ = (Index("ix_revoked_tokens_revoked_at", "revoked_at"),)

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float] = mapped_column(Float, server_default=text("0"))


class SessionRule(Base):
    """Whether an identity's tokens are honoured (``principal.identity``: an admin by name, a
    customer by bank and name): a disabled user's never are, and tokens issued before
    ``not_before`` stay refused after the user is enabled again. ``changed_at`` is in the
    database's clock, for reloading only what changed."""

    __tablename__ = "session_rules"
    __table_args__ = (Index("ix_session_rules_changed_at", "changed_at"),)

    identity: Mapped[str] = mapped_column(String(160), primary_key=True)
    disabled: Mapped[bool] = mapped_column(default=False)
    not_before: Mapped[float] = mapped_column(Float, default=0.0)
    changed_at: Mapped[float] = mapped_column(Float, server_default=text("0"))


class LoginAttempts(Base):
    """Password checks counted for one throttle key (an identity, or a client certificate)
    within its current window; shared by every gateway replica."""

    __tablename__ = "login_attempts"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    window_start: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[float] = mapped_column(Float, default=0.0)


class Replica(Base):
    """A gateway replica and its lease. ``token`` is the fencing token of its current
    incarnation: every payment it owns carries it, and every write it makes for a payment is
    conditional on it. The lease is kept in the database's clock."""

    __tablename__ = "replicas"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger, unique=True)
    lease_expires_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float] = mapped_column(Float)


class Incarnation(Base):
    """One start of one replica: the autoincrement id is its fencing token, unique and
    increasing across every replica."""

    __tablename__ = "incarnations"

    token: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    replica: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[float] = mapped_column(Float)


class TokenKey(Base):
    """A public key that login tokens may be signed with (the ``kid`` in their header). Each
    replica signs with its own private key and publishes the public half here, so a token
    issued by one replica is verified by every other; a replaced key stays published until
    the tokens it signed have expired."""

    __tablename__ = "token_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    replica: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[float] = mapped_column(Float)
    retired_at: Mapped[float | None] = mapped_column(Float)


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("payer", "idempotency_key", name="uq_payment_idempotency_key"),
        Index("ix_payments_state", "state"),
        Index("ix_payments_from", "from_bank", "from_account", "created_at"),
        Index("ix_payments_to", "to_bank", "to_account", "created_at"),
        # Only the keys still remembered, by age: forgetting expired keys reads no more.
        Index(
            "ix_payments_key_expiry",
            "created_at",
            sqlite_where=text("idempotency_key IS NOT NULL"),
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # Every payment newest first (Admin/ListPayments); a payment's refunds, and every
        # refund newest first (only refunds are in these two: an ordinary payment's insert
        # does not touch them).
        Index("ix_payments_created", "created_at", "id"),
        Index(
            "ix_payments_refund_of",
            "refund_of",
            "created_at",
            sqlite_where=text("refund_of IS NOT NULL"),
            postgresql_where=text("refund_of IS NOT NULL"),
        ),
        Index(
            "ix_payments_refunds_created",
            "created_at",
            "id",
            sqlite_where=text("refund_of IS NOT NULL"),
            postgresql_where=text("refund_of IS NOT NULL"),
        ),
        # Never more refunded than paid, whatever a bug in the code would do.
        CheckConstraint(
            "refund_reserved >= 0 AND refund_reserved <= amount", name="ck_payments_refund_reserved"
        ),
        CheckConstraint(
            "refunded >= 0 AND refunded <= refund_reserved", name="ck_payments_refunded"
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Who asked for it, and whose idempotency key it is: the paying customer, or for a
    # refund the payee refunding or an admin on their behalf.
    payer: Mapped[str] = mapped_column(String(64))
    from_bank: Mapped[str] = mapped_column(String(64))
    from_account: Mapped[str] = mapped_column(String(34))
    to_bank: Mapped[str] = mapped_column(String(64))
    to_account: Mapped[str] = mapped_column(String(34))
    amount: Mapped[int] = mapped_column(BigInteger)  # minor units
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[CoordinatorState] = mapped_column(
        Enum(CoordinatorState, name="paymentstate", native_enum=False, length=12)
    )
    reason_code: Mapped[str] = mapped_column(String(40), default="")
    reason: Mapped[str] = mapped_column(String(200), default="")
    # Kept for ``idempotency_ttl`` seconds, then cleared so the key may be used again.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    deadline: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    decided_at: Mapped[float | None] = mapped_column(Float)
    completed_at: Mapped[float | None] = mapped_column(Float)
    # The fencing token of the replica incarnation that drives the payment, and of the one
    # that decided it.
    owner_token: Mapped[int | None] = mapped_column(BigInteger)
    decided_by: Mapped[int | None] = mapped_column(BigInteger)
    # A refund: the payment it gives back (its payer is that payment's payee, and ``payer``
    # the principal who asked: the payee, or an admin on their behalf).
    refund_of: Mapped[str | None] = mapped_column(String(64))
    # A payment: its refunds committed or still in flight (reserved when a refund is
    # recorded, released when it aborts), and those committed.
    refund_reserved: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    refunded: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class PaymentPayee(Base):
    """One payee of a split payment (whose ``payments`` row has an empty ``to_bank``, and
    the total as its amount): the share NUMBER, in the order the payer named them, its
    account and amount, and the refunds of this share (reserved when a refund is recorded,
    released when it aborts; and those committed). Only a split payment has rows here: a
    plain payment never reads or writes this table. ``created_at`` is the payment's, for a
    payee's history along its own index."""

    __tablename__ = "payment_payees"
    __table_args__ = (
        Index("ix_payment_payees_account", "bank", "account", "created_at"),
        CheckConstraint(
            "refund_reserved >= 0 AND refund_reserved <= amount",
            name="ck_payment_payees_refund_reserved",
        ),
        CheckConstraint(
            "refunded >= 0 AND refunded <= refund_reserved", name="ck_payment_payees_refunded"
        ),
    )

    payment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    bank: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(34))
    amount: Mapped[int] = mapped_column(BigInteger)  # minor units
    created_at: Mapped[float] = mapped_column(Float)
    refund_reserved: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    refunded: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class PaymentStep(Base):
    """One step of a payment's story, as the replica that took it saw it (``trace``): times
    in milliseconds of that replica's clock. No foreign key: steps are written beside the
    payment in the transactions that already run, and go with it when it is deleted."""

    __tablename__ = "payment_steps"
    __table_args__ = (Index("ix_payment_steps_payment", "payment_id", "id"),)

    # The order the database saw the steps in.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    payment_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))
    at_ms: Mapped[int] = mapped_column(BigInteger)
    sent_ms: Mapped[int | None] = mapped_column(BigInteger)  # a message and its answer
    replica: Mapped[str] = mapped_column(String(64))
    bank: Mapped[str] = mapped_column(String(64), default="")
    round: Mapped[str] = mapped_column(String(32), default="")
    outcome: Mapped[str] = mapped_column(String(40), default="")
    detail: Mapped[str] = mapped_column(String(200), default="")
    attributes: Mapped[str | None] = mapped_column(String(1000))  # compact JSON, rare


class Deposit(Base):
    """An admin's deposit, recorded before the bank is asked to apply it (so that reconcile
    knows every deposit a bank may have) and marked APPLIED once the bank answered. The id is
    the one the bank stores the deposit under, derived from the admin and their idempotency
    key: the same key again is the same deposit (``deposits``)."""

    __tablename__ = "deposits"

    deposit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    bank: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(34))
    amount: Mapped[int] = mapped_column(BigInteger)  # minor units
    currency: Mapped[str] = mapped_column(String(3))
    admin: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(10))  # RECORDED, then APPLIED
    created_at: Mapped[float] = mapped_column(Float, default=now)
    applied_at: Mapped[float | None] = mapped_column(Float)


class ReconcileRun(Base):
    """The report of one reconcile (a serialized ``ReconcileReport``), whichever replica ran
    it: GetLastReconcile reads the newest from any replica."""

    __tablename__ = "reconcile_runs"
    __table_args__ = (Index("ix_reconcile_runs_finished", "finished_at"),)

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    replica: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float] = mapped_column(Float)
    agreed: Mapped[bool] = mapped_column()
    report: Mapped[bytes] = mapped_column(LargeBinary)


class JournalHead(Base):
    """A counter the replicas share, one row per name: ``events`` (the last event's sequence),
    ``pruned`` (the last sequence dropped by retention), ``audit`` (the audit chain's head:
    its last sequence and hash). Updating a row locks it until commit: the transactions that
    take sequences commit in the order they took them."""

    __tablename__ = "journal_heads"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class Event(Base):
    """One event of the stream. ``payer_key`` and ``payee_key`` are the accounts
    ("bank/account") whose owners may read it (and those ``event_readers`` names);
    ``subject`` is compact JSON of what it is about, shaped for each reader when read."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_payer", "payer_key", "sequence"),
        Index("ix_events_payee", "payee_key", "sequence"),
        Index("ix_events_occurred", "occurred_at"),
    )

    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(24))
    occurred_at: Mapped[float] = mapped_column(Float)
    payer_key: Mapped[str | None] = mapped_column(String(100))
    payee_key: Mapped[str | None] = mapped_column(String(100))
    # Text: a split payment's subject names up to 100 payees.
    subject: Mapped[str] = mapped_column(Text)


class EventReader(Base):
    """Another account whose owner may read an event (a committed split payment's payees;
    the event's own ``payee_key`` is then empty): one row per reader, dropped with the
    event."""

    __tablename__ = "event_readers"
    __table_args__ = (Index("ix_event_readers_reader", "reader_key", "sequence"),)

    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    reader_key: Mapped[str] = mapped_column(String(100), primary_key=True)


class AuditRecord(Base):
    """One record of the audit chain: ``hash`` = SHA-256 of ``prev_hash`` then ``body``."""

    __tablename__ = "audit_log"

    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
