"""The one table from domain errors to gRPC status codes, and the ``google.rpc.Status`` every
error carries: an ErrorInfo (reason, domain ``minipay.v1``, metadata), a BadRequest on every
INVALID_ARGUMENT (naming the field, or an empty path for the request as a whole), and a
RetryInfo when waiting may help (to the millisecond under a second)."""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from minipay.errors import DOMAIN
from server.common import errors

STATUS_OF_ERROR: dict[type[errors.MinipayError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Throttled: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RequestTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Internal: grpc.StatusCode.INTERNAL,
}
# Worth retrying after a pause even when the error names no delay.
DEFAULT_RETRY_AFTER = {grpc.StatusCode.UNAVAILABLE: 1.0, grpc.StatusCode.RESOURCE_EXHAUSTED: 1.0}


def status_of(error: errors.MinipayError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in STATUS_OF_ERROR:
            return STATUS_OF_ERROR[kind]  # type: ignore[index]
    return grpc.StatusCode.UNKNOWN


def rich_status(error: errors.MinipayError) -> grpc.Status:
    """ERROR as a status with its details, ready for ``context.abort``'s trailing metadata."""
    code = status_of(error)
    metadata = dict(error.metadata)
    if error.field:
        metadata.setdefault("field", error.field)
    details = [
        error_details_pb2.ErrorInfo(reason=error.reason.value, domain=DOMAIN, metadata=metadata)
    ]
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.message
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    retry_after = error.retry_after or DEFAULT_RETRY_AFTER.get(code, 0.0)
    if retry_after > 0 and error.waiting_helps:
        details.append(error_details_pb2.RetryInfo(retry_delay=_delay(retry_after)))
    return rpc_status.to_status(
        status_pb2.Status(
            code=code.value[0], message=error.message, details=[_packed(d) for d in details]
        )
    )


def _delay(seconds: float) -> duration_pb2.Duration:
    """A wait in whole seconds, rounded up; under a second (a rate limit's), to the
    millisecond, rounded up."""
    if seconds >= 1:
        return duration_pb2.Duration(seconds=math.ceil(seconds))
    millis = max(math.ceil(seconds * 1000), 1)
    return duration_pb2.Duration(seconds=millis // 1000, nanos=millis % 1000 * 1_000_000)


def internal_status(message: str, reference: str) -> grpc.Status:
    """An unexpected failure: no details but the reference to quote."""
    return rich_status(errors.Internal(message, metadata={"reference": reference}))


def _packed(detail: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)  # type: ignore[arg-type]
    return packed
