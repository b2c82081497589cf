"""Login tokens: issue, expiry, revocation, disabled users, and the binding to the client
certificate that logged in."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.common.db import Database
from server.common.errors import Unauthenticated
from server.gateway.revocations import Revocations
from server.gateway.tokens import TokenService

CERT = "thumbprint-of-client-1"


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def revocations(gateway_db: Database, clock: Clock) -> Revocations:
    return Revocations(gateway_db, clock)


@pytest.fixture
def tokens(revocations: Revocations, clock: Clock) -> TokenService:
    return TokenService(Ed25519PrivateKey.generate(), 900, revocations, clock)


def issue(tokens: TokenService, subject: str = "alice") -> str:
    token, _ = tokens.issue(
        subject=subject, role="customer", bank="alpha", account="A-1", thumbprint=CERT
    )
    return token


def test_a_token_proves_its_claims(tokens: TokenService) -> None:
    claims = tokens.verify(issue(tokens), CERT)
    assert (claims.subject, claims.role, claims.bank, claims.account) == (
        "alice",
        "customer",
        "alpha",
        "A-1",
    )
    assert claims.expires_at - claims.issued_at == 900


def test_a_token_is_bound_to_its_certificate(tokens: TokenService) -> None:
    token = issue(tokens)
    with pytest.raises(Unauthenticated, match="another client certificate"):
        tokens.verify(token, "thumbprint-of-someone-else")
    tokens.verify(token, CERT)  # and a cached check does not loosen the binding
    with pytest.raises(Unauthenticated):
        tokens.verify(token, "thumbprint-of-someone-else")


def test_a_token_expires(tokens: TokenService, clock: Clock) -> None:
    token = issue(tokens)
    tokens.verify(token, CERT)
    clock.now += 901
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(token, CERT)


def test_another_key_s_token_is_refused(tokens: TokenService, clock: Clock) -> None:
    other = TokenService(Ed25519PrivateKey.generate(), 900, None, clock)
    with pytest.raises(Unauthenticated, match="not valid"):
        tokens.verify(issue(other), CERT)


def test_a_revoked_token_is_refused(
    tokens: TokenService, revocations: Revocations, gateway_db: Database, clock: Clock
) -> None:
    token = issue(tokens)
    claims = tokens.verify(token, CERT)
    asyncio.run(revocations.revoke(claims))
    with pytest.raises(Unauthenticated, match="revoked"):
        tokens.verify(token, CERT)
    # Another replica learns it from the database.
    elsewhere = Revocations(gateway_db, clock)
    asyncio.run(elsewhere.refresh())
    assert elsewhere.refusal(claims) is not None


def test_disabling_a_user_cuts_every_token_and_enabling_needs_a_new_login(
    tokens: TokenService, revocations: Revocations, clock: Clock
) -> None:
    token = issue(tokens)
    tokens.verify(token, CERT)
    clock.now += 1
    asyncio.run(revocations.set_disabled("alice", True))
    with pytest.raises(Unauthenticated, match="disabled"):
        tokens.verify(token, CERT)
    assert tokens.verify(issue(tokens, "bob"), CERT).subject == "bob"
    clock.now += 1
    asyncio.run(revocations.set_disabled("alice", False))
    with pytest.raises(Unauthenticated, match="log in again"):
        tokens.verify(token, CERT)
    tokens.verify(issue(tokens), CERT)  # a new login works


def test_expired_revocations_are_forgotten(
    tokens: TokenService, revocations: Revocations, clock: Clock
) -> None:
    claims = tokens.verify(issue(tokens), CERT)
    asyncio.run(revocations.revoke(claims))
    clock.now += 1000
    asyncio.run(revocations.forget_expired())
    asyncio.run(revocations.refresh())
    assert revocations.refusal(claims) is None
