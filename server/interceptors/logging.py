"""Logging interceptor: one structured record per call (who, what, how it ended, how long),
the check of every request's fields (``fields.check_request``) before anything else sees it,
and the edge where domain errors become gRPC statuses (``status.status_of``). An unexpected
exception becomes INTERNAL with a reference id; its traceback goes to the call's record only.

A refused call is the caller's doing, not the server's: its record is at INFO, and past the
first few per peer and interval only counted (``log_sampling``). Failures of the server's own
(INTERNAL, UNAVAILABLE...) are warnings and errors, each logged in full."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from minipay.errors import ErrorReason
from server.common.errors import InvalidArgument, MinipayError, RequestTooLarge
from server.common.log_sampling import RefusalSampler
from server.common.logs import REQUEST_ID, describe_request
from server.common.metrics import CALL_SECONDS, CALLS, RETRIES
from server.common.principal import TOKEN_ROLES, peek_principal
from server.common.tls import peer_common_name
from server.interceptors.authorization import allowed_callers
from server.interceptors.fields import check_request, malformed_reader
from server.interceptors.handlers import (
    Behavior,
    Malformed,
    Oversized,
    StreamBehavior,
    bound_streams,
    wrap_unary,
    wrap_unary_stream,
)
from server.interceptors.status import internal_status, rich_status, status_of

log = logging.getLogger("minipay.calls")
REQUEST_ID_HEADER = "x-request-id"
# A caller's request id (a batched round's carries several, comma separated).
_REQUEST_ID = re.compile(r"[\w.:,-]{1,2048}")
# Failures on the server's side: worth a warning. Every other code but OK is a refusal.
_SERVER_FAILURES = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}


@dataclass
class _Call:
    """One call as its record is built: what it was, and how it ended."""

    method: str
    fields: dict[str, Any]
    started: float
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""
    failure: Any = None


@dataclass(frozen=True)
class RequestLimits:
    """The most request bytes each method takes: ``by_method`` (full method names), else
    ``default``. Checked on the bytes, before they are parsed or anyone is authenticated."""

    default: int
    by_method: Mapping[str, int] = field(default_factory=dict)

    def of(self, method: str) -> int:
        return self.by_method.get(method, self.default)

    @property
    def largest(self) -> int:
        """What the server as a whole must let in (gRPC's own limit, before any of this)."""
        return max([self.default, *self.by_method.values()])


class LoggingInterceptor:
    def __init__(
        self,
        component: str,
        answer_request_id: bool = False,
        request_limits: RequestLimits | None = None,
    ) -> None:
        """ANSWER_REQUEST_ID: send every caller its request id in the initial metadata (the
        public API does; between servers the caller already has it, and the extra message
        per call is not free). REQUEST_LIMITS: each method's most request bytes (none: only
        the server's own limit)."""
        self._component = component
        self._answer_request_id = answer_request_id
        self._limits = request_limits
        # The metrics' children, looked up once per method (and code), not per call.
        self._calls = functools.lru_cache(maxsize=1024)(
            lambda method, code: CALLS.labels(method, code.name)
        )
        self._seconds = functools.lru_cache(maxsize=256)(CALL_SECONDS.labels)
        self._refusals = RefusalSampler(_summarize_refusals)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """HANDLER of METHOD with this layer around it (``handlers.Layers`` calls it once)."""
        limit = self._limits.of(method) if self._limits is not None else None
        if handler is None:
            return handler
        malformed = malformed_reader(method)
        if handler.unary_stream is not None and allowed_callers(method) & TOKEN_ROLES.keys():
            # A stream of the API (Events/Watch): logged and checked like a unary call.
            async def logged_stream(
                inner: StreamBehavior, request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                call = await self._begin(method, request, context)
                try:
                    self._check(method, request)
                    async for response in inner(request, context):
                        yield response
                except BaseException as error:
                    await self._failed(call, error, context)
                finally:
                    self._end(call, context)

            return wrap_unary_stream(handler, logged_stream, on_malformed=malformed, limit=limit)
        if handler.unary_unary is None:
            if limit is None:
                return handler
            return bound_streams(
                handler, limit, lambda request, context: _refuse_stream(method, request, context)
            )

        async def logged(inner: Behavior, request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = await self._begin(method, request, context)
            try:
                self._check(method, request)
                response = await inner(request, context)
                # Links the request (id, idempotency key) to the payment it made.
                payment = getattr(response, "payment", None)
                if payment is not None and payment.payment_id:
                    call.fields["payment_id"] = payment.payment_id
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("response", extra={"fields": dict(call.fields, body=_body(response))})
                return response
            except BaseException as error:
                await self._failed(call, error, context)
            finally:
                self._end(call, context)

        return wrap_unary(handler, logged, on_malformed=malformed, limit=limit)

    async def _begin(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> _Call:
        request_id, attempt = _request_id_and_attempt(context)
        if not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex  # none, or not one a log can carry
        REQUEST_ID.set(request_id)
        if self._answer_request_id:  # every answer, success or error: the id to quote
            await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
        fields: dict[str, Any] = {
            "component": self._component,
            "method": method,
            "peer": context.peer(),
            "request_id": request_id,
            **describe_request(request),
        }
        if attempt and attempt != "1":
            fields["attempt"] = int(attempt) if attempt.isdigit() else attempt
            RETRIES.labels(method).inc()
            log.info("client_retry", extra={"fields": fields})
        return _Call(method, fields, time.perf_counter())

    def _check(self, method: str, request: Any) -> None:
        if isinstance(request, Oversized):
            raise _too_large(method, request)
        if isinstance(request, Malformed):
            raise InvalidArgument(
                f"the request is not a valid message for this method: {request.problem}",
                ErrorReason.MALFORMED_REQUEST,
                field=request.field,
            )
        check_request(request)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request", extra={"fields": {"method": method, "body": _body(request)}})

    async def _failed(
        self, call: _Call, error: BaseException, context: grpc.aio.ServicerContext
    ) -> None:
        """Ends the call for ERROR: a domain error as its status, anything unexpected as
        INTERNAL with a reference; an abort or a cancellation goes on up."""
        if isinstance(error, grpc.aio.AbortError):
            raise error
        if isinstance(error, asyncio.CancelledError):  # the caller gave up, or its deadline
            call.code = grpc.StatusCode.CANCELLED
            raise error
        if isinstance(error, MinipayError):
            call.code, call.message = status_of(error), error.message
            call.fields["reason"] = error.reason.value
            status = rich_status(error)
            await context.abort(call.code, call.message, trailing_metadata=status.trailing_metadata)
        if isinstance(error, NotImplementedError):  # a method this server does not serve yet
            call.code, call.message = (
                grpc.StatusCode.UNIMPLEMENTED,
                f"{call.method} is not served here",
            )
            await context.abort(call.code, call.message)
        if not isinstance(error, Exception):
            raise error
        # The last line of defence: the caller gets no details.
        reference = uuid.uuid4().hex[:12]
        call.code = grpc.StatusCode.INTERNAL
        call.message = f"internal error (reference {reference})"
        call.fields["reference"] = reference
        call.failure = (type(error), error, error.__traceback__)  # rides on the call's record
        status = internal_status(call.message, reference)
        await context.abort(call.code, call.message, trailing_metadata=status.trailing_metadata)

    def _end(self, call: _Call, context: grpc.aio.ServicerContext) -> None:
        elapsed = time.perf_counter() - call.started
        fields = call.fields
        fields.update(code=call.code.name, duration_ms=round(elapsed * 1000, 3))
        self._calls(call.method, call.code).inc()
        self._seconds(call.method).observe(elapsed)
        if call.message:
            fields["error"] = call.message
        _record_identity(fields, context)
        self._log_call(fields, call.code, call.failure)

    def _log_call(self, fields: dict[str, Any], code: grpc.StatusCode, failure: Any) -> None:
        if code == grpc.StatusCode.INTERNAL:
            log.error("call", extra={"fields": fields}, exc_info=failure)
        elif code in _SERVER_FAILURES:
            log.warning("call", extra={"fields": fields})
        elif code == grpc.StatusCode.OK or self._refusals.admit(
            _peer_key(fields), fields["method"], code.name
        ):
            log.info("call", extra={"fields": fields})


def _too_large(method: str, request: Oversized) -> RequestTooLarge:
    return RequestTooLarge(
        f"the request is {request.size} bytes; {method} takes at most {request.limit} bytes: "
        "send less in one call",
        metadata={"limit_bytes": str(request.limit), "method": method},
    )


async def _refuse_stream(
    method: str, request: Oversized, context: grpc.aio.ServicerContext
) -> None:
    """Ends a streaming call whose request is over its method's limit."""
    error = _too_large(method, request)
    status = rich_status(error)
    await context.abort(status.code, error.message, trailing_metadata=status.trailing_metadata)


def _request_id_and_attempt(context: grpc.aio.ServicerContext) -> tuple[str, str]:
    """The caller's request id and attempt number, in one pass over the metadata."""
    request_id = attempt = ""
    for item in context.invocation_metadata() or ():
        if item.key == REQUEST_ID_HEADER:
            request_id = str(item.value)
        elif item.key == "x-attempt":
            attempt = str(item.value)[:4]
    return request_id, attempt


def _peer_key(fields: dict[str, Any]) -> str:
    """Who a refusal is counted against: the peer's address without the port (a new
    connection is the same peer) and its certificate's name."""
    address = str(fields["peer"]).rpartition(":")[0]
    return f"{address} {fields.get('caller', '')}"


def _summarize_refusals(peer: str, summary: dict[str, Any]) -> None:
    log.info("refusals_summarized", extra={"fields": {"peer": peer, **summary}})


def _body(message: Any) -> dict[str, Any]:
    """A message as a dict for debug logs; the formatter redacts secret fields."""
    return MessageToDict(message, preserving_proto_field_name=True)


def _record_identity(fields: dict[str, Any], context: grpc.aio.ServicerContext) -> None:
    principal = peek_principal()
    if principal is None:
        # Refused before authentication finished: the certificate still says who it was.
        fields["caller"] = peer_common_name(context)
    else:
        fields["caller"] = principal.peer.common_name
        if principal.claims is not None:
            fields["username"] = principal.claims.subject
            fields["role"] = principal.claims.role
