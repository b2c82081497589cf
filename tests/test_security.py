"""The security review's findings, each written as the attack: impostor servers on every link,
a customer certificate claiming to be a service, throttles raced, sprayed and flooded (from
one certificate and from forty), a bank outage that must not lock anyone out, usernames told
apart by time, a disabled user's token, a copied signing key, someone else's account taken at
registration, unbounded input, money at its edge, files others can read, and usernames taken
over at another bank. Every attack must be refused before any secret or decision crosses."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import os
import stat
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text

from certificate.ca import CLIENTS_CA, SERVICES_CA, ensure_dev_pki
from devtools.cluster import GATEWAY, Cluster
from devtools.scratch import free_port
from minipay.client.api import ApiError, GatewayClient
from minipay.service_names import GATEWAY_ID, bank_id, bank_server_name
from minipay.v1 import bank_pb2, bank_pb2_grpc, common_pb2, gateway_pb2
from server.common.settings import GatewaySettings, environment
from server.common.tls import TlsFiles, channel_credentials, channel_options, thumbprint_of_pem
from server.common.validation import MAX_BALANCE
from server.gateway.token_keys import key_id
from server.gateway.tokens import ALGORITHM, AUDIENCE, ISSUER
from tests import command_lines
from tests.conftest import TEST_ENV, ClusterFactory
from tests.forged import forged_client_certificate
from tests.helpers import (
    ABORTED,
    ADMIN,
    SEED_ACCOUNTS,
    SEED_PASSWORDS,
    Client,
    admin,
    aio_channel,
    bank_state,
    bank_url,
    certificate_files,
    channel,
    client_config,
    customer,
    gateway_url,
    running_cluster,
    server_env,
    server_name,
    settle,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
THROTTLED = grpc.StatusCode.RESOURCE_EXHAUSTED
REFUSED_CODES = {UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


# -- impostors --------------------------------------------------------------------------------


class Impostor:
    """A server with a valid certificate from one of our CAs but the wrong identity, on a
    real address: it answers every call with a yes and remembers what reached it."""

    def __init__(self, certs: Path, files: TlsFiles, port: int) -> None:
        self.calls: list[str] = []
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
        self._server.add_generic_rpc_handlers([_Recorder(self.calls)])
        credentials = grpc.ssl_server_credentials(
            [(files.key.read_bytes(), files.cert.read_bytes())],
            root_certificates=(certs / SERVICES_CA).read_bytes()
            + (certs / CLIENTS_CA).read_bytes(),
            require_client_auth=False,
        )
        assert self._server.add_secure_port(f"127.0.0.1:{port}", credentials) == port
        self._server.start()

    def stop(self) -> None:
        self._server.stop(None)


class _Recorder(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Says yes to everything: logins succeed, votes are yes, decisions are commit."""

    ANSWERS: dict[str, Any] = {
        "/minipay.v1.Auth/Login": gateway_pb2.LoginResponse(token="stolen", role="customer"),
        "/minipay.v1.Accounts/VerifyCredentials": bank_pb2.VerifyCredentialsResponse(
            ok=True, role="customer"
        ),
        "/minipay.v1.Coordinator/GetDecision": gateway_pb2.GetDecisionResponse(),
    }

    def __init__(self, calls: list[str]) -> None:
        self._calls = calls

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method

        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            self._calls.append(method)
            known = self.ANSWERS.get(method)
            return known.SerializeToString() if known is not None else b""

        return grpc.unary_unary_rpc_method_handler(answer)


@contextmanager
def impostor(certs: Path, files: TlsFiles, port: int) -> Iterator[Impostor]:
    server = Impostor(certs, files, port)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("cert", ["client-1", "alpha"])
def test_the_client_refuses_an_impostor_gateway(certs: Path, tmp_path: Path, cert: str) -> None:
    """A customer's certificate, or a bank's, on the gateway's address: no password leaves."""
    port = free_port()
    with impostor(certs, certificate_files(certs, cert), port) as fake:
        given = command_lines.variables(
            certs, f"127.0.0.1:{port}", tmp_path / "home", "client-1", MINIPAY_ATTEMPTS="1"
        )
        login = ["login", "--username", "alice", "--password-stdin"]
        result = command_lines.run_here("client", login, given, SEED_PASSWORDS["alice"] + "\n")
        assert result.returncode != 0, result.stdout
        assert "logged in" not in result.stdout
        assert "Traceback" not in result.stderr
        assert fake.calls == [], "the password reached the impostor"


