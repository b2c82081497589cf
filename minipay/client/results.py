"""What the client library's calls return: frozen dataclasses instead of protobuf messages.

Every result carries ``request_id``, the id of the call that returned it (a support person
takes it to the logs); items of a list carry the list call's. Amounts are integers of the
currency's minor unit (``<what>_minor_units``, like the API's ``Money.minor_units``); times
are timezone-aware UTC datetimes. A result about one account names it with ``bank`` and
``account``; a payment names both sides as ``AccountRef``s."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from minipay.v1 import admin_pb2, gateway_pb2


class PaymentStatus(enum.StrEnum):
    PENDING = "PENDING"  # not decided yet: ask again with GatewayClient.payment
    COMMITTED = "COMMITTED"
    ABORTED = "ABORTED"


class Direction(enum.StrEnum):
    """A payment as the caller sees it."""

    OUTGOING = "outgoing"  # the caller paid
    INCOMING = "incoming"  # the caller was paid


class PaymentKind(enum.StrEnum):
    PAYMENT = "payment"  # money paid
    REFUND = "refund"  # money given back: a payment of its own, linked to the one it refunds


STATUS_OF_MESSAGE = {
    gateway_pb2.PAYMENT_STATUS_PENDING: PaymentStatus.PENDING,
    gateway_pb2.PAYMENT_STATUS_COMMITTED: PaymentStatus.COMMITTED,
    gateway_pb2.PAYMENT_STATUS_ABORTED: PaymentStatus.ABORTED,
}
DIRECTION_OF_MESSAGE = {
    gateway_pb2.DIRECTION_OUTGOING: Direction.OUTGOING,
    gateway_pb2.DIRECTION_INCOMING: Direction.INCOMING,
}
KIND_OF_MESSAGE = {
    gateway_pb2.PAYMENT_KIND_PAYMENT: PaymentKind.PAYMENT,
    gateway_pb2.PAYMENT_KIND_REFUND: PaymentKind.REFUND,
}


def utc(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


@dataclass(frozen=True)
class AccountRef:
    bank: str
    account: str

    def __str__(self) -> str:
        return f"{self.bank}/{self.account}"


@dataclass(frozen=True)
class Share:
    """One payee's part of a split payment: ``refunded_minor_units`` its committed refunds,
    ``refundable_minor_units`` what its payee may still refund (shown to the payee and to
    admins)."""

    payee: AccountRef
    amount_minor_units: int
    refunded_minor_units: int = 0
    refundable_minor_units: int = 0

    @classmethod
    def from_message(cls, message: gateway_pb2.Share) -> Share:
        return cls(
            payee=AccountRef(message.payee.bank, message.payee.account),
            amount_minor_units=message.amount.minor_units,
            refunded_minor_units=message.refunded.minor_units,
            refundable_minor_units=message.refundable.minor_units,
        )


@dataclass(frozen=True)
class SplitShare:
    """One payee of a split payment to make (``GatewayClient.pay_split``)."""

    to_bank: str
    to_account: str
    amount_minor_units: int


@dataclass(frozen=True)
class Payment:
    """A payment as one side of it sees it; the payee never sees why it was aborted. An
    admin sees all of it, from neither side (``direction`` None).

    A refund is a payment too (``kind`` REFUND, ``refund_of`` the payment it gives back),
    paid by the original's payee to its payer. A payment counts its committed refunds
    (``refunded_minor_units``) and, for its payee or an admin, what may still be refunded
    (``refundable_minor_units``); ``GatewayClient.payment`` also lists its ``refunds``."""

    payment_id: str
    direction: Direction | None
    payer: AccountRef
    payee: AccountRef
    amount_minor_units: int
    currency: str
    status: PaymentStatus
    reason_code: str  # an aborted payment's: INSUFFICIENT_FUNDS, ACCOUNT_NOT_FOUND, ...
    reason: str  # the same in words
    created_at: datetime
    decided_at: datetime | None  # None while pending
    replayed: bool  # Pay and Refund only: the outcome of an earlier request with the same key
    request_id: str
    kind: PaymentKind = PaymentKind.PAYMENT
    refund_of: str = ""  # a refund: the payment it gives back
    refunded_minor_units: int = 0  # committed refunds of this payment
    refundable_minor_units: int = 0  # what its payee may still refund (0 for the payer)
    refunds: tuple[Payment, ...] = ()  # from GatewayClient.payment: its refunds, oldest first
    # A split payment: its payees (the payer and admins see every share; a payee sees their
    # own, and the payment as paying them that share: ``payee``, ``amount_minor_units``).
    shares: tuple[Share, ...] = ()

    @property
    def is_split(self) -> bool:
        return bool(self.shares)

    @property
    def counterparty(self) -> AccountRef:
        """The other side: the payee of an outgoing payment, the payer of an incoming one
        (the payee, for an admin). A split payment's payer has no one payee: an empty
        AccountRef (its ``shares`` name them)."""
        return self.payer if self.direction is Direction.INCOMING else self.payee

    @classmethod
    def from_message(
        cls,
        message: gateway_pb2.Payment,
        request_id: str,
        replayed: bool = False,
        refunds: Iterable[gateway_pb2.Payment] = (),
    ) -> Payment:
        return cls(
            payment_id=message.payment_id,
            direction=DIRECTION_OF_MESSAGE.get(message.direction),
            payer=AccountRef(message.payer.bank, message.payer.account),
            payee=AccountRef(message.payee.bank, message.payee.account),
            amount_minor_units=message.amount.minor_units,
            currency=message.amount.currency,
            status=STATUS_OF_MESSAGE[message.status],
            reason_code=message.reason_code,
            reason=message.reason,
            created_at=utc(message.created_at),
            decided_at=utc(message.decided_at) if message.HasField("decided_at") else None,
            replayed=replayed,
            request_id=request_id,
            kind=KIND_OF_MESSAGE.get(message.kind, PaymentKind.PAYMENT),
            refund_of=message.refund_of,
            refunded_minor_units=message.refunded.minor_units,
            refundable_minor_units=message.refundable.minor_units,
            refunds=tuple(cls.from_message(refund, request_id) for refund in refunds),
            shares=tuple(Share.from_message(share) for share in message.shares),
        )


@dataclass(frozen=True)
class BatchItem:
    """One payment of a batch: to whom, how much, and its own idempotency key (the same key
    in a later call replays its first outcome; "" lets ``pay_batch`` make a UUID)."""

    to_bank: str
    to_account: str
    amount_minor_units: int
    currency: str = "USD"
    idempotency_key: str = ""


@dataclass(frozen=True)
class ItemError:
    """Why the gateway refused one item of a batch before recording anything for it: what
    ``pay`` would have raised for that item alone (as ``ApiError`` has it)."""

    code: str  # the gRPC status code's name, e.g. INVALID_ARGUMENT
    reason: str  # e.g. IDEMPOTENCY_KEY_REUSED, INVALID_FIELD, BANK_NOT_FOUND
    message: str
    metadata: dict[str, str]  # e.g. field

    def headline(self) -> str:
        """``CODE (REASON): message``, as an ApiError's."""
        return f"{self.code} ({self.reason}): {self.message}" if self.reason else self.message


