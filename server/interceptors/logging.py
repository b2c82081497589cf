"""Logging interceptor: one structured record per call (who, what, how it ended, how long),
and the one place where domain errors become gRPC status codes. An unexpected exception
becomes INTERNAL with a reference id; its traceback goes to the log only."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from server.common.errors import MinipayError
from server.common.identity import peek_principal
from server.common.logs import REQUEST_ID, describe_request
from server.interceptors.handlers import Behavior, metadata_value, wrap_unary

log = logging.getLogger("minipay.calls")


class LoggingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, component: str) -> None:
        self._component = component

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method

        async def logged(inner: Behavior, request: Any, context: grpc.aio.ServicerContext) -> Any:
            request_id = metadata_value(context, "x-request-id") or uuid.uuid4().hex
            REQUEST_ID.set(request_id)
            attempt = metadata_value(context, "x-attempt")
            started = time.perf_counter()
            fields: dict[str, Any] = {
                "component": self._component,
                "method": method,
                "peer": context.peer(),
                "request_id": request_id,
                **describe_request(request),
            }
            if attempt and attempt != "1":
                fields["attempt"] = int(attempt) if attempt.isdigit() else attempt
                log.info("retry", extra={"fields": dict(fields, event="client_retry")})
            code = grpc.StatusCode.OK
            message = ""
            try:
                return await inner(request, context)
            except MinipayError as error:
                code, message = error.code, error.message
                await context.abort(code, message)
            except Exception:  # the last line of defence: the caller gets no details
                reference = uuid.uuid4().hex[:12]
                code, message = grpc.StatusCode.INTERNAL, f"internal error (reference {reference})"
                log.exception(
                    "unexpected error", extra={"fields": dict(fields, reference=reference)}
                )
                await context.abort(code, message)
            finally:
                fields.update(
                    code=code.name,
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                )
                if message:
                    fields["error"] = message
                _record_identity(fields)
                level = logging.WARNING if code != grpc.StatusCode.OK else logging.INFO
                log.log(level, "call", extra={"fields": fields})

        return wrap_unary(handler, logged)


def _record_identity(fields: dict[str, Any]) -> None:
    principal = peek_principal()
    if principal is not None:
        fields["caller"] = principal.peer.common_name
        if principal.claims is not None:
            fields["username"] = principal.claims.subject
            fields["role"] = principal.claims.role
