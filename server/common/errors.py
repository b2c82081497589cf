"""Domain errors: what went wrong, in words a person can act on, free of any transport.

Domain code raises these; the logging interceptor (``server.interceptors.status``) is the one
place that maps each kind to a gRPC status. Messages never carry secrets.
"""

from __future__ import annotations


class MinipayError(Exception):
    """Base of every expected error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(MinipayError):
    """The request is malformed or breaks a rule about its fields."""


class NotFound(MinipayError):
    """Something the request names does not exist."""


class AlreadyExists(MinipayError):
    """Something the request would create exists already."""


class Unauthenticated(MinipayError):
    """The caller has not proved who they are."""


class PermissionDenied(MinipayError):
    """The caller is known but may not do this."""


class FailedPrecondition(MinipayError):
    """The request is well formed but the system is not in a state that allows it."""


class Conflict(MinipayError):
    """A concurrent request holds the same resource (e.g. an idempotency key in flight)."""


class Throttled(MinipayError):
    """Too many attempts; ``retry_after`` says how many seconds to wait."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(MinipayError):
    """A server this one depends on is not answering right now; retrying may help."""


class Internal(MinipayError):
    """Something that should not happen did; the message says what without details."""


class ConfigError(Exception):
    """A process cannot start: bad certificate path, port in use, unreachable database..."""