@pytest.mark.parametrize("cert", ["client-1", "alpha", "clients-ca-as-gamma"])
def test_the_gateway_refuses_an_impostor_bank(
    shared_cluster: ClusterFactory, certs: Path, tmp_path: Path, cert: str
) -> None:
    """On gamma's address: a customer's certificate, another bank's, or one the clients CA
    signed with gamma's very names (only the CA tells it apart: the gateway's channels to
    banks must trust the services CA alone). The gateway sends it no password and no
    Prepare, so a wrong password never logs in and nothing is paid. (The three take turns
    on one cluster, every customer registered: erin's password is the one to guard.)"""
    cluster = shared_cluster()
    alice = customer(cluster, certs, "alice", register=False)
    files = (
        forged_client_certificate(
            certs, tmp_path, "gamma", bank_id("gamma"), bank_server_name("gamma")
        )
        if cert == "clients-ca-as-gamma"
        else certificate_files(certs, cert)
    )
    cluster.kill("gamma")
    with impostor(certs, files, cluster.ports["gamma"]) as fake:
        error = Client(cluster, certs, "client-2").error("login", "erin", "not-erins-password")
        assert error.code in {*REFUSED_CODES, grpc.StatusCode.UNAVAILABLE}, error
        answer = alice.pay("gamma", "G-3001", 500)
        assert answer.status == ABORTED and answer.reason_code == "BANK_UNAVAILABLE"
        assert fake.calls == [], "a password or a Prepare reached the impostor"
    cluster.start_process("gamma")
    cluster.wait_ready("gamma")
    settle(cluster)


@pytest.mark.parametrize("cert", ["client-1", "alpha"])
def test_a_bank_refuses_an_impostor_gateway(
    shared_cluster: ClusterFactory, certs: Path, cert: str
) -> None:
    """A bank in doubt asks only the real gateway: an impostor on its address hears nothing
    and decides nothing. (The two take turns on one cluster; the real gateway, back for the
    next, presumes the unknown payment aborted.)"""
    cluster = shared_cluster(env=server_env(txn_timeout=1))
    in_doubt = f"pay_in_doubt_{cert}"
    prepare_in_doubt(cluster, certs, in_doubt, "B-2001", 700)
    cluster.kill(GATEWAY)
    with impostor(certs, certificate_files(certs, cert), cluster.ports[GATEWAY]) as fake:
        time.sleep(3)  # past the timeout: beta asks, several times
        assert fake.calls == [], "the bank asked the impostor"
    assert bank_state(cluster, "beta")["payments"][in_doubt] == "PREPARED"


def prepare_in_doubt(
    cluster: Cluster, certs: Path, payment_id: str, account: str, amount: int
) -> None:
    """Beta votes yes on a debit, as the gateway would ask it to."""

    async def send() -> None:
        async with aio_channel(cluster, certs, "beta", GATEWAY) as channel:
            leg = bank_pb2.Leg(
                payment_id=payment_id,
                side=bank_pb2.LEG_SIDE_DEBIT,
                account=account,
                amount=common_pb2.Money(minor_units=amount, currency="USD"),
            )
            answer = await bank_pb2_grpc.ParticipantStub(channel).Prepare(
                bank_pb2.PrepareRequest(legs=[leg]), timeout=10
            )
            assert answer.votes[0].value == bank_pb2.VOTE_VALUE_YES

    asyncio.run(send())


# -- a customer certificate can never be a service --------------------------------------------


def call(cluster: Cluster, target: str, files: TlsFiles, method: str, request: Any) -> Any:
    with grpc.secure_channel(
        cluster.address(target), channel_credentials(files), channel_options(server_name(target))
    ) as channel:
        stub = channel.unary_unary(
            method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=lambda data: data,
        )
        try:
            stub(request, timeout=10)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK


