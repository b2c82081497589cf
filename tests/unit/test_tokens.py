"""Login tokens: issue, expiry, revocation, disabled users, the binding to the client
certificate that logged in, and keys shared by replicas (published, rotated, retired)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import jwt
import pytest
from sqlalchemy import text

from server.common.db import Database
from server.common.errors import Unauthenticated
from server.common.principal import Claims, identity
from server.gateway.models import Base as GatewayBase
from server.gateway.revocations import Revocations
from server.gateway.token_keys import KeyRing, write_new_key
from server.gateway.tokens import ALGORITHM, AUDIENCE, ISSUER, TokenService
from tests.unit.conftest import sqlite_database

CERT = "thumbprint-of-client-1"
TTL = 900
ALICE = identity("customer", "alpha", "alice")


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
    with pytest.raises(Unauthenticated, match="no gateway uses"):
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


def test_a_rotated_key_signs_new_tokens_and_ends_the_old_ones(
    gateway_db: Database, tmp_path: Path, ring: KeyRing, tokens: TokenService, clock: Clock
) -> None:
    """Rotation is what ends a copied key: the tokens it signed, even those verified (and
    remembered) before, are refused from the next reload on."""
    old_token, old_kid = issue(tokens), ring.signing.kid
    assert verify(tokens, old_token).subject == "alice"  # verified once: remembered
    write_new_key(tmp_path / "gateway-token-key.pem")  # what `rotate-key` does
    asyncio.run(ring.refresh())
    assert ring.signing.kid != old_kid
    assert verify(tokens, issue(tokens)).subject == "alice"
    with pytest.raises(Unauthenticated, match="no gateway uses"):
        verify(tokens, old_token)
    # Retired keys are kept a token's lifetime for the record, then dropped.
    clock.now += TTL + 1
    asyncio.run(ring.forget_retired(TTL))
    kids = gateway_db.run_sync(lambda s: s.execute(text("SELECT kid FROM token_keys")).all())
    assert [row.kid for row in kids] == [ring.signing.kid]


def test_a_removed_key_ends_its_tokens_at_the_next_reload(
    gateway_db: Database, tmp_path: Path, tokens: TokenService, ring: KeyRing, clock: Clock
) -> None:
    other = TokenService(key_ring(gateway_db, tmp_path, "gateway-2", clock), TTL, None, clock)
    token = issue(other)
    assert verify(tokens, token).subject == "alice"  # remembered by this replica
    gateway_db.run_sync(
        lambda s: s.execute(text("DELETE FROM token_keys WHERE replica = 'gateway-2'"))
    )
    assert verify(tokens, token).subject == "alice"  # until this replica reloads
    asyncio.run(ring.refresh())
    with pytest.raises(Unauthenticated, match="no gateway uses"):
        verify(tokens, token)


def test_a_replica_s_rotation_retires_its_own_keys_only(
    gateway_db: Database, tmp_path: Path, tokens: TokenService, ring: KeyRing, clock: Clock
) -> None:
    second_ring = key_ring(gateway_db, tmp_path, "gateway-2", clock)
    second = TokenService(second_ring, TTL, None, clock)
    write_new_key(tmp_path / "gateway-2-token-key.pem")
    asyncio.run(second_ring.refresh())  # gateway-2 rotates
    asyncio.run(ring.refresh())
    # Tokens of this replica still verify everywhere, and so do gateway-2's new ones.
    assert verify(second, issue(tokens)).subject == "alice"
    assert verify(tokens, issue(second)).subject == "alice"
    assert ring.public(ring.signing.kid) is not None
    assert second_ring.public(ring.signing.kid) is not None


@pytest.mark.parametrize(
    "claims",
    [
        {"exp_after_iat": TTL + 1},  # a day-long token, or a ten-year one: not issued here
        {"exp_after_iat": 10 * 365 * 86400},
        {"iat_ahead": 3600, "exp_after_iat": TTL},  # issued in an hour, valid until then
    ],
    ids=["a-second-too-long", "ten-years", "issued-in-the-future"],
)
def test_a_token_that_outlives_the_ttl_is_refused_whatever_it_claims(
    tokens: TokenService, ring: KeyRing, clock: Clock, claims: dict[str, int]
) -> None:
    issued = int(clock.now) + claims.get("iat_ahead", 0)
    payload = {
        "sub": "admin",
        "role": "admin",
        "bank": "",
        "account": "",
        "iat": issued,
        "exp": issued + claims["exp_after_iat"],
        "jti": "forged",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "cnf": {"x5t#S256": CERT},
    }
    # Signed with the replica's own key: only the claims are wrong.
    forged = jwt.encode(
        payload, ring.signing.private, algorithm=ALGORITHM, headers={"kid": ring.signing.kid}
    )
    with pytest.raises(Unauthenticated, match="not valid"):
        verify(tokens, forged)
    payload["exp"] = int(clock.now) + TTL  # the control: the same token, a TTL long
    payload["iat"] = int(clock.now)
    control = jwt.encode(
        payload, ring.signing.private, algorithm=ALGORITHM, headers={"kid": ring.signing.kid}
    )
    assert verify(tokens, control).role == "admin"


def set_lease(db: Database, replica: str, expires_in: float) -> None:
    """Replica REPLICA's lease ends EXPIRES_IN seconds from now (by the database's clock)."""
    db.run_sync(
        lambda s: s.execute(
            text(
                "INSERT INTO replicas (name, token, lease_expires_at, started_at) VALUES "
                "(:name, :token, ((julianday('now') - 2440587.5) * 86400.0) + :expires_in, 0) "
                "ON CONFLICT (name) DO UPDATE SET lease_expires_at = excluded.lease_expires_at"
            ),
            {"name": replica, "token": abs(hash(replica)) % 10**9, "expires_in": expires_in},
        )
    )


def test_the_key_of_a_replica_gone_for_a_token_s_lifetime_is_retired_until_it_returns(
    gateway_db: Database, tmp_path: Path, tokens: TokenService, ring: KeyRing, clock: Clock
) -> None:
    gone_ring = key_ring(gateway_db, tmp_path, "gateway-2", clock)
    gone = TokenService(gone_ring, TTL, None, clock)
    key_ring(gateway_db, tmp_path, "never-ran-here", clock)  # a name no replica has
    set_lease(gateway_db, "gateway", 60)  # this one is live
    set_lease(gateway_db, "gateway-2", -(TTL - 60))  # gone, but not for long enough yet
    asyncio.run(ring.retire_unused(TTL))
    token = issue(gone)
    assert verify(tokens, token).subject == "alice"
    set_lease(gateway_db, "gateway-2", -(TTL + 1))  # gone for good
    asyncio.run(ring.retire_unused(TTL))
    asyncio.run(ring.refresh())
    with pytest.raises(Unauthenticated, match="no gateway uses"):
        verify(tokens, token)
    in_use = gateway_db.run_sync(
        lambda s: s.execute(text("SELECT replica FROM token_keys WHERE retired_at IS NULL")).all()
    )
    assert [row.replica for row in in_use] == ["gateway"]
    # Back after all (it was paused): it publishes its key again at its next reload.
    asyncio.run(gone_ring.refresh())
    asyncio.run(ring.refresh())
    assert verify(tokens, issue(gone)).subject == "alice"


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
    asyncio.run(revocations.set_disabled(ALICE, True))
    with pytest.raises(Unauthenticated, match="disabled"):
        verify(tokens, token)
    assert verify(tokens, issue(tokens, "bob")).subject == "bob"
    clock.now += 1
    asyncio.run(revocations.set_disabled(ALICE, False))
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
