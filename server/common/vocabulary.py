"""The words both sides of two-phase commit share: a payment's legs (what a bank is asked
to hold), a payment's status (what the gateway answers its callers and the banks in doubt),
and the reasons a payment is refused or aborted, used alike by the banks' votes, the
coordinator's decisions, the API's ``reason_code``, the logs and the metrics.

A debit leg that a bank voted yes on is a *hold*: those funds are no longer available until
the decision *commits* it (a ledger entry) or *aborts* it (released)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from minipay.errors import ErrorReason


class Side(enum.StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


@dataclass(frozen=True)
class Leg:
    """What one bank is asked to hold for a payment: a debit or a credit of one account."""

    payment_id: str
    side: Side
    account: str
    amount: int  # minor units
    currency: str


class Status(enum.Enum):
    """A payment as anyone but its coordinator sees it: PENDING until the decision is
    stored, then COMMITTED or ABORTED for good. The client reads it in the API's
    ``PaymentStatus``; a bank in doubt hears it from ``GetDecision``."""

    PENDING = "PENDING"
    COMMITTED = "COMMITTED"
    ABORTED = "ABORTED"


class Reason(enum.StrEnum):
    """Why a payment was refused or aborted: the payment reasons of ``minipay.errors``, the
    same words in votes, decisions, the database, the API's ``reason_code`` and the logs."""

    INSUFFICIENT_FUNDS = ErrorReason.INSUFFICIENT_FUNDS.value
    ACCOUNT_NOT_FOUND = ErrorReason.ACCOUNT_NOT_FOUND.value
    ACCOUNT_DISABLED = ErrorReason.ACCOUNT_DISABLED.value
    CURRENCY_MISMATCH = ErrorReason.CURRENCY_MISMATCH.value
    BALANCE_LIMIT = ErrorReason.BALANCE_LIMIT.value
    TIMEOUT = ErrorReason.TIMEOUT.value
    BANK_UNAVAILABLE = ErrorReason.BANK_UNAVAILABLE.value
    ABORTED = ErrorReason.ABORTED.value

    @property
    def sentence(self) -> str:
        return _SENTENCES[self]

    @classmethod
    def parse(cls, code: str) -> Reason:
        """The reason for a code from a peer (of any case); an unknown code is a plain abort."""
        try:
            return cls(code.upper())
        except ValueError:
            return cls.ABORTED


_SENTENCES = {
    Reason.INSUFFICIENT_FUNDS: "insufficient funds",
    Reason.ACCOUNT_NOT_FOUND: "the account does not exist",
    Reason.ACCOUNT_DISABLED: "the account is disabled",
    Reason.CURRENCY_MISMATCH: "the account holds another currency",
    Reason.BALANCE_LIMIT: "the payee's balance would exceed the largest amount an account holds",
    Reason.TIMEOUT: "a bank did not vote within the timeout",
    Reason.BANK_UNAVAILABLE: "a bank could not be reached",
    Reason.ABORTED: "the payment was aborted",
}