@pytest.mark.in_process
def test_a_customer_certificate_claiming_to_be_the_gateway_is_not(
    cluster: Cluster, certs: Path, tmp_path: Path
) -> None:
    forged = forged_client_certificate(certs, tmp_path, "gateway", GATEWAY_ID)
    # Banks trust only the services CA: the handshake itself fails.
    for method, request in [
        ("/minipay.v1.Accounts/ListCustomers", bank_pb2.ListCustomersRequest()),
        ("/minipay.v1.Accounts/ApplyDeposit", bank_pb2.ApplyDepositRequest()),
        ("/minipay.v1.Participant/Commit", bank_pb2.CommitRequest(payment_ids=["x"])),
    ]:
        assert call(cluster, "alpha", forged, method, request) == grpc.StatusCode.UNAVAILABLE
    # The gateway takes it for what its CA says: a client, and no bank.
    impostor_bank = forged_client_certificate(certs, tmp_path / "b", "alpha", bank_id("alpha"))
    asked = call(
        cluster,
        GATEWAY,
        impostor_bank,
        "/minipay.v1.Coordinator/GetDecision",
        gateway_pb2.GetDecisionRequest(payment_ids=["x"]),
    )
    assert asked == grpc.StatusCode.PERMISSION_DENIED


# -- password checks --------------------------------------------------------------------------


@pytest.fixture
def throttled(make_cluster: ClusterFactory, certs: Path) -> Cluster:
    cluster = make_cluster(
        env=environment(GatewaySettings, login_max_failures=3, login_cooldown=30)
    )
    for name in ("bob", "dave"):
        Client(cluster, certs).register(name, SEED_PASSWORDS[name], *SEED_ACCOUNTS[name])
    return cluster


@pytest.mark.in_process
def test_a_burst_of_guesses_cannot_race_the_throttle(throttled: Cluster, certs: Path) -> None:
    """40 wrong passwords at once, then the right one: no more than 3 are ever checked."""

    async def burst() -> list[grpc.StatusCode]:
        clients = [
            GatewayClient(client_config(throttled, certs, cert))
            for cert in ("client-1", "client-2", "client-3")
            for _ in range(4)
        ]

        async def guess(client: GatewayClient, password: str) -> grpc.StatusCode:
            try:
                await client.login("bob", password)
            except ApiError as error:
                return error.code
            return grpc.StatusCode.OK

        try:
            wrong = [guess(clients[i % len(clients)], f"guess-number-{i}") for i in range(40)]
            codes = await asyncio.gather(*wrong)
            right = await guess(clients[0], SEED_PASSWORDS["bob"])
        finally:
            for client in clients:
                await client.close()
        return [*codes, right]

    codes = asyncio.run(burst())
    checked = [code for code in codes if code in (UNAUTHENTICATED, grpc.StatusCode.OK)]
    assert len(checked) <= 3, codes
    assert codes[-1] == THROTTLED, "the right password slipped through the burst"


@pytest.mark.in_process
def test_register_is_throttled_like_login(throttled: Cluster, certs: Path) -> None:
    client = Client(throttled, certs, "client-2")
    answers = [
        client.error("register", "dave", f"not-daves-{i}", *SEED_ACCOUNTS["dave"]).code
        for i in range(3)
    ]
    assert answers == [UNAUTHENTICATED] * 3
    # The right password, now: refused by the throttle before any check.
    error = client.error("register", "dave", SEED_PASSWORDS["dave"], *SEED_ACCOUNTS["dave"])
    assert (error.code, error.reason) == (THROTTLED, "LOGIN_THROTTLED")
    assert error.retry_after is not None and error.retry_after > 0, error


