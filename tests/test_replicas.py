"""Gateway replicas over one PostgreSQL database: several real gateway processes, any of
which may be killed (-9) or paused (SIGSTOP) at any moment. A payment is driven by exactly
one live replica; a survivor finishes what a dead one left the way the 2PC rules say; a
paused one that wakes writes nothing for what it lost; keys, tokens, logouts, disabled users
and the login throttle are shared; banks ask whichever replica answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, select

from devtools.cluster import GATEWAY, Cluster
from devtools.scratch import free_port
from minipay.client.api import ApiError, ClientConfig, GatewayClient, PaymentStatus
from minipay.v1 import gateway_pb2, gateway_pb2_grpc
from server.common.settings import GatewaySettings, environment
from server.common.tls import thumbprint_of_pem
from server.gateway.models import Payment, Replica
from server.gateway.token_keys import key_id
from server.gateway.tokens import ALGORITHM, AUDIENCE, ISSUER
from tests.conftest import ClusterFactory
from tests.helpers import (
    ABORTED,
    COMMITTED,
    SEED_ACCOUNTS,
    SEED_PASSWORDS,
    Client,
    admin,
    aio_channel,
    assert_atomic,
    assert_reconciled,
    client_config,
    customer,
    gateway_url,
    ledger_counts,
    postgres_available,
    total_money,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    not postgres_available(),
    reason="gateway replicas share a PostgreSQL database: set MINIPAY_TEST_POSTGRES_URL",
)
SECOND = "gateway-2"
LEASE = 1.5  # seconds: short, so that the tests need not wait long for a takeover
REPLICA_ENV = environment(GatewaySettings, lease=LEASE)
TAKEOVER = LEASE + 3.0  # a lease, a recovery pass or two, and slack for a busy machine


def replicas(make_cluster: ClusterFactory, count: int = 2, **options: Any) -> Cluster:
    """COUNT replicas on PostgreSQL, from make_cluster (a cluster of the test's own) or from
    shared_cluster (the one the test's neighbours with the same settings use in turn: the
    plain two replicas of the tests that leave them serving, or restart what they kill)."""
    env = {**REPLICA_ENV, **options.pop("env", {})}
    return make_cluster("postgres", env=env, gateways=count, **options)


def through(
    cluster: Cluster, certs: Path, name: str, token: str = "", cert: str = "client-1"
) -> Client:
    """A client that talks to replica NAME alone."""
    return Client(cluster, certs, cert, token=token, gateway=cluster.address(name))


def replica_rows(cluster: Cluster) -> dict[str, tuple[int, float]]:
    engine = create_engine(gateway_url(cluster))
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(Replica.name, Replica.token, Replica.lease_expires_at))
            return {row.name: (row.token, row.lease_expires_at) for row in rows}
    finally:
        engine.dispose()


def payment_row(cluster: Cluster, payment_id: str) -> Any:
    engine = create_engine(gateway_url(cluster))
    try:
        with engine.connect() as connection:
            return connection.execute(select(Payment).where(Payment.id == payment_id)).one()
    finally:
        engine.dispose()


def log_has(cluster: Cluster, name: str, *words: str) -> bool:
    text = cluster.log_file(name).read_text()
    return any(all(word in line for word in words) for line in text.splitlines())


# -- starting --------------------------------------------------------------------------------


def test_three_replicas_start_at_once_on_an_empty_database(make_cluster: ClusterFactory) -> None:
    cluster = replicas(make_cluster, 3)
    rows = replica_rows(cluster)
    assert set(rows) == {GATEWAY, SECOND, "gateway-3"}
    assert len({token for token, _ in rows.values()}) == 3, "every incarnation its own token"


def test_a_replica_name_used_twice_is_refused(
    shared_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = replicas(shared_cluster, 2)
    env = {
        **cluster.environment(SECOND),
        **environment(GatewaySettings, listen=f"127.0.0.1:{free_port()}", data_dir=tmp_path),
    }
    result = subprocess.run(
        cluster.command(SECOND), env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "replica name 'gateway-2' is in use" in result.stderr, result.stderr
    cluster.wait_ready(SECOND)  # the first one is untouched


# -- identity across replicas ------------------------------------------------------------------


def test_tokens_logouts_disables_and_failed_logins_are_shared(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = replicas(make_cluster, 3, env=environment(GatewaySettings, login_max_failures=4))
    Client(cluster, certs).register("alice", SEED_PASSWORDS["alice"], *SEED_ACCOUNTS["alice"])
    first = through(cluster, certs, GATEWAY)
    first.login("alice", SEED_PASSWORDS["alice"])
    second = through(cluster, certs, SECOND, first.token)
    assert second.balance().account == "A-1001", "a token from one works on another"
    first.logout()
    wait_until(lambda: _refused(second, "balance"), 1.5, "the logout to reach the other replica")

    again = through(cluster, certs, GATEWAY)
    again.login("alice", SEED_PASSWORDS["alice"])
    elsewhere = through(cluster, certs, "gateway-3", again.token)
    elsewhere.balance()
    admin(cluster, certs).set_disabled("alpha", "alice", True)
    wait_until(lambda: _refused(elsewhere, "balance"), 1.5, "the disable to reach the others")
    admin(cluster, certs).set_disabled("alpha", "alice", False)

    # Failed logins count across replicas: 2 + 2 here and there, and the fifth is refused
    # everywhere, even with the right password.
    for name in (GATEWAY, GATEWAY, SECOND, SECOND):
        error = through(cluster, certs, name, cert="client-2").error("login", "alice", "wrong-pass")
        assert error.code == grpc.StatusCode.UNAUTHENTICATED
    error = through(cluster, certs, "gateway-3").error("login", "alice", SEED_PASSWORDS["alice"])
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_THROTTLED")


def _refused(client: Client, method: str) -> bool:
    try:
        getattr(client, method)()
    except ApiError as error:
        return bool(error.code == grpc.StatusCode.UNAUTHENTICATED)
    return False


def test_the_key_of_a_replica_stopped_for_good_is_retired(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    """A copy of a replica's key signs tokens every replica honours while that replica runs,
    and for a token's lifetime after it stopped (a restart keeps its sessions); then it is
    retired, and a copy of it signs nothing more."""
    ttl = 6
    cluster = replicas(make_cluster, 2, env=environment(GatewaySettings, token_ttl=ttl))
    pem = (cluster.data_dir / f"{SECOND}-token-key.pem").read_bytes()
    copied = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(copied, Ed25519PrivateKey)
    thumbprint = thumbprint_of_pem((certs / "client-2.pem").read_bytes())

    def forged_admin() -> Client:
        issued = int(time.time())
        claims = {
            "sub": "mallory",
            "role": "admin",
            "bank": "",
            "account": "",
            "iat": issued,
            "exp": issued + ttl,
            "jti": uuid.uuid4().hex,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "cnf": {"x5t#S256": thumbprint},
        }
        token = jwt.encode(
            claims, copied, algorithm=ALGORITHM, headers={"kid": key_id(copied.public_key())}
        )
        return through(cluster, certs, GATEWAY, token, cert="client-2")

    assert forged_admin().list_banks().banks  # the control: the key is in use
    cluster.kill(SECOND)  # for good
    stopped = time.monotonic()
    assert forged_admin().list_banks().banks  # within the grace, as for a restart
    wait_until(lambda: _refused(forged_admin(), "list_banks"), ttl + 10, "the key's retirement")
    assert time.monotonic() - stopped > ttl - 1, "retired before a token's lifetime had passed"


# -- a replica killed mid-payment ---------------------------------------------------------------

CRASHES = [
    ("crash_after_record", ABORTED),
    ("crash_after_decision", COMMITTED),
    ("crash_after_first_commit_ack", COMMITTED),
]


@pytest.mark.parametrize(("fault", "outcome"), CRASHES, ids=[c[0] for c in CRASHES])
def test_a_survivor_finishes_what_a_killed_replica_left(
    shared_cluster: ClusterFactory, certs: Path, fault: str, outcome: PaymentStatus
) -> None:
    cluster = replicas(shared_cluster, 2)
    cluster.restart(GATEWAY, faults=fault)
    alice = customer(cluster, certs, "alice", register=False)
    before = total_money(cluster)
    key = str(uuid.uuid4())
    try:  # the owner may answer before it dies (its decision stored), or not at all
        first = through(cluster, certs, GATEWAY, alice.token).pay(
            "beta", "B-2001", 2500, idempotency_key=key
        )
    except ApiError:
        first = None
    if first is not None:
        assert first.status == outcome, first
    assert cluster.wait_exit(GATEWAY, timeout=30) == 97  # died at the injection point
    # The client's retry with the same key, through the survivor, gets the outcome.
    retry = through(cluster, certs, SECOND, alice.token)
    deadline = time.monotonic() + TAKEOVER + 10
    while True:
        answer = retry.pay("beta", "B-2001", 2500, idempotency_key=key)
        if answer.status != PaymentStatus.PENDING or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answer.status == outcome, answer
    assert answer.replayed
    assert_atomic(cluster, before)
    assert_reconciled(cluster, certs)
    assert ledger_counts(cluster)[answer.payment_id] == (2 if outcome == COMMITTED else 0)
    assert payment_row(cluster, answer.payment_id).owner_token == replica_rows(cluster)[SECOND][0]


# -- the same key at two replicas at once --------------------------------------------------------


def test_one_key_at_two_replicas_at_once_makes_one_payment(
    shared_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = replicas(shared_cluster, 2)
    alice = customer(cluster, certs, "alice", register=False)
    keys = [f"twin-{i}-{uuid.uuid4()}" for i in range(100)]
    different = set(keys[::10])  # these are sent with another amount to the second replica

    async def both() -> list[tuple[str, Any, Any]]:
        one = GatewayClient(config_for(cluster, certs, GATEWAY), alice.token)
        two = GatewayClient(config_for(cluster, certs, SECOND), alice.token)
        try:

            async def pair(key: str) -> tuple[str, Any, Any]:
                other_amount = 2 if key in different else 1
                answers = await asyncio.gather(
                    one.pay("beta", "B-2001", 1, idempotency_key=key),
                    two.pay("beta", "B-2001", other_amount, idempotency_key=key),
                    return_exceptions=True,
                )
                return key, answers[0], answers[1]

            return list(await asyncio.gather(*(pair(key) for key in keys)))
        finally:
            await one.close()
            await two.close()

    results = asyncio.run(both())
    made: Counter[str] = Counter()
    for key, first, second in results:
        answers = [a for a in (first, second) if not isinstance(a, BaseException)]
        errors = [a for a in (first, second) if isinstance(a, BaseException)]
        if key in different:
            # One body won; the other is refused as a reused key.
            assert len(answers) == 1 and len(errors) == 1, (key, first, second)
            assert isinstance(errors[0], ApiError), errors[0]
            assert errors[0].reason == "IDEMPOTENCY_KEY_REUSED", errors[0]
        else:
            assert not errors, (key, errors)
            assert answers[0].payment_id == answers[1].payment_id, key
            assert sorted(a.replayed for a in answers) == [False, True], key
            assert answers[0].status == answers[1].status == COMMITTED
        made[answers[0].payment_id] += 1
    assert len(made) == len(keys)


def config_for(cluster: Cluster, certs: Path, name: str) -> ClientConfig:
    return client_config(cluster, certs, gateway=cluster.address(name))


# -- a paused owner -----------------------------------------------------------------------------


def test_a_paused_owner_loses_its_payment_and_writes_nothing_for_it(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = replicas(make_cluster, 2, faults={"beta": "delay_prepare=2"})
    alice = customer(cluster, certs, "alice")
    before = total_money(cluster)
    result: dict[str, Any] = {}
    paying = threading.Thread(
        target=lambda: result.update(
            answer=through(cluster, certs, GATEWAY, alice.token).pay("beta", "B-2001", 700)
        )
    )
    paying.start()
    time.sleep(0.5)  # recorded; beta is sitting on the Prepare
    owner = cluster.processes[GATEWAY]
    os.kill(owner.pid, signal.SIGSTOP)
    try:
        wait_until(
            lambda: log_has(cluster, SECOND, "payment_taken_over"), TAKEOVER + 10, "a takeover"
        )
    finally:
        os.kill(owner.pid, signal.SIGCONT)
    paying.join(60)
    answer = result["answer"]
    # The survivor presumed abort; the woken owner answered its caller from the row.
    assert answer.status == ABORTED, answer
    wait_until(lambda: log_has(cluster, GATEWAY, "payment_lost", answer.payment_id), 10, "lost")
    row = payment_row(cluster, answer.payment_id)
    survivor = replica_rows(cluster)[SECOND][0]
    assert row.decided_by == survivor and row.owner_token == survivor
    assert_atomic(cluster, before)


# -- a bank asks any replica ---------------------------------------------------------------------


def test_a_bank_asking_a_replica_that_does_not_own_the_payment(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = replicas(make_cluster, 2, faults={"beta": "delay_prepare=3"})
    alice = customer(cluster, certs, "alice")
    paying = threading.Thread(
        target=lambda: _ignore(
            lambda: through(cluster, certs, GATEWAY, alice.token).pay("beta", "B-2001", 300)
        )
    )
    paying.start()
    time.sleep(0.5)
    engine = create_engine(gateway_url(cluster))
    with engine.connect() as connection:
        [payment_id] = connection.execute(select(Payment.id)).scalars().all()
    engine.dispose()
    # Its owner is alive and deciding: the other replica says so.
    assert ask_decision(cluster, certs, SECOND, payment_id) == gateway_pb2.DECISION_PENDING
    cluster.kill(GATEWAY)
    # Its owner is dead: the other replica takes it over, aborts it, and says so.
    deadline = time.monotonic() + TAKEOVER + 10
    while (
        answer := ask_decision(cluster, certs, SECOND, payment_id)
    ) == gateway_pb2.DECISION_PENDING:
        assert time.monotonic() < deadline, "never taken over"
        time.sleep(0.2)
    assert answer == gateway_pb2.DECISION_ABORT
    paying.join(60)


def _ignore(work: Any) -> None:
    with contextlib.suppress(ApiError):
        work()


def ask_decision(cluster: Cluster, certs: Path, replica: str, payment_id: str) -> int:
    async def ask() -> int:
        async with aio_channel(cluster, certs, replica, "alpha") as channel:
            answer = await gateway_pb2_grpc.CoordinatorStub(channel).GetDecision(
                gateway_pb2.GetDecisionRequest(payment_ids=[payment_id]), timeout=10
            )
        return int(answer.decisions[0].decision)

    return asyncio.run(ask())


# -- clients go round the replicas ---------------------------------------------------------------


def test_clients_keep_paying_while_a_replica_stops_or_dies(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = replicas(make_cluster, 3)
    alice = customer(cluster, certs, "alice")
    config = client_config(cluster, certs, gateway=cluster.gateway_addresses, attempts=5)
    before = total_money(cluster)
    stop = time.monotonic() + 8
    answers: list[Any] = []

    async def pay_on() -> None:
        async with GatewayClient(config, alice.token) as client:
            while time.monotonic() < stop:
                answers.append(await client.pay("gamma", "G-3001", 1))

    worker = threading.Thread(target=lambda: asyncio.run(pay_on()))
    worker.start()
    time.sleep(2)
    cluster.processes[SECOND].send_signal(signal.SIGTERM)  # a clean stop: NOT_SERVING, drain
    time.sleep(2)
    cluster.kill("gateway-3")  # and a crash
    worker.join(60)
    assert len(answers) > 20
    # What the killed replica was deciding at that moment (one payment: one client) ended as
    # the rules say: undecided, so presumed aborted by a survivor; everything else committed.
    aborted = [answer for answer in answers if answer.status != COMMITTED]
    assert len(aborted) <= 1, aborted
    assert all(a.status == ABORTED and a.reason_code == "TIMEOUT" for a in aborted), aborted
    assert_atomic(cluster, before)
    assert_reconciled(cluster, certs)
