"""Every reason the API gives, in one list: why a request was refused (the ``reason`` of the
``google.rpc.ErrorInfo`` every error carries, in the domain ``minipay.v1``) and why a recorded
payment was aborted (its ``reason_code``). The servers raise them; the client library and
the README list them from here."""

from __future__ import annotations

import enum
from dataclasses import dataclass

DOMAIN = "minipay.v1"


class ErrorReason(enum.StrEnum):
    """A reason: the value travels on the wire, upper-snake, and never changes."""

    # Why a payment was aborted: a recorded payment's reason_code (Pay answers these as a
    # payment, never as an error).
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
    ACCOUNT_DISABLED = "ACCOUNT_DISABLED"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    BALANCE_LIMIT = "BALANCE_LIMIT"
    TIMEOUT = "TIMEOUT"
    BANK_UNAVAILABLE = "BANK_UNAVAILABLE"
    ABORTED = "ABORTED"
    # Why a request was refused before anything was recorded.
    INVALID_FIELD = "INVALID_FIELD"
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
    BANK_NOT_FOUND = "BANK_NOT_FOUND"
    CUSTOMER_NOT_FOUND = "CUSTOMER_NOT_FOUND"
    PAYMENT_NOT_FOUND = "PAYMENT_NOT_FOUND"
    USERNAME_TAKEN = "USERNAME_TAKEN"
    ACCOUNT_EXISTS = "ACCOUNT_EXISTS"
    LOGIN_REQUIRED = "LOGIN_REQUIRED"
    LOGIN_FAILED = "LOGIN_FAILED"
    REGISTRATION_FAILED = "REGISTRATION_FAILED"
    TOKEN_INVALID = "TOKEN_INVALID"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    TOKEN_REVOKED = "TOKEN_REVOKED"
    TOKEN_CERTIFICATE_MISMATCH = "TOKEN_CERTIFICATE_MISMATCH"
    CERTIFICATE_REQUIRED = "CERTIFICATE_REQUIRED"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    LOGIN_THROTTLED = "LOGIN_THROTTLED"
    TOO_MANY_REQUESTS = "TOO_MANY_REQUESTS"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    PAYMENT_NOT_REFUNDABLE = "PAYMENT_NOT_REFUNDABLE"
    REFUND_EXCEEDS_PAYMENT = "REFUND_EXCEEDS_PAYMENT"
    REFUND_NOT_ALLOWED = "REFUND_NOT_ALLOWED"
    RATE_LIMITED = "RATE_LIMITED"
    CURSOR_EXPIRED = "CURSOR_EXPIRED"
    WATCHER_TOO_SLOW = "WATCHER_TOO_SLOW"
    COORDINATOR_UNAVAILABLE = "COORDINATOR_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"

    @property
    def explained(self) -> Explanation:
        return EXPLANATIONS[self]


@dataclass(frozen=True)
class Explanation:
    codes: str  # the gRPC status code(s) it comes with; "payment" for a payment's reason only
    meaning: str  # what happened, and what the caller can do
    metadata: str = ""  # the ErrorInfo metadata keys it carries


