"""Login tokens: issue, expiry, revocation, disabled users, the binding to the client
certificate that logged in, and keys shared by replicas (published, rotated, retired)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.common.db import Database
from server.common.errors import Unauthenticated
from server.common.principal import Claims
from server.gateway.models import Base as GatewayBase
from server.gateway.revocations import Revocations
from server.gateway.token_keys import KeyRing, write_new_key
from server.gateway.tokens import TokenService
from tests.unit.conftest import sqlite_database

CERT = "thumbprint-of-client-1"
TTL = 900


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


def key_ring(db: Database, tmp_path: Path, replica: str, clock: Clock) -> KeyRing:
    ring = KeyRing(db, replica, tmp_path / f"{replica}-token-key.pem", clock)
    asyncio.run(ring.start())
    return ring


@pytest.fixture
def ring(gateway_db: Database, tmp_path: Path, clock: Clock) -> KeyRing:
    return key_ring(gateway_db, tmp_path, "gateway", clock)


@pytest.fixture
def tokens(ring: KeyRing, revocations: Revocations, clock: Clock) -> TokenService:
    return TokenService(ring, TTL, revocations, clock)


def issue(tokens: TokenService, subject: str = "alice") -> str:
    token, _ = tokens.issue(
        subject=subject, role="customer", bank="alpha", account="A-1", thumbprint=CERT
    )
    return token


def verify(tokens: TokenService, token: str, cert: str = CERT) -> Claims:
    return asyncio.run(tokens.verify(token, cert))


def test_a_token_proves_its_claims(tokens: TokenService) -> None:
    claims = verify(tokens, issue(tokens))
    assert (claims.subject, claims.role, claims.bank, claims.account) == (
        "alice",
        "customer",
        "alpha",
        "A-1",
    )
    assert claims.expires_at - int(claims.issued_at) == TTL


def test_a_token_is_bound_to_its_certificate(tokens: TokenService) -> None:
    token = issue(tokens)
    with pytest.raises(Unauthenticated, match="another client certificate"):
        verify(tokens, token, "thumbprint-of-someone-else")
    verify(tokens, token)  # and a cached check does not loosen the binding
    with pytest.raises(Unauthenticated):
        verify(tokens, token, "thumbprint-of-someone-else")


def test_a_token_expires(tokens: TokenService, clock: Clock) -> None:
    token = issue(tokens)
    verify(tokens, token)
    clock.now += TTL + 1
    with pytest.raises(Unauthenticated, match="expired"):
        verify(tokens, token)


def test_a_token_from_a_key_nobody_published_is_refused(
    tokens: TokenService, tmp_path: Path, clock: Clock
) -> None:
    elsewhere = sqlite_database(tmp_path / "elsewhere.db", GatewayBase)
    stranger = TokenService(key_ring(elsewhere, tmp_path, "stranger", clock), TTL, None, clock)
    with pytest.raises(Unauthenticated, match="no gateway published"):
        verify(tokens, issue(stranger))
    elsewhere.close()


def test_a_token_issued_by_one_replica_is_verified_by_another(
    gateway_db: Database, tmp_path: Path, tokens: TokenService, clock: Clock
) -> None:
    other = TokenService(key_ring(gateway_db, tmp_path, "gateway-2", clock), TTL, None, clock)
    # Published after this replica last loaded the keys: found by reloading on a miss.
    assert verify(tokens, issue(other)).subject == "alice"
    assert verify(other, issue(tokens)).subject == "alice"


def test_many_calls_at_once_with_a_new_replica_s_token_all_find_its_key(
    gateway_db: Database, tmp_path: Path, tokens: TokenService, clock: Clock
) -> None:
    other = TokenService(key_ring(gateway_db, tmp_path, "gateway-2", clock), TTL, None, clock)
    token = issue(other)

    async def at_once() -> list[Claims]:
        return await asyncio.gather(*(tokens.verify(token, CERT) for _ in range(50)))

    assert {claims.subject for claims in asyncio.run(at_once())} == {"alice"}


def test_a_rotated_key_signs_new_tokens_and_the_old_ones_live_on_until_they_expire(
    gateway_db: Database, tmp_path: Path, ring: KeyRing, tokens: TokenService, clock: Clock
) -> None:
    old_token, old_kid = issue(tokens), ring.signing.kid
    write_new_key(tmp_path / "gateway-token-key.pem")  # what `rotate-key` does
    asyncio.run(ring.refresh())
    assert ring.signing.kid != old_kid
    new_token = issue(tokens)
    assert verify(tokens, old_token).subject == "alice"
    assert verify(tokens, new_token).subject == "alice"
    # Once every token the old key signed has expired, the key is dropped.
    clock.now += TTL + 1
    asyncio.run(ring.forget_retired(TTL))
    asyncio.run(ring.refresh())
    assert ring.public(old_kid) is None
    assert ring.public(ring.signing.kid) is not None


def test_a_revoked_token_is_refused(
    tokens: TokenService, revocations: Revocations, gateway_db: Database, clock: Clock
) -> None:
    token = issue(tokens)
    claims = verify(tokens, token)
    asyncio.run(revocations.revoke(claims))
    with pytest.raises(Unauthenticated, match="revoked"):
        verify(tokens, token)
    # Another replica learns it from the database.
    elsewhere = Revocations(gateway_db, clock)
    asyncio.run(elsewhere.refresh())
    assert elsewhere.refusal(claims) is not None


def test_disabling_a_user_cuts_every_token_and_enabling_needs_a_new_login(
    tokens: TokenService, revocations: Revocations, clock: Clock
) -> None:
    token = issue(tokens)
    verify(tokens, token)
    clock.now += 1
    asyncio.run(revocations.set_disabled("alice", True))
    with pytest.raises(Unauthenticated, match="disabled"):
        verify(tokens, token)
    assert verify(tokens, issue(tokens, "bob")).subject == "bob"
    clock.now += 1
    asyncio.run(revocations.set_disabled("alice", False))
    with pytest.raises(Unauthenticated, match="log in again"):
        verify(tokens, token)
    verify(tokens, issue(tokens))  # a new login works


def test_expired_revocations_are_forgotten(
    tokens: TokenService, revocations: Revocations, clock: Clock
) -> None:
    claims = verify(tokens, issue(tokens))
    asyncio.run(revocations.revoke(claims))
    clock.now += 1000
    asyncio.run(revocations.forget_expired())
    asyncio.run(revocations.refresh())
    assert revocations.refusal(claims) is None