@dataclass(frozen=True)
class BatchResult:
    """One item's outcome: its payment (COMMITTED, ABORTED with a reason, or PENDING), or the
    error that refused it; ``idempotency_key`` is the key it was sent with."""

    idempotency_key: str
    payment: Payment | None
    error: ItemError | None

    @classmethod
    def from_message(
        cls, message: gateway_pb2.PayBatchResult, key: str, request_id: str
    ) -> BatchResult:
        if message.HasField("payment"):
            payment = Payment.from_message(message.payment, request_id, message.replayed)
            return cls(key, payment, None)
        error = message.error
        refused = ItemError(error.code, error.reason, error.message, dict(error.metadata))
        return cls(key, None, refused)


@dataclass(frozen=True)
class BatchResults:
    """A batch's outcomes, one per item, in the items' order."""

    results: tuple[BatchResult, ...]
    request_id: str

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[BatchResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> BatchResult:
        return self.results[index]


@dataclass(frozen=True)
class HistoryPage:
    """A page of payments: a customer's history, or an admin's list of every payment. An
    admin's page may hold fewer than asked for (even none) and still have a next page."""

    payments: tuple[Payment, ...]  # newest first
    next_page_token: str  # "" on the last page
    request_id: str

    @classmethod
    def from_message(
        cls,
        message: gateway_pb2.ListHistoryResponse | admin_pb2.ListPaymentsResponse,
        request_id: str,
    ) -> HistoryPage:
        return cls(
            payments=tuple(Payment.from_message(p, request_id) for p in message.payments),
            next_page_token=message.next_page_token,
            request_id=request_id,
        )


@dataclass(frozen=True)
class Balance:
    """The caller's account: posted balance, held for payments being decided, available."""

    bank: str
    account: str
    currency: str
    balance_minor_units: int
    held_minor_units: int
    available_minor_units: int  # balance less held: what can be paid now
    request_id: str

    @classmethod
    def from_message(cls, message: gateway_pb2.GetBalanceResponse, request_id: str) -> Balance:
        return cls(
            bank=message.account.bank,
            account=message.account.account,
            currency=message.balance.currency,
            balance_minor_units=message.balance.minor_units,
            held_minor_units=message.held.minor_units,
            available_minor_units=message.available.minor_units,
            request_id=request_id,
        )


@dataclass(frozen=True)
class Registration:
    username: str
    bank: str
    account: str
    request_id: str


@dataclass(frozen=True)
class LoginResult:
    token: str = field(repr=False)  # a secret: kept out of logs and tracebacks
    role: str  # "customer" or "admin"
    expires_at: datetime
    request_id: str


@dataclass(frozen=True)
class LogoutResult:
    request_id: str


@dataclass(frozen=True)
class Bank:
    name: str
    address: str  # host:port the gateway reaches it at
    serving: bool  # whether its health check answered just now


@dataclass(frozen=True)
class BankList:
    banks: tuple[Bank, ...]
    request_id: str


@dataclass(frozen=True)
class User:
    username: str
    name: str
    role: str  # "customer" or "admin"
    disabled: bool
    bank: str  # "" for an admin
    account: str  # "" for an admin
    balance_minor_units: int
    currency: str
    request_id: str

    @classmethod
    def from_message(cls, message: admin_pb2.User, request_id: str) -> User:
        return cls(
            username=message.username,
            name=message.name,
            role=message.role,
            disabled=message.disabled,
            bank=message.account.bank,
            account=message.account.account,
            balance_minor_units=message.balance.minor_units,
            currency=message.balance.currency,
            request_id=request_id,
        )


@dataclass(frozen=True)
class UserList:
    users: tuple[User, ...]
    request_id: str


@dataclass(frozen=True)
class Deposit:
    bank: str
    account: str
    amount_minor_units: int
    currency: str
    balance_minor_units: int  # the account's posted balance after the deposit
    idempotency_key: str
    request_id: str


# -- the reconcile and the overview (admin calls) ------------------------------------------


@dataclass(frozen=True)
class Amount:
    minor_units: int
    currency: str


def _amounts(messages: Iterable[Any]) -> tuple[Amount, ...]:
    return tuple(Amount(m.minor_units, m.currency) for m in messages)


def _maybe_utc(message: Any, name: str) -> datetime | None:
    return utc(getattr(message, name)) if message.HasField(name) else None


@dataclass(frozen=True)
class ReconcileFinding:
    """One mismatch (``code``: the README lists them), in words in ``detail``."""

    code: str
    bank: str
    payment_id: str
    account: str
    expected: str
    found: str
    detail: str


@dataclass(frozen=True)
class BankBooks:
    bank: str
    reachable: bool
    accounts: int
    payments: int
    ledger_entries: int
    in_doubt: int
    oldest_in_doubt: datetime | None
    balances: tuple[Amount, ...]
    held: tuple[Amount, ...]


@dataclass(frozen=True)
class CurrencyBooks:
    currency: str
    balances_minor_units: int
    deposits_minor_units: int


@dataclass(frozen=True)
class ReconcileReport:
    run_id: str
    replica: str
    started_at: datetime
    finished_at: datetime
    agreed: bool
    older_than_seconds: int
    payments_checked: int
    entries_checked: int
    deposits_checked: int
    in_flight: int
    findings: tuple[ReconcileFinding, ...]
    findings_total: int
    banks: tuple[BankBooks, ...]
    currencies: tuple[CurrencyBooks, ...]
    request_id: str = ""

    @classmethod
    def from_message(cls, message: admin_pb2.ReconcileReport, request_id: str) -> ReconcileReport:
        return cls(
            run_id=message.run_id,
            replica=message.replica,
            started_at=utc(message.started_at),
            finished_at=utc(message.finished_at),
            agreed=message.agreed,
            older_than_seconds=message.older_than_seconds,
            payments_checked=message.payments_checked,
            entries_checked=message.entries_checked,
            deposits_checked=message.deposits_checked,
            in_flight=message.in_flight,
            findings=tuple(
                ReconcileFinding(
                    f.code, f.bank, f.payment_id, f.account, f.expected, f.found, f.detail
                )
                for f in message.findings
            ),
            findings_total=message.findings_total,
            banks=tuple(
                BankBooks(
                    b.bank,
                    b.reachable,
                    b.accounts,
                    b.payments,
                    b.ledger_entries,
                    b.in_doubt,
                    _maybe_utc(b, "oldest_in_doubt"),
                    _amounts(b.balances),
                    _amounts(b.held),
                )
                for b in message.banks
            ),
            currencies=tuple(
                CurrencyBooks(c.currency, c.balances.minor_units, c.deposits.minor_units)
                for c in message.currencies
            ),
            request_id=request_id,
        )


@dataclass(frozen=True)
class BankOverview:
    name: str
    address: str
    serving: bool
    balances: tuple[Amount, ...]
    held: tuple[Amount, ...]
    in_doubt: int
    oldest_in_doubt: datetime | None


@dataclass(frozen=True)
class ReplicaInfo:
    name: str
    live: bool
    started_at: datetime
    lease_expires_at: datetime


@dataclass(frozen=True)
class ThroughputBucket:
    start: datetime
    seconds: int
    committed: int
    aborted: int


@dataclass(frozen=True)
class Overview:
    banks: tuple[BankOverview, ...]
    replicas: tuple[ReplicaInfo, ...]
    throughput: tuple[ThroughputBucket, ...]
    open_payments: int
    oldest_open_payment: datetime | None
    undecided_payments: int
    audit_head_sequence: int
    audit_head_hash: str
    last_event_sequence: int
    last_reconcile: ReconcileReport | None
    request_id: str = ""

    @classmethod
    def from_message(cls, message: admin_pb2.GetOverviewResponse, request_id: str) -> Overview:
        return cls(
            banks=tuple(
                BankOverview(
                    b.name,
                    b.address,
                    b.serving,
                    _amounts(b.balances),
                    _amounts(b.held),
                    b.in_doubt,
                    _maybe_utc(b, "oldest_in_doubt"),
                )
                for b in message.banks
            ),
            replicas=tuple(
                ReplicaInfo(r.name, r.live, utc(r.started_at), utc(r.lease_expires_at))
                for r in message.replicas
            ),
            throughput=tuple(
                ThroughputBucket(utc(t.start), t.seconds, t.committed, t.aborted)
                for t in message.throughput
            ),
            open_payments=message.open_payments,
            oldest_open_payment=_maybe_utc(message, "oldest_open_payment"),
            undecided_payments=message.undecided_payments,
            audit_head_sequence=message.audit_head_sequence,
            audit_head_hash=message.audit_head_hash,
            last_event_sequence=message.last_event_sequence,
            last_reconcile=(
                ReconcileReport.from_message(message.last_reconcile, request_id)
                if message.HasField("last_reconcile")
                else None
            ),
            request_id=request_id,
        )
