"""What the client library raises. Everything derives from ``MinipayError``, so one ``except``
catches it all: ``ApiError`` for every call that did not succeed (the gateway refused it, or
never answered: ``GatewayUnreachable``), and ``ClientError`` for a problem found on this side
before anything was sent (a setting missing or wrong, a file that cannot be read, no session).

An ``ApiError`` carries what the gateway's ``google.rpc.Status`` details say: the stable
upper-snake ``reason`` of its ErrorInfo (``minipay.errors.ErrorReason`` lists them), its
metadata, the fields a BadRequest names, and a RetryInfo's delay; and the call's request id,
which a support person takes to the logs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

REQUEST_ID_HEADER = "x-request-id"
M = TypeVar("M", bound=Message)


class MinipayError(Exception):
    """Anything the client library raises; ``str(error)`` is one line a person reads."""


class ClientError(MinipayError):
    """A problem on this side, found before anything was sent (a certificate setting missing
    or unreadable, a bad variable, no session): its message says what to set or do."""


class ApiError(MinipayError):
    """A call that did not succeed. ``str(error)`` is one line a person reads:
    ``CODE (REASON): message [request id ...]``."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        request_id: str = "",
        field_violations: Sequence[tuple[str, str]] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason  # ErrorInfo.reason, "" when the error carried none
        self.metadata = dict(metadata or {})
        self.request_id = request_id
        self.field_violations = list(field_violations)  # (field, description)
        self.retry_after = retry_after  # seconds, from RetryInfo

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError, sent_request_id: str) -> ApiError:
        """ERROR with its status details read; the request id the gateway answered with,
        else SENT_REQUEST_ID (an error that never reached the gateway has none)."""
        info, bad_request, retry = _details(error)
        violations = bad_request.field_violations if bad_request else ()
        return cls(
            error.code(),
            error.details() or "",
            reason=info.reason if info else "",
            metadata=dict(info.metadata) if info else {},
            request_id=header(error.initial_metadata(), REQUEST_ID_HEADER) or sent_request_id,
            field_violations=[(v.field, v.description) for v in violations],
            retry_after=retry.retry_delay.ToTimedelta().total_seconds() if retry else None,
        )

    def headline(self) -> str:
        """Code, reason and message, on one line: what the error says without its request id."""
        code = f"{self.code.name} ({self.reason})" if self.reason else self.code.name
        return " ".join(f"{code}: {self.message}".split())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )

    def __str__(self) -> str:
        if not self.request_id:
            return self.headline()
        return f"{self.headline()} [request id {self.request_id}]"


class GatewayUnreachable(ApiError):
    """Every attempt failed and the gateway never answered: nothing listens at the address,
    the name does not resolve, or the TLS handshake failed. The message says which address,
    how many attempts and why; ``cause`` is gRPC's own text of the last failure."""

    def __init__(
        self, error: grpc.aio.AioRpcError, address: str, attempts: int, request_id: str
    ) -> None:
        self.address = address
        self.attempts = attempts
        self.cause = error.details() or ""
        super().__init__(
            error.code(),
            _unreachable_message(address, attempts, self.cause, error.code()),
            request_id=request_id,
        )


def header(metadata: Iterable[tuple[str, str | bytes]] | None, name: str) -> str:
    """The value of NAME in gRPC METADATA, or ""."""
    for key, value in metadata or ():
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return ""


class Details(NamedTuple):
    """The three details minipay puts in an error's google.rpc.Status."""

    info: error_details_pb2.ErrorInfo | None
    bad_request: error_details_pb2.BadRequest | None
    retry: error_details_pb2.RetryInfo | None


def _details(error: grpc.aio.AioRpcError) -> Details:
    """The ErrorInfo, BadRequest and RetryInfo in ERROR's google.rpc.Status, where present."""
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)
    except ValueError:  # details that contradict the status itself: trust neither
        status = None
    return Details(
        _unpack(status, error_details_pb2.ErrorInfo),
        _unpack(status, error_details_pb2.BadRequest),
        _unpack(status, error_details_pb2.RetryInfo),
    )


def _unpack(status: status_pb2.Status | None, kind: type[M]) -> M | None:
    """The first detail of type KIND in STATUS."""
    for packed in status.details if status else ():
        if packed.Is(kind.DESCRIPTOR):
            detail = kind()
            packed.Unpack(detail)
            return detail
    return None


def _unreachable_message(address: str, attempts: int, reason: str, code: grpc.StatusCode) -> str:
    tried = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    lowered = reason.lower()
    if "handshake" in lowered or "ssl" in lowered or "certificate" in lowered:
        why = reason.removesuffix(": OK").rsplit(": ", 1)[-1]
        return (
            f"cannot reach the gateway at {address} {tried}: the TLS handshake failed ({why}); "
            "check --ca, --cert and --key"
        )
    if "resolv" in lowered or "lookup" in lowered:
        return (
            f"cannot reach the gateway at {address} {tried}: the name does not resolve; "
            "check --gateway or MINIPAY_GATEWAY"
        )
    if "refused" in lowered:
        why = " (connection refused)"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        why = " (no answer in time)"
    else:
        why = ""
    return f"cannot reach the gateway at {address} {tried}{why}; is the cluster running? (make up)"
