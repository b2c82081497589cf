"""Login tokens: signed JWTs (EdDSA, the gateway's own Ed25519 key) bound to the client
certificate that logged in (RFC 8705 ``cnf`` with the certificate's SHA-256 thumbprint),
checked against the revocations (logouts, disabled users) on every use."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.common.errors import ConfigError, Unauthenticated
from server.common.identity import Claims
from server.gateway.revocations import Revocations

ISSUER = "minipay-gateway"
AUDIENCE = "minipay"
ALGORITHM = "EdDSA"
VERIFIED_CACHE_SIZE = 10_000


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The signing key; made on first start and written readable by its owner only."""
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot make folder {path.parent} for the token signing key: {exc.strerror or exc}"
            ) from None
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first; read theirs
        except OSError as exc:
            raise ConfigError(
                f"cannot create token signing key {path}: {exc.strerror or exc}"
            ) from None
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load token signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"token signing key {path} is not an Ed25519 key")
    return key


class TokenService:
    def __init__(
        self,
        key: Ed25519PrivateKey,
        ttl_seconds: int,
        revocations: Revocations | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._key = key
        self._public = key.public_key()
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
            self._key,
            algorithm=ALGORITHM,
        )
        return token, claims

    def verify(self, token: str, thumbprint: str) -> Claims:
        """The claims of a valid token presented with the certificate it is bound to."""
        cached = self._verified.get(token)
        if cached is not None and cached[1] == thumbprint and cached[0].expires_at > self._clock():
            claims = cached[0]
        else:
            claims = self._decode(token, thumbprint)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = (claims, thumbprint)
        refusal = self._revocations.refusal(claims) if self._revocations else None
        if refusal is not None:
            raise Unauthenticated(refusal)
        return claims

    def _decode(self, token: str, thumbprint: str) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._public,
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
            raise Unauthenticated("the login token is not valid: log in again") from None
        if not isinstance(payload["iat"], int | float) or not isinstance(payload["exp"], int):
            raise Unauthenticated("the login token is not valid: log in again")
        if payload["exp"] <= self._clock():
            raise Unauthenticated("the login token has expired: log in again")
        if (payload.get("cnf") or {}).get("x5t#S256") != thumbprint:
            raise Unauthenticated("the login token belongs to another client certificate")
        return Claims(
            subject=str(payload["sub"]),
            role=str(payload.get("role", "")),
            bank=str(payload.get("bank", "")),
            account=str(payload.get("account", "")),
            jti=str(payload["jti"]),
            issued_at=float(payload["iat"]),
            expires_at=int(payload["exp"]),
        )
