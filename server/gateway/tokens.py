"""Login tokens: signed JWTs (EdDSA, the signing replica's own Ed25519 key, named by ``kid``
in the header; see ``token_keys``) bound to the client certificate that logged in (RFC 8705
``cnf`` with the certificate's SHA-256 thumbprint), checked against the revocations
(logouts, disabled users) on every use."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from minipay.errors import ErrorReason
from server.common.errors import Unauthenticated
from server.common.principal import Claims
from server.gateway.revocations import Revocations
from server.gateway.token_keys import SigningKey

ISSUER = "minipay-gateway"
AUDIENCE = "minipay"
ALGORITHM = "EdDSA"
VERIFIED_CACHE_SIZE = 10_000
_NOT_VALID = "the login token is not valid: log in again"


class Keys(Protocol):
    """The keys, as the token service needs them (``token_keys.KeyRing``)."""

    @property
    def signing(self) -> SigningKey: ...

    async def public_or_reload(self, kid: str) -> Ed25519PublicKey | None:
        """The published public key of KID, or None."""


class TokenService:
    def __init__(
        self,
        keys: Keys,
        ttl_seconds: int,
        revocations: Revocations | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._keys = keys
        self._ttl = ttl_seconds
        self._revocations = revocations
        # Signature checks are the costly part of every call: a token checked once is
        # remembered (with the certificate it is bound to) until it expires.
        self._verified: dict[str, tuple[Claims, str]] = {}

    def issue(
        self, *, subject: str, role: str, bank: str, account: str, thumbprint: str
    ) -> tuple[str, Claims]:
        # To the millisecond: a session cut by an admin must not cover a login a moment later.
        issued = round(self._clock(), 3)
        signing = self._keys.signing
        claims = Claims(
            subject=subject,
            role=role,
            bank=bank,
            account=account,
            jti=uuid.uuid4().hex,
            issued_at=issued,
            expires_at=int(issued) + self._ttl,
        )
        token = jwt.encode(
            {
                "sub": subject,
                "role": role,
                "bank": bank,
                "account": account,
                "iat": issued,
                "exp": claims.expires_at,
                "jti": claims.jti,
                "iss": ISSUER,
                "aud": AUDIENCE,
                "cnf": {"x5t#S256": thumbprint},
            },
            signing.private,
            algorithm=ALGORITHM,
            headers={"kid": signing.kid},
        )
        return token, claims

    async def verify(self, token: str, thumbprint: str) -> Claims:
        """The claims of a valid token presented with the certificate it is bound to."""
        cached = self._verified.get(token)
        if cached is not None and cached[1] == thumbprint and cached[0].expires_at > self._clock():
            claims = cached[0]
        else:
            claims = self._decode(token, thumbprint, await self._public_key(token))
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = (claims, thumbprint)
        refusal = self._revocations.refusal(claims) if self._revocations else None
        if refusal is not None:
            raise refusal
        return claims

    async def _public_key(self, token: str) -> Ed25519PublicKey:
        """The published key the token's header names."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise Unauthenticated(_NOT_VALID, ErrorReason.TOKEN_INVALID) from None
        key = await self._keys.public_or_reload(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthenticated(
                "the login token is signed by a key no gateway published",
                ErrorReason.TOKEN_INVALID,
            )
        return key

    def _decode(self, token: str, thumbprint: str, public: Ed25519PublicKey) -> Claims:
        try:
            payload = jwt.decode(
                token,
                public,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                # Expiry is checked below against this service's clock.
                options={
                    "require": ["exp", "iat", "jti", "sub", "iss", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError:
            raise Unauthenticated(_NOT_VALID, ErrorReason.TOKEN_INVALID) from None
        if not isinstance(payload["iat"], int | float) or not isinstance(payload["exp"], int):
            raise Unauthenticated(_NOT_VALID, ErrorReason.TOKEN_INVALID)
        if payload["exp"] <= self._clock():
            raise Unauthenticated(
                "the login token has expired: log in again", ErrorReason.TOKEN_EXPIRED
            )
        if (payload.get("cnf") or {}).get("x5t#S256") != thumbprint:
            raise Unauthenticated(
                "the login token belongs to another client certificate",
                ErrorReason.TOKEN_CERTIFICATE_MISMATCH,
            )
        return Claims(
            subject=str(payload["sub"]),
            role=str(payload.get("role", "")),
            bank=str(payload.get("bank", "")),
            account=str(payload.get("account", "")),
            jti=str(payload["jti"]),
            issued_at=float(payload["iat"]),
            expires_at=int(payload["exp"]),
        )
