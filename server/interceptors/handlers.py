"""Wrapping a gRPC method handler's behaviour, the way every interceptor here needs to: the
servicer context (peer certificate, metadata) is only available inside the call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Wrapper = Callable[[Behavior, Any, grpc.aio.ServicerContext], Awaitable[Any]]


def wrap_unary(handler: grpc.RpcMethodHandler, wrapper: Wrapper) -> grpc.RpcMethodHandler:
    """A handler whose unary behaviour runs inside ``wrapper``; streaming ones are unchanged."""
    if handler is None or handler.unary_unary is None:
        return handler
    inner: Behavior = handler.unary_unary

    async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await wrapper(inner, request, context)

    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return str(item.value)
    return ""
