"""Domain errors: what went wrong, in words a person can act on, with the reason a program
acts on (``minipay.errors.ErrorReason``), free of any transport.

Domain code raises these; the logging interceptor (``server.interceptors.status``) is the one
place that turns each kind into a gRPC status with its details. Messages never carry secrets.
"""

from __future__ import annotations

from collections.abc import Mapping

from minipay.errors import ErrorReason


class MinipayError(Exception):
    """Base of every expected error. ``field`` names the request field at fault (for a
    BadRequest detail), ``metadata`` what a program needs to act (a bank's name, a payment
    id), ``retry_after`` seconds when waiting and retrying may help."""

    reason: ErrorReason = ErrorReason.INTERNAL_ERROR  # each kind's usual reason

    def __init__(
        self,
        message: str,
        reason: ErrorReason | None = None,
        *,
        field: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.field = field
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after

    # Whether the same request may succeed later (RESOURCE_EXHAUSTED and UNAVAILABLE then
    # carry a RetryInfo even when the error names no delay).
    waiting_helps = True


class InvalidArgument(MinipayError):
    """The request is malformed or breaks a rule about its fields."""

    reason = ErrorReason.INVALID_FIELD


class NotFound(MinipayError):
    """Something the request names does not exist."""

    reason = ErrorReason.ACCOUNT_NOT_FOUND


class AlreadyExists(MinipayError):
    """Something the request would create exists already."""

    reason = ErrorReason.USERNAME_TAKEN


class Unauthenticated(MinipayError):
    """The caller has not proved who they are."""

    reason = ErrorReason.LOGIN_REQUIRED


class PermissionDenied(MinipayError):
    """The caller is known but may not do this."""

    reason = ErrorReason.METHOD_NOT_ALLOWED


class FailedPrecondition(MinipayError):
    """The request is well formed but the system is not in a state that allows it."""

    reason = ErrorReason.BALANCE_LIMIT


class Throttled(MinipayError):
    """Too many attempts; ``retry_after`` says how many seconds to wait."""

    reason = ErrorReason.LOGIN_THROTTLED


class OutOfRange(MinipayError):
    """A position the request names is outside what is kept (an event cursor too old)."""

    reason = ErrorReason.CURSOR_EXPIRED
    waiting_helps = False


class RequestTooLarge(MinipayError):
    """The request's bytes are more than the method takes: refused unread. The same request
    is refused again however long one waits."""

    reason = ErrorReason.REQUEST_TOO_LARGE
    waiting_helps = False


class Unavailable(MinipayError):
    """A server this one depends on is not answering right now; retrying may help."""

    reason = ErrorReason.BANK_UNAVAILABLE


class Internal(MinipayError):
    """Something that should not happen did; the message says what without details."""

    reason = ErrorReason.INTERNAL_ERROR


class ConfigError(Exception):
    """A process cannot start: bad certificate path, port in use, unreachable database..."""
