"""Wrapping a gRPC method handler's behaviour, the way every interceptor here needs to: the
servicer context (peer certificate, metadata) is only available inside the call.

Registered handlers never change while a server runs, so a method's handler is wrapped once
and reused for every call (``WrappedHandlers``). A server has one gRPC interceptor,
``Layers``, which wraps each handler in every layer (logging, then authentication) at once.

A method may be given a request size limit (``limit``): the request bytes are measured before
they are parsed, and bytes over the limit are never parsed at all. A server's own
``grpc.max_receive_message_length`` is one limit for every method; this one is per method.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Wrapper = Callable[[Behavior, Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
StreamWrapper = Callable[[StreamBehavior, Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
Parse = Callable[[bytes], Any]


@dataclass(frozen=True)
class Malformed:
    """Stands for request bytes that do not parse as the method's message: the field they
    break on ('' when none can be named) and what is wrong with it."""

    field: str
    problem: str


@dataclass(frozen=True)
class Oversized:
    """Stands for request bytes longer than the method's limit: counted, never parsed."""

    size: int
    limit: int


def wrap_unary(
    handler: grpc.RpcMethodHandler,
    wrapper: Wrapper,
    *,
    on_malformed: Callable[[bytes], Malformed] | None = None,
    limit: int | None = None,
) -> grpc.RpcMethodHandler:
    """A handler whose unary behaviour runs inside ``wrapper``; streaming ones are unchanged.
    With ``on_malformed``, bytes that do not parse reach ``wrapper`` as the ``Malformed`` it
    makes of them, instead of failing inside gRPC, where no interceptor sees them. With
    ``limit``, more bytes than that reach it as an ``Oversized``, unparsed."""
    if handler is None or handler.unary_unary is None:
        return handler
    inner: Behavior = handler.unary_unary
    # A partial, not a closure that awaits the wrapper: one coroutine less per call and layer
    # (gRPC sees through a partial that it is a coroutine function).
    behavior = functools.partial(wrapper, inner)
    deserializer = handler.request_deserializer
    if on_malformed is not None and deserializer is not None:
        deserializer = _tolerant(deserializer, on_malformed)
    if limit is not None and deserializer is not None:
        deserializer = _bounded(deserializer, limit)
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=deserializer,
        response_serializer=handler.response_serializer,
    )


def wrap_unary_stream(
    handler: grpc.RpcMethodHandler,
    wrapper: StreamWrapper,
    *,
    on_malformed: Callable[[bytes], Malformed] | None = None,
    limit: int | None = None,
) -> grpc.RpcMethodHandler:
    """``wrap_unary`` for a method with one request and a stream of responses (its behaviour
    an async generator): every response it yields passes through ``wrapper``'s."""
    if handler is None or handler.unary_stream is None:
        return handler
    inner: StreamBehavior = handler.unary_stream
    behavior = functools.partial(wrapper, inner)  # an async generator function, as gRPC needs
    deserializer = handler.request_deserializer
    if on_malformed is not None and deserializer is not None:
        deserializer = _tolerant(deserializer, on_malformed)
    if limit is not None and deserializer is not None:
        deserializer = _bounded(deserializer, limit)
    return grpc.unary_stream_rpc_method_handler(
        behavior,
        request_deserializer=deserializer,
        response_serializer=handler.response_serializer,
    )


def bound_streams(
    handler: grpc.RpcMethodHandler,
    limit: int,
    refuse: Callable[[Oversized, grpc.aio.ServicerContext], Awaitable[None]],
) -> grpc.RpcMethodHandler:
    """A streaming handler whose request messages longer than ``limit`` bytes are refused
    unparsed (``refuse`` ends the call with a status); a unary one is returned unchanged.
    Its behaviour may yield its responses or write them (``context.write``), and read its
    requests from the iterator it is given."""
    if handler is None or handler.unary_unary is not None or handler.request_deserializer is None:
        return handler
    kind = "unary_stream" if handler.unary_stream is not None else None
    kind = kind or ("stream_unary" if handler.stream_unary is not None else "stream_stream")
    inner = getattr(handler, kind)

    async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        async for request in requests:
            if isinstance(request, Oversized):
                await refuse(request, context)
            yield request

    async def first(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if kind != "unary_stream":
            return checked(request, context)
        if isinstance(request, Oversized):
            await refuse(request, context)
        return request

    if inspect.isasyncgenfunction(inner):

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async for response in inner(await first(request, context), context):
                yield response

    else:

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[misc]
            return await inner(await first(request, context), context)

    make = getattr(grpc, f"{kind}_rpc_method_handler")
    return make(
        behavior,
        request_deserializer=_bounded(handler.request_deserializer, limit),
        response_serializer=handler.response_serializer,
    )


def _tolerant(parse: Parse, on_malformed: Callable[[bytes], Malformed]) -> Parse:
    def parse_or_mark(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # DecodeError, and whatever else bad bytes make a parser raise
            return on_malformed(data)

    return parse_or_mark


def _bounded(parse: Parse, limit: int) -> Parse:
    def parse_within(data: bytes) -> Any:
        if len(data) > limit:
            return Oversized(len(data), limit)
        return parse(data)

    return parse_within


class Layer(Protocol):
    """What one concern (logging, authentication) does to a method's handler."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """HANDLER with this layer around its behaviour (wrapped once per method)."""


class Layers(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """A server's one interceptor: each method's handler wrapped by every layer (the first
    outermost) once, on first use. A call then costs one lookup, where an interceptor per
    layer cost an awaited ``intercept_service`` each."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        self._layers = list(reversed(layers))  # innermost first
        self._handlers = WrappedHandlers(self._wrap)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for layer in self._layers:
            handler = layer.wrap(method, handler)
        return handler

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return None
        return self._handlers.get(details.method, handler)


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
