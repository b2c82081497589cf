"""Login tokens: signed JWTs (EdDSA, the signing replica's own Ed25519 key, named by ``kid``
in the header; see ``token_keys``) bound to the client certificate that logged in (RFC 8705
``cnf`` with the certificate's SHA-256 thumbprint), checked against the revocations
(logouts, disabled users) on every use.

A token is honoured only while the key that signed it is in use (a token verified once is
checked against the keys in use on every later call too), only if it lives no longer than this
gateway issues tokens for, and not if it claims to be issued in the future: whoever holds a
copy of a key cannot make a token that outlives the key's rotation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
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
# How far ahead of this replica's clock another replica's may be when it issues a token.
CLOCK_SKEW = 60.0
_NOT_VALID = "the login token is not valid: log in again"
_KEY_NOT_IN_USE = "the login token is signed by a key no gateway uses: log in again"


class Keys(Protocol):
    """The keys, as the token service needs them (``token_keys.KeyRing``)."""

    @property
    def signing(self) -> SigningKey: ...

    def public(self, kid: str) -> Ed25519PublicKey | None:
        """The key KID names, if it is in use as of the last reload."""

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
        # remembered (with the certificate it is bound to, and its key) until it expires.
        self._verified: dict[str, _Verified] = {}

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
        if (
            cached is not None
            and cached.thumbprint == thumbprint
            and cached.claims.expires_at > self._clock()
            and self._keys.public(cached.kid) is not None  # its key still in use
        ):
            claims = cached.claims
        else:
            kid, public = await self._public_key(token)
            claims = self._decode(token, thumbprint, public)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = _Verified(claims, thumbprint, kid)
        refusal = self._revocations.refusal(claims) if self._revocations is not None else None
        if refusal is not None:
            raise refusal
        return claims

    async def _public_key(self, token: str) -> tuple[str, Ed25519PublicKey]:
        """The key in use that the token's header names, with its kid."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise Unauthenticated(_NOT_VALID, ErrorReason.TOKEN_INVALID) from None
        key = await self._keys.public_or_reload(kid) if isinstance(kid, str) else None
        if key is None or not isinstance(kid, str):
            raise Unauthenticated(_KEY_NOT_IN_USE, ErrorReason.TOKEN_INVALID)
        return kid, key

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
        issued, expires = payload["iat"], payload["exp"]
        if not isinstance(issued, int | float) or not isinstance(expires, int):
            raise Unauthenticated(_NOT_VALID, ErrorReason.TOKEN_INVALID)
        # Whatever it claims, no token lives longer than this gateway issues them for.
        if expires - issued > self._ttl or issued > self._clock() + CLOCK_SKEW:
            raise Unauthenticated(_NOT_VALID, ErrorReason.TOKEN_INVALID)
        if expires <= self._clock():
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
            issued_at=float(issued),
            expires_at=expires,
        )


@dataclass(frozen=True)
class _Verified:
    claims: Claims
    thumbprint: str
    kid: str
