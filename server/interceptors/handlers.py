"""Wrapping a gRPC method handler's behaviour, the way every interceptor here needs to: the
servicer context (peer certificate, metadata) is only available inside the call.

Registered handlers never change while a server runs, so each interceptor wraps a method's
handler once and reuses it for every call (``WrappedHandlers``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Wrapper = Callable[[Behavior, Any, grpc.aio.ServicerContext], Awaitable[Any]]


@dataclass(frozen=True)
class Malformed:
    """Stands for request bytes that do not parse as the method's message: the field they
    break on ('' when none can be named) and what is wrong with it."""

    field: str
    problem: str


def wrap_unary(
    handler: grpc.RpcMethodHandler,
    wrapper: Wrapper,
    *,
    on_malformed: Callable[[bytes], Malformed] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler whose unary behaviour runs inside ``wrapper``; streaming ones are unchanged.
    With ``on_malformed``, bytes that do not parse reach ``wrapper`` as the ``Malformed`` it
    makes of them, instead of failing inside gRPC, where no interceptor sees them."""
    if handler is None or handler.unary_unary is None:
        return handler
    inner: Behavior = handler.unary_unary

    async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await wrapper(inner, request, context)

    deserializer = handler.request_deserializer
    if on_malformed is not None and deserializer is not None:
        deserializer = _tolerant(deserializer, on_malformed)
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=deserializer,
        response_serializer=handler.response_serializer,
    )


def _tolerant(
    parse: Callable[[bytes], Any], on_malformed: Callable[[bytes], Malformed]
) -> Callable[[bytes], Any]:
    def parse_or_mark(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # DecodeError, and whatever else bad bytes make a parser raise
            return on_malformed(data)

    return parse_or_mark


class WrappedHandlers:
    """Each method's handler, wrapped once by ``make`` on first use."""

    def __init__(self, make: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]) -> None:
        self._make = make
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def get(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._make(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return str(item.value)
    return ""
