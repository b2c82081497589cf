"""Domain errors, and the one place that maps them to gRPC status codes.

Domain code raises these; the servicer edge (and the logging interceptor) turns them into a
status with a message a person can act on. Messages never carry secrets.
"""

from __future__ import annotations

import grpc


class MinipayError(Exception):
    """Base of every expected error; ``code`` is the gRPC status the caller sees."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(MinipayError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(MinipayError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MinipayError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(MinipayError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(MinipayError):
    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(MinipayError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Conflict(MinipayError):
    """A concurrent request holds the same resource (e.g. an idempotency key in flight)."""

    code = grpc.StatusCode.ABORTED


class Throttled(MinipayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(MinipayError):
    code = grpc.StatusCode.UNAVAILABLE


class ConfigError(Exception):
    """A process cannot start: bad certificate path, port in use, unreachable database..."""


class Internal(MinipayError):
    code = grpc.StatusCode.INTERNAL


# Answers from a downstream server (a bank) that the caller may see as they are.
_PASSED_ON = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
}


def from_downstream(error: grpc.aio.AioRpcError) -> MinipayError:
    """What the caller is told when a call this server made to another one failed."""
    if error.code() in _PASSED_ON:
        exc = MinipayError(error.details() or error.code().name)
        exc.code = error.code()
        return exc
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable("a bank is not answering right now; try again shortly")
    return Internal(f"a bank refused the request ({error.code().name})")