def test_unknown_usernames_cost_the_same_as_known_ones(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    """With a real bcrypt cost, a wrong password for a registered user and any password for a
    name nobody has take the same time."""
    cluster = make_cluster(
        env={
            **server_env(bcrypt_rounds=10),
            **environment(GatewaySettings, login_max_failures=1000, login_client_max_failures=1000),
        }
    )
    Client(cluster, certs).register("bob", SEED_PASSWORDS["bob"], *SEED_ACCOUNTS["bob"])
    client = Client(cluster, certs)

    def seconds(username: str) -> float:
        started = time.perf_counter()
        assert client.error("login", username, "a-wrong-password").code == UNAUTHENTICATED
        return time.perf_counter() - started

    for name in ("bob", "nobody-at-all"):
        seconds(name)  # warm up both paths
    # Interleaved, so that whatever else the machine does weighs on both alike.
    known_times, unknown_times = [], []
    for attempt in range(9):
        known_times.append(seconds("bob"))
        unknown_times.append(seconds(f"nobody-{attempt}"))
    known, unknown = statistics.median(known_times), statistics.median(unknown_times)
    assert 0.6 < unknown / known < 1.6, (known, unknown)


def test_a_flood_from_one_certificate_does_not_starve_another_customer(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = make_cluster()
    Client(cluster, certs).register("alice", SEED_PASSWORDS["alice"], *SEED_ACCOUNTS["alice"])
    stop = time.monotonic() + 4
    flooded = threading.Event()

    async def flood() -> int:
        clients = [GatewayClient(client_config(cluster, certs, "client-2")) for _ in range(20)]

        async def hammer(client: GatewayClient, number: int) -> int:
            sent = 0
            while time.monotonic() < stop:
                with suppress(ApiError):
                    await client.register("carol", f"flood-{number}-{sent}", "beta", "B-2001")
                sent += 1
                flooded.set()
            return sent

        try:
            return sum(await asyncio.gather(*(hammer(c, i) for i, c in enumerate(clients * 10))))
        finally:
            for client in clients:
                await client.close()

    result: dict[str, int] = {}
    attacker = threading.Thread(target=lambda: result.update(sent=asyncio.run(flood())))
    attacker.start()
    try:
        assert flooded.wait(10)
        started = time.monotonic()
        Client(cluster, certs, "client-1").login("alice", SEED_PASSWORDS["alice"])
        took = time.monotonic() - started
    finally:
        attacker.join(30)
    assert took < 3.0, f"a login during the flood took {took:.1f} s"
    assert result["sent"] > 200, result


@pytest.mark.in_process
def test_one_certificate_cannot_spray_guesses_over_many_usernames(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    """Four wrong passwords at four names (real and unknown) lock the certificate, though it
    logs in to its own account between the guesses: a right password gives back only its own
    attempt, never the certificate's failures. Another certificate is not locked."""
    cluster = make_cluster(
        env=environment(GatewaySettings, login_client_max_failures=4, login_max_failures=100)
    )
    sprayer = Client(cluster, certs, "client-1")
    sprayer.register("alice", SEED_PASSWORDS["alice"], *SEED_ACCOUNTS["alice"])
    for number, name in enumerate(("bob", "carol", "nobody-1", "nobody-2")):
        if number:
            sprayer.login("alice", SEED_PASSWORDS["alice"])
        assert sprayer.error("login", name, "a-wrong-guess-1").code == UNAUTHENTICATED
    for name, password in (("erin", "a-wrong-guess-2"), ("alice", SEED_PASSWORDS["alice"])):
        error = sprayer.error("login", name, password)
        assert (error.code, error.reason) == (THROTTLED, "LOGIN_THROTTLED"), error
        assert "client certificate" in error.message
    Client(cluster, certs, "client-2").login("alice", SEED_PASSWORDS["alice"])


def cli_login(
    cluster: Cluster, certs: Path, home: Path, username: str, password: str
) -> subprocess.CompletedProcess[str]:
    """The client's ``login`` as a customer runs it, with its automatic retries (its main()
    in this process: tests/command_lines.py)."""
    given = command_lines.variables(
        certs, cluster.gateway_address, home, "client-1", MINIPAY_ATTEMPTS="5"
    )
    login = ["login", "--username", username, "--password-stdin"]
    return command_lines.run_here("client", login, given, password + "\n")


def test_a_bank_outage_costs_no_password_attempts(
    make_cluster: ClusterFactory, certs: Path, tmp_path: Path
) -> None:
    """The probe: one CLI login while the bank was down (five attempts) locked the customer
    out once it was back. A check the bank never answered is no wrong password."""
    cluster = make_cluster(
        env=environment(GatewaySettings, login_max_failures=3, login_client_max_failures=3)
    )
    Client(cluster, certs).register("alice", SEED_PASSWORDS["alice"], *SEED_ACCOUNTS["alice"])
    cluster.kill("alpha")
    for _ in range(2):  # ten attempts in all, against limits of three
        down = cli_login(cluster, certs, tmp_path, "alice", SEED_PASSWORDS["alice"])
        assert down.returncode != 0, down.stdout
        assert "UNAVAILABLE" in down.stderr and "Traceback" not in down.stderr, down.stderr
    cluster.start_process("alpha")
    cluster.wait_ready("alpha")
    back = cli_login(cluster, certs, tmp_path, "alice", SEED_PASSWORDS["alice"])
    assert back.returncode == 0, back.stderr
    assert "logged in as alice" in back.stdout


FLOODERS = 40
# What a customer's login may take while forty certificates flood their bank, at the shipped
# bcrypt cost, on this machine's two cores (README, "Authentication and password checks").
LOGIN_DURING_FLOOD = 5.0


def test_a_flood_from_forty_certificates_does_not_starve_a_customer_s_login(
    tmp_path: Path,
) -> None:
    """The probe: forty certificates guessing at once made two of three logins fail. Here
    they all make alice's bank check passwords, two at a time each. Each of them climbs its
    count in the throttle with every guess, so alice's check, from a certificate that has not
    failed, goes ahead of theirs at the bank."""
    pki = tmp_path / "pki"
    flooders = [f"flood-{number}" for number in range(FLOODERS)]
    ensure_dev_pki(pki, clients=("client-1", *flooders))
    env = {
        **TEST_ENV,
        **server_env(bcrypt_rounds=12),
        **environment(GatewaySettings, login_client_max_failures=100_000),
    }
    with running_cluster(tmp_path / "cluster", pki, env) as cluster:
        Client(cluster, pki).register("alice", SEED_PASSWORDS["alice"], *SEED_ACCOUNTS["alice"])
        answered = [0]
        running: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = []

        async def flood() -> None:
            clients = [GatewayClient(client_config(cluster, pki, name)) for name in flooders]

            async def guess(client: GatewayClient, lane: str) -> None:
                for sent in itertools.count():
                    with suppress(ApiError):  # every guess a password check at alice's bank
                        await client.register(
                            f"nobody-{lane}-{sent}", "a-wrong-password", "alpha", "A-9999"
                        )
                    answered[0] += 1

            # Two checks in flight from every certificate: as many as one may have.
            lanes = asyncio.gather(
                *(guess(c, f"{n}-{lane}") for n, c in enumerate(clients) for lane in (1, 2))
            )
            running.append((asyncio.get_running_loop(), lanes))
            try:
                await lanes
            finally:
                for client in clients:
                    await client.close()

        def attack() -> None:
            with suppress(asyncio.CancelledError):
                asyncio.run(flood())

        attacker = threading.Thread(target=attack, daemon=True)
        attacker.start()
        took = []
        try:
            # Every certificate's first guess has the rank of the customer's own: once they
            # are answered, the flood's guesses all come after the customer's.
            wait_until(lambda: answered[0] >= FLOODERS + 8, 120, "the flood's first guesses")
            before = answered[0]
            for _ in range(3):
                started = time.monotonic()
                Client(cluster, pki, "client-1").login("alice", SEED_PASSWORDS["alice"])
                took.append(time.monotonic() - started)
            during = answered[0]
        finally:
            wait_until(lambda: bool(running), 30, "the flood to start")
            loop, lanes = running[0]
            loop.call_soon_threadsafe(lanes.cancel)
            attacker.join(60)
        assert max(took) < LOGIN_DURING_FLOOD, f"logins during the flood took {took}"
        assert during > before, "the flood had stopped"


# -- a disabled user --------------------------------------------------------------------------


@pytest.mark.in_process
def test_disabling_a_user_cuts_their_tokens_at_once(cluster: Cluster, certs: Path) -> None:
    dave = customer(cluster, certs, "dave")
    dave.balance()
    boss = admin(cluster, certs)
    boss.set_disabled("beta", "dave", True)
    for method in ("balance", "history"):
        error = dave.error(method)
        assert (error.code, error.reason) == (UNAUTHENTICATED, "ACCOUNT_DISABLED"), method
    boss.set_disabled("beta", "dave", False)
    # The old token stays cut; a new login works.
    assert dave.error("balance").code == UNAUTHENTICATED
    assert customer(cluster, certs, "dave", register=False).balance().account == "B-2002"


# -- a copied signing key ---------------------------------------------------------------------


@pytest.mark.in_process
def test_a_copied_signing_key_is_worth_nothing_after_rotate_key(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    """The probe: with a copy of the gateway's key, a forged ten-year admin token kept working
    after `rotate-key`, and after the key's row was deleted, until the gateway restarted."""
    cluster = make_cluster()
    pem = (cluster.data_dir / "gateway-token-key.pem").read_bytes()
    stolen = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(stolen, Ed25519PrivateKey)
    kid = key_id(stolen.public_key())
    mallory_cert = thumbprint_of_pem((certs / "client-2.pem").read_bytes())

    def forged(lifetime: int) -> str:
        issued = int(time.time())
        claims = {
            "sub": "mallory",
            "role": "admin",
            "bank": "",
            "account": "",
            "iat": issued,
            "exp": issued + lifetime,
            "jti": f"forged-{lifetime}",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "cnf": {"x5t#S256": mallory_cert},
        }
        return jwt.encode(claims, stolen, algorithm=ALGORITHM, headers={"kid": kid})

    ten_years = Client(cluster, certs, "client-2", token=forged(10 * 365 * 86400))
    assert ten_years.error("list_banks").code == UNAUTHENTICATED, "a token outliving the TTL"
    mallory = Client(cluster, certs, "client-2", token=forged(600))
    assert mallory.list_banks().banks  # a copied key works while it is in use
    alice = customer(cluster, certs, "alice")  # and so does a genuine session it signed

    rotated = subprocess.run(
        [sys.executable, "-m", "server.gateway", "rotate-key"],
        env=cluster.environment(GATEWAY),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rotated.returncode == 0, rotated.stderr
    started = time.monotonic()
    wait_until(lambda: _refused(mallory, "list_banks"), 10, "the copied key's token to end")
    assert time.monotonic() - started < 2.0, "not within the key reload interval"
    # Every token of the old key ends: its customers log in again, with the new key.
    assert alice.error("balance").code == UNAUTHENTICATED
    customer(cluster, certs, "alice", register=False).balance()
    # The retired key's row deleted: nothing it signed comes back, before or after.
    engine = create_engine(gateway_url(cluster))
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM token_keys WHERE kid = :kid"), {"kid": kid})
    engine.dispose()
    time.sleep(1)  # two reloads
    for token in (mallory.token, forged(600)):
        assert Client(cluster, certs, "client-2", token=token).error("list_banks").code == (
            UNAUTHENTICATED
        )


def _refused(client: Client, method: str) -> bool:
    try:
        getattr(client, method)()
    except ApiError as error:
        return bool(error.code == UNAUTHENTICATED)
    return False


# -- bounded input ----------------------------------------------------------------------------


def gateway_records(cluster: Cluster) -> list[dict[str, Any]]:
    found = []
    for line in cluster.log_file(GATEWAY).read_text().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def test_huge_and_malformed_input_is_refused_and_logged_bounded(
    cluster: Cluster, certs: Path
) -> None:
    client = Client(cluster, certs)
    assert client.error("login", "x" * 3_500_000, "password").code == THROTTLED
    assert client.error("login", "y" * 60_000, "password").code == grpc.StatusCode.INVALID_ARGUMENT
    # Bytes that are no LoginRequest at all.
    with channel(cluster, certs, GATEWAY, "client-1") as opened:
        raw = opened.unary_unary("/minipay.v1.Auth/Login")
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\xff\xff\xff\xff garbage", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    def logged() -> bool:
        return any(
            r.get("method") == "/minipay.v1.Auth/Login"
            and r.get("code") == "INVALID_ARGUMENT"
            and "not a valid message" in r.get("error", "")
            for r in gateway_records(cluster)
        )

    wait_until(logged, 10, "the malformed call's record")
    for record in gateway_records(cluster):
        assert len(json.dumps(record)) < 4000, "a log record carries an unbounded field"


def test_a_newline_in_a_username_forges_no_text_log_line(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = make_cluster(env=server_env(log_format="text"))
    client = Client(cluster, certs)
    forged = "mallory\n2026-01-01 00:00:00,000 INFO gateway call code=OK username=admin"
    assert client.error("login", forged, "password").code == grpc.StatusCode.INVALID_ARGUMENT
    log = cluster.log_file(GATEWAY)
    wait_until(lambda: "mallory" in log.read_text(), 10, "the refused login's record")
    lines = [line for line in log.read_text().splitlines() if "username=admin" in line]
    assert all("mallory" in line for line in lines), lines


# -- money at its edge ------------------------------------------------------------------------


@pytest.mark.in_process
def test_a_credit_that_would_overflow_the_payee_votes_no(cluster: Cluster, certs: Path) -> None:
    alice = customer(cluster, certs, "alice")
    engine = create_engine(bank_url(cluster, "beta"))
    with engine.begin() as connection:  # carol is (nearly) as rich as an account can be
        connection.execute(
            text("UPDATE accounts SET balance = :b WHERE number = 'B-2001'"),
            {"b": MAX_BALANCE - 10},
        )
    engine.dispose()
    answer = alice.pay("beta", "B-2001", 100)
    assert answer.status == ABORTED
    assert answer.reason_code == "BALANCE_LIMIT"
    wait_until(
        lambda: bank_state(cluster, "alpha")["accounts"]["A-1001"][1] == 0, 10, "alpha's release"
    )


# -- files ------------------------------------------------------------------------------------


def test_data_files_are_for_their_owner_only(cluster: Cluster, certs: Path) -> None:
    customer(cluster, certs, "alice").pay("beta", "B-2001", 100)
    mode = stat.S_IMODE(os.stat(cluster.data_dir / "logs").st_mode)
    assert mode & 0o077 == 0, oct(mode)
    made = [
        path
        for path in cluster.data_dir.rglob("*")
        if path.suffix in {".db", ".log", ".pem", ".lock"} or path.name.endswith(("-wal", "-shm"))
    ]
    assert any(path.name.endswith("-wal") for path in made)
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path}: {oct(path.stat().st_mode)}"


# -- names ------------------------------------------------------------------------------------


@pytest.mark.in_process
def test_usernames_are_unique_across_admins_and_customers(cluster: Cluster, certs: Path) -> None:
    customer(cluster, certs, "alice")
    boss = admin(cluster, certs)
    for name in ("alice", "ALICE"):
        error = boss.error(
            "create_user",
            username=name,
            name="Not Alice",
            password="a-password-1",
            bank="",
            account="",
            balance_minor_units=0,
            role="admin",
        )
        assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN"), (
            name
        )
    error = boss.error(
        "create_user",
        username=ADMIN[0],
        name="Not The Admin",
        password="a-password-1",
        bank="gamma",
        account="G-77",
        balance_minor_units=0,
    )
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN")
    # And alice is still alice.
    customer(cluster, certs, "alice", register=False).balance()


@pytest.mark.in_process
def test_a_username_is_one_identity_across_every_bank(cluster: Cluster, certs: Path) -> None:
    """The probe: an admin opened the same name at two banks, and took the name of a seed
    customer not yet registered, who then could never register."""
    boss = admin(cluster, certs)

    def create(username: str, bank: str = "", account: str = "", role: str = "customer") -> Any:
        return {
            "username": username,
            "name": "Someone",
            "password": "a-password-1",
            "bank": bank,
            "account": account,
            "balance_minor_units": 0,
            "role": role,
        }

    boss.create_user(**create("zed", "alpha", "A-77"))
    taken = [
        boss.error("create_user", **create("zed", "beta", "B-77")),
        boss.error("create_user", **create("ZED", "gamma", "G-77")),
        boss.error("create_user", **create("Zed", role="admin")),
        # frank is in the seed (at gamma) but has not registered: the name is his all the same.
        boss.error("create_user", **create("frank", "alpha", "A-78")),
        boss.error("create_user", **create("Frank", role="admin")),
    ]
    for error in taken:
        assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN")
    customer(cluster, certs, "frank").balance()
    # A name the bank refused to open (the account exists) is free again.
    error = boss.error("create_user", **create("yan", "beta", "B-2001"))
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "ACCOUNT_EXISTS")
    boss.create_user(**create("yan", "gamma", "G-78"))


@pytest.mark.in_process
def test_disabling_a_customer_at_one_bank_cuts_no_one_else(cluster: Cluster, certs: Path) -> None:
    """Two customers named sam, at alpha and at beta (beta's opened before names were unique,
    here straight at the bank): disabling beta's must not end the sessions of alpha's."""

    async def open_at_beta() -> None:
        async with aio_channel(cluster, certs, "beta", GATEWAY) as opened:
            await bank_pb2_grpc.AccountsStub(opened).CreateCustomer(
                bank_pb2.CreateCustomerRequest(
                    username="sam",
                    name="Sam at Beta",
                    password="sam-at-beta-pass",
                    role="customer",
                    account="B-88",
                    initial_balance=common_pb2.Money(minor_units=0, currency="USD"),
                ),
                timeout=10,
            )

    asyncio.run(open_at_beta())
    boss = admin(cluster, certs)
    boss.create_user(
        username="sam",
        name="Sam at Alpha",
        password="sam-at-alpha-pass",
        bank="alpha",
        account="A-88",
        balance_minor_units=0,
    )
    sam = Client(cluster, certs, "client-2")
    sam.register("sam", "sam-at-alpha-pass", "alpha", "A-88")
    sam.login("sam", "sam-at-alpha-pass")
    boss.set_disabled("beta", "sam", True)
    time.sleep(1)  # past a reload of the revocations
    assert sam.balance().account == "A-88", "alpha's sam was cut with beta's"
    Client(cluster, certs, "client-2").login("sam", "sam-at-alpha-pass")
    boss.set_disabled("alpha", "sam", True)  # the control: disabling the right one cuts
    error = sam.error("balance")
    assert (error.code, error.reason) == (UNAUTHENTICATED, "ACCOUNT_DISABLED")


@pytest.mark.in_process
def test_a_customer_cannot_register_another_customer_s_account_at_the_same_bank(
    cluster: Cluster, certs: Path
) -> None:
    """The probe: amir registered alice's account with his own password, and moved 700.00 from
    it to himself. Refused at the gateway, and by the bank's own check, asked as the gateway
    asks it."""
    error = Client(cluster, certs).error(
        "register", "amir", SEED_PASSWORDS["amir"], "alpha", SEED_ACCOUNTS["alice"][1]
    )
    assert (error.code, error.reason) == (UNAUTHENTICATED, "REGISTRATION_FAILED")

    async def verify(account: str) -> bank_pb2.VerifyCredentialsResponse:
        async with aio_channel(cluster, certs, "alpha", GATEWAY) as opened:
            answer: bank_pb2.VerifyCredentialsResponse = await bank_pb2_grpc.AccountsStub(
                opened
            ).VerifyCredentials(
                bank_pb2.VerifyCredentialsRequest(
                    username="amir", password=SEED_PASSWORDS["amir"], account=account
                ),
                timeout=10,
            )
            return answer

    assert not asyncio.run(verify(SEED_ACCOUNTS["alice"][1])).ok
    own = asyncio.run(verify(SEED_ACCOUNTS["amir"][1]))  # the control: his own account
    assert (own.ok, own.account) == (True, SEED_ACCOUNTS["amir"][1])
    # Both register their own accounts: nothing was taken.
    customer(cluster, certs, "alice").balance()
    customer(cluster, certs, "amir").balance()
