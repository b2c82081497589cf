"""Authentication and authorization interceptor: learns who calls (the verified client
certificate: a service is known by the CA that signed it and its SPIFFE id; a customer or an
admin by a bearer token bound to their certificate) and checks them against the permission
table."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, Protocol

import grpc

from minipay.errors import ErrorReason
from minipay.service_names import GATEWAY_ID, bank_of
from server.common.errors import MinipayError, PermissionDenied, Unauthenticated
from server.common.principal import TOKEN_ROLES, Caller, Claims, Principal, set_principal
from server.common.tls import Peers
from server.interceptors.authorization import allowed_callers
from server.interceptors.handlers import (
    Behavior,
    StreamBehavior,
    metadata_value,
    wrap_unary,
    wrap_unary_stream,
)


class TokenVerifier(Protocol):
    async def verify(self, token: str, thumbprint: str) -> Claims:
        """The token's claims; raises Unauthenticated unless it is valid for this certificate."""


# Told of every refused call (METHOD, its context, the refusal), before the caller hears it.
OnRefused = Callable[[str, grpc.aio.ServicerContext, MinipayError], Awaitable[None]]


def bearer_token(context: grpc.aio.ServicerContext) -> str:
    value = metadata_value(context, "authorization")
    if not value:
        raise Unauthenticated("this call needs a login token: log in first")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "the authorization metadata must be 'Bearer <token>'", ErrorReason.LOGIN_REQUIRED
        )
    return token.strip()


def _refusal(error: MinipayError) -> grpc.RpcMethodHandler:
    async def refuse(_request: Any, _context: grpc.aio.ServicerContext) -> Any:
        raise error

    return grpc.unary_unary_rpc_method_handler(refuse)


class AuthInterceptor:
    def __init__(
        self,
        peers: Peers,
        bank_names: Collection[str],
        verifier: TokenVerifier | None,
        on_refused: OnRefused | None = None,
    ) -> None:
        self._peers = peers
        self._on_refused = on_refused
        self._bank_names = frozenset(bank_names)
        self._verifier = verifier
        self._no_rule = _refusal(PermissionDenied("this method is not open to any caller"))

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """HANDLER of METHOD with this layer around it (``handlers.Layers`` calls it once)."""
        allowed = allowed_callers(method)
        if not allowed:
            return self._no_rule
        if handler.unary_stream is not None and Caller.ANY_CERT not in allowed:
            # A stream of the API (Events/Watch): checked before its first response.
            async def check_stream(
                inner: StreamBehavior, request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                set_principal(await self._authorized(method, allowed, context))
                async for response in inner(request, context):
                    yield response

            return wrap_unary_stream(handler, check_stream)
        if handler.unary_unary is None:
            # Other streaming methods (health Watch, reflection) are open to any peer only.
            return handler if Caller.ANY_CERT in allowed else self._no_rule

        async def check(inner: Behavior, request: Any, context: grpc.aio.ServicerContext) -> Any:
            set_principal(await self._authorized(method, allowed, context))
            return await inner(request, context)

        return wrap_unary(handler, check)

    async def _authorized(
        self, method: str, allowed: frozenset[Caller], context: grpc.aio.ServicerContext
    ) -> Principal:
        """``authorize``, telling ``on_refused`` of each refusal before it is answered."""
        try:
            return await self.authorize(method, allowed, context)
        except (Unauthenticated, PermissionDenied) as refusal:
            if self._on_refused is not None:
                await self._on_refused(method, context, refusal)
            raise

    async def authorize(
        self, method: str, allowed: frozenset[Caller], context: grpc.aio.ServicerContext
    ) -> Principal:
        peer = self._peers.identify(context)
        if peer is None:
            raise Unauthenticated(
                "a client certificate from the minipay CA is required",
                ErrorReason.CERTIFICATE_REQUIRED,
            )
        by_certificate = {Caller.ANY_CERT}
        if peer.is_service and peer.spiffe_id == GATEWAY_ID:
            by_certificate.add(Caller.GATEWAY)
        if peer.is_service and bank_of(peer.spiffe_id) in self._bank_names:
            by_certificate.add(Caller.BANK)
        if allowed & by_certificate:
            return Principal(peer)
        token_callers = [caller for caller in allowed if caller in TOKEN_ROLES]
        # Tokens are for customers and admins, whose certificates the clients CA signs.
        if not token_callers or self._verifier is None or peer.is_service:
            raise PermissionDenied(
                f"this certificate may not call {method}", metadata={"method": method}
            )
        claims = await self._verifier.verify(bearer_token(context), peer.thumbprint)
        if any(TOKEN_ROLES[caller] == claims.role for caller in token_callers):
            return Principal(peer, claims)
        raise PermissionDenied(
            f"role {claims.role!r} may not call {method}", metadata={"method": method}
        )