R = ErrorReason
EXPLANATIONS: dict[ErrorReason, Explanation] = {
    R.INSUFFICIENT_FUNDS: Explanation("payment", "the payer's available funds are too few"),
    R.ACCOUNT_NOT_FOUND: Explanation(
        "payment; NOT_FOUND", "the payee's account (or the account named) does not exist", "bank"
    ),
    R.ACCOUNT_DISABLED: Explanation(
        "payment; UNAUTHENTICATED",
        "the payee's account is disabled; as an error: the caller's own account is disabled "
        "and its tokens are refused",
    ),
    R.CURRENCY_MISMATCH: Explanation(
        "payment; FAILED_PRECONDITION", "the account holds another currency than the amount's"
    ),
    R.BALANCE_LIMIT: Explanation(
        "payment; FAILED_PRECONDITION", "the account would hold more than the largest balance"
    ),
    R.TIMEOUT: Explanation("payment", "a bank did not vote within the transaction timeout"),
    R.BANK_UNAVAILABLE: Explanation(
        "payment; UNAVAILABLE", "a bank could not be reached; retry later", "bank"
    ),
    R.ABORTED: Explanation("payment", "the payment was aborted for another reason"),
    R.INVALID_FIELD: Explanation(
        "INVALID_ARGUMENT",
        "a field breaks a rule; a BadRequest detail names the field and the rule",
        "field",
    ),
    R.MALFORMED_REQUEST: Explanation(
        "INVALID_ARGUMENT", "the bytes sent are not a message of the method's request type"
    ),
    R.IDEMPOTENCY_KEY_REUSED: Explanation(
        "INVALID_ARGUMENT",
        "the idempotency key was used for a request with other parameters; use a new key",
        "field",
    ),
    R.INVALID_PAGE_TOKEN: Explanation(
        "INVALID_ARGUMENT", "the page token is not one the gateway gave out", "field"
    ),
    R.BANK_NOT_FOUND: Explanation("NOT_FOUND", "no bank has that name", "bank"),
    R.CUSTOMER_NOT_FOUND: Explanation("NOT_FOUND", "no customer has that username at the bank"),
    R.PAYMENT_NOT_FOUND: Explanation(
        "NOT_FOUND", "no payment with that id that the caller made or received", "payment_id"
    ),
    R.USERNAME_TAKEN: Explanation("ALREADY_EXISTS", "the username is taken"),
    R.ACCOUNT_EXISTS: Explanation("ALREADY_EXISTS", "the account number is in use at the bank"),
    R.LOGIN_REQUIRED: Explanation(
        "UNAUTHENTICATED", "the call needs 'authorization: Bearer <token>'; log in"
    ),
    R.LOGIN_FAILED: Explanation("UNAUTHENTICATED", "wrong username or password"),
    R.REGISTRATION_FAILED: Explanation(
        "UNAUTHENTICATED", "the bank did not confirm the username, password and account"
    ),
    R.TOKEN_INVALID: Explanation("UNAUTHENTICATED", "the token is not one a gateway signed"),
    R.TOKEN_EXPIRED: Explanation("UNAUTHENTICATED", "the token has expired; log in again"),
    R.TOKEN_REVOKED: Explanation("UNAUTHENTICATED", "the token was logged out; log in again"),
    R.TOKEN_CERTIFICATE_MISMATCH: Explanation(
        "UNAUTHENTICATED", "the token belongs to another client certificate"
    ),
    R.CERTIFICATE_REQUIRED: Explanation(
        "UNAUTHENTICATED", "the call needs a client certificate from the clients CA"
    ),
    R.METHOD_NOT_ALLOWED: Explanation(
        "PERMISSION_DENIED", "this caller (role or certificate) may not call the method", "method"
    ),
    R.LOGIN_THROTTLED: Explanation(
        "RESOURCE_EXHAUSTED",
        "too many failed logins for the username or certificate; RetryInfo says when to retry",
    ),
    R.TOO_MANY_REQUESTS: Explanation(
        "RESOURCE_EXHAUSTED",
        "too many password checks in flight from this certificate; RetryInfo says when",
    ),
    R.REQUEST_TOO_LARGE: Explanation(
        "RESOURCE_EXHAUSTED",
        "the request's bytes are more than the method takes (64 KiB; PayBatch 512 KiB), refused "
        "unread; send less per call",
        "limit_bytes, method",
    ),
    R.PAYMENT_NOT_REFUNDABLE: Explanation(
        "FAILED_PRECONDITION",
        "the payment cannot be refunded: it is not committed (pending or aborted), or it is a "
        "refund itself",
        "payment_id, status",
    ),
    R.REFUND_EXCEEDS_PAYMENT: Explanation(
        "FAILED_PRECONDITION",
        "the refund is more than what is left to refund of the payment (its amount less every "
        "refund committed or in flight)",
        "payment_id, refundable_minor_units",
    ),
    R.REFUND_NOT_ALLOWED: Explanation(
        "PERMISSION_DENIED",
        "only a payment's payee (or an admin on their behalf) can refund it; the payer cannot",
        "payment_id",
    ),
    R.RATE_LIMITED: Explanation(
        "RESOURCE_EXHAUSTED",
        "too many payments from this customer per second; RetryInfo says when to come back",
    ),
    R.CURSOR_EXPIRED: Explanation(
        "OUT_OF_RANGE",
        "the event cursor is older than what is kept; resume from the oldest sequence kept",
        "oldest_sequence",
    ),
    R.WATCHER_TOO_SLOW: Explanation(
        "RESOURCE_EXHAUSTED",
        "the watcher did not keep up with the events; resume from the cursor given",
        "next_after_sequence",
    ),
    R.COORDINATOR_UNAVAILABLE: Explanation(
        "UNAVAILABLE", "(between servers) a bank could not reach the gateway"
    ),
    R.INTERNAL_ERROR: Explanation(
        "INTERNAL", "a bug: quote the reference and the request id to support", "reference"
    ),
}
