"""Identity end to end: every attack on a login token is UNAUTHENTICATED, registration and
login give one answer for every wrong credential, failed logins are throttled, a disabled user
cannot log in, no password or token is ever written in plain text, and the admin and client
command lines work as a user would run them (their main() in this process:
tests/command_lines.py; test_cli.py runs them as processes too).

One cluster serves the module (throttled after 3 failures in a window of 2 s, logging at DEBUG
so request and response bodies reach the log files, where they must be redacted). Token
attacks are forged with the gateway's own signing key, so each one differs from a valid token
in one way only; a re-signed copy of a genuine token is the control that proves the forging
itself is right.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools.cluster import GATEWAY, Cluster
from devtools.scratch import free_port
from minipay.client.api import ApiError
from minipay.v1 import gateway_pb2
from server.common.tls import thumbprint_of_pem
from server.gateway.tokens import ALGORITHM
from tests import command_lines
from tests.conftest import TEST_ENV
from tests.helpers import ADMIN, SEED_ACCOUNTS, SEED_PASSWORDS, Client, channel

MAX_FAILURES = 3
COOLDOWN = 2.0
CALL_TIMEOUT = 15.0
OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
ZED_PASSWORD = "zed-secret-pass-41"
CREATE_ZED = (
    "create-user",
    "--username",
    "zed",
    "--name",
    "Zed",
    "--bank",
    "gamma",
    "--account",
    "G-9",
)


@dataclass
class Secrets:
    """Every password and token this module used, none of which may be stored in clear."""

    passwords: set[str] = field(default_factory=set)
    tokens: set[str] = field(default_factory=set)


class Gateway:
    """The module's cluster, raw GetBalance calls with any authorization, and logins that
    remember the tokens they were given."""

    def __init__(self, cluster: Cluster, certs: Path) -> None:
        self.cluster = cluster
        self.certs = certs
        self.secrets = Secrets(
            passwords={*SEED_PASSWORDS.values(), ADMIN[1], ZED_PASSWORD},
        )
        self._channels: dict[str, grpc.Channel] = {}

    def client(self, cert: str = "client-1", token: str = "") -> Client:
        return Client(self.cluster, self.certs, cert, token=token)

    def login(self, username: str, password: str, cert: str = "client-1") -> Client:
        client = self.client(cert)
        client.login(username, password)
        self.secrets.tokens.add(client.token)
        return client

    def login_error(self, username: str, password: str, cert: str = "client-1") -> ApiError:
        self.secrets.passwords.add(password)
        return self.client(cert).error("login", username, password)

    def balance(
        self, authorization: str | None, cert: str = "client-1"
    ) -> tuple[grpc.StatusCode, str]:
        """GetBalance with exactly this authorization metadata (None: none at all)."""
        if cert not in self._channels:
            self._channels[cert] = channel(self.cluster, self.certs, GATEWAY, cert)
        metadata = [] if authorization is None else [("authorization", authorization)]
        if authorization and authorization.startswith("Bearer ") and len(authorization) > 30:
            self.secrets.tokens.add(authorization.removeprefix("Bearer "))
        call = self._channels[cert].unary_unary(
            "/minipay.v1.Payments/GetBalance",
            request_serializer=gateway_pb2.GetBalanceRequest.SerializeToString,
            response_deserializer=gateway_pb2.GetBalanceResponse.FromString,
        )
        try:
            call(gateway_pb2.GetBalanceRequest(), metadata=metadata, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
        return OK, ""

    def close(self) -> None:
        for opened in self._channels.values():
            opened.close()
        self._channels.clear()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[Gateway]:
    env = {
        **TEST_ENV,
        "MINIPAY_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
        # A window as short as the cool-down: the lock lasts until the window ends.
        "MINIPAY_LOGIN_WINDOW": str(COOLDOWN),
        "MINIPAY_LOGIN_COOLDOWN": str(COOLDOWN),
        "MINIPAY_LOG_LEVEL": "DEBUG",
    }
    cluster = Cluster(tmp_path_factory.mktemp("identity"), env=env, certs=certs)
    made = Gateway(cluster, certs)
    try:
        cluster.start()
        made.client().register("alice", SEED_PASSWORDS["alice"], *SEED_ACCOUNTS["alice"])
        yield made
    finally:
        made.close()
        cluster.stop()


@pytest.fixture(scope="module")
def alice(gateway: Gateway) -> Client:
    return gateway.login("alice", SEED_PASSWORDS["alice"])


# -- forging tokens -----------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64_json(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


@dataclass
class Forger:
    """Tokens like a genuine one, signed with the gateway's key unless told otherwise."""

    key: Ed25519PrivateKey
    genuine: str
    certs: Path

    def thumbprint(self, cert: str) -> str:
        return thumbprint_of_pem((self.certs / f"{cert}.pem").read_bytes())

    @property
    def claims(self) -> dict[str, Any]:
        return dict(jwt.decode(self.genuine, options={"verify_signature": False}))

    @property
    def kid(self) -> str:
        return str(jwt.get_unverified_header(self.genuine)["kid"])

    def sign(
        self, key: Any = None, algorithm: str = ALGORITHM, kid: str | None = "", **changes: Any
    ) -> str:
        claims = {**self.claims, **changes}
        claims = {name: value for name, value in claims.items() if value is not None}
        headers = {} if kid is None else {"kid": kid or self.kid}
        return jwt.encode(claims, key or self.key, algorithm=algorithm, headers=headers)


@pytest.fixture(scope="module")
def forger(gateway: Gateway, alice: Client) -> Forger:
    pem = (gateway.cluster.data_dir / "gateway-token-key.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return Forger(key, alice.token, gateway.certs)


def flip_payload_char(token: str) -> str:
    header, payload, signature = token.split(".")
    middle = len(payload) // 2
    swapped = "A" if payload[middle] != "A" else "B"
    return ".".join((header, payload[:middle] + swapped + payload[middle + 1 :], signature))


def flip_signature_chars(token: str) -> str:
    swapped = "AAAA" if token[-8:-4] != "AAAA" else "BBBB"
    return token[:-8] + swapped + token[-4:]


def other_claims_same_signature(forger: Forger) -> str:
    header, _, signature = forger.genuine.split(".")
    claims = {**forger.claims, "sub": "bob", "account": SEED_ACCOUNTS["bob"][1]}
    return ".".join((header, b64_json(claims), signature))


def alg_none(forger: Forger) -> str:
    return ".".join((b64_json({"alg": "none", "typ": "JWT"}), b64_json(forger.claims), ""))


def hs256_with_public_key(forger: Forger) -> str:
    """The algorithm-confusion attack: HMAC keyed with the (public) verification key."""
    public = forger.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64_json({'alg': 'HS256', 'typ': 'JWT'})}.{b64_json(forger.claims)}"
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def past(seconds: int) -> int:
    return int(time.time()) - seconds


TokenMaker = Callable[[Forger], str]
FORGED: dict[str, TokenMaker] = {
    "expired": lambda f: f.sign(iat=past(1000), exp=past(100)),
    "not-yet-valid": lambda f: f.sign(nbf=int(time.time()) + 3600),
    "tampered-payload": lambda f: flip_payload_char(f.genuine),
    "tampered-signature": lambda f: flip_signature_chars(f.genuine),
    "other-claims-same-signature": other_claims_same_signature,
    "alg-none": alg_none,
    "alg-none-keeps-signature": lambda f: alg_none(f) + f.genuine.rsplit(".", 1)[1],
    "hs256-with-public-key": hs256_with_public_key,
    "wrong-audience": lambda f: f.sign(aud="someone-else"),
    "wrong-issuer": lambda f: f.sign(iss="evil-gateway"),
    "other-ed25519-key": lambda f: f.sign(key=Ed25519PrivateKey.generate()),
    "other-key-admin-role": lambda f: f.sign(key=Ed25519PrivateKey.generate(), role="admin"),
    "no-exp": lambda f: f.sign(exp=None),
    "no-jti": lambda f: f.sign(jti=None),
    "no-cnf": lambda f: f.sign(cnf=None),
    "cnf-of-client-2": lambda f: f.sign(cnf={"x5t#S256": f.thumbprint("client-2")}),
    "cnf-of-nothing": lambda f: f.sign(cnf={"x5t#S256": b64(hashlib.sha256(b"").digest())}),
    "no-kid": lambda f: f.sign(kid=None),
    "kid-nobody-published": lambda f: f.sign(kid="0" * 32),
    "other-key-claiming-our-kid": lambda f: f.sign(key=Ed25519PrivateKey.generate()),
}


# -- token attacks ------------------------------------------------------------------------------


def test_genuine_and_resigned_tokens_work(gateway: Gateway, alice: Client, forger: Forger) -> None:
    """The control: without it, a forging mistake would pass every attack below."""
    assert gateway.balance(f"Bearer {alice.token}") == (OK, "")
    assert gateway.balance(f"Bearer {forger.sign()}") == (OK, "")
    assert gateway.balance(f"Bearer {forger.sign(iat=past(60), exp=past(-600))}") == (OK, "")
    assert forger.claims["cnf"] == {"x5t#S256": forger.thumbprint("client-1")}
    as_client_2 = forger.sign(cnf={"x5t#S256": forger.thumbprint("client-2")})
    assert gateway.balance(f"Bearer {as_client_2}", cert="client-2") == (OK, "")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer garbage",
        "Basic x",
        "Basic YWxpY2U6cGFzcw==",
        "Bearer a.b.c",
        "Token abc",
        "garbage",
    ],
    ids=repr,
)
def test_missing_or_malformed_token(gateway: Gateway, authorization: str | None) -> None:
    code, details = gateway.balance(authorization)
    assert code == UNAUTHENTICATED, details


@pytest.mark.parametrize("attack", sorted(FORGED))
def test_forged_token(gateway: Gateway, forger: Forger, attack: str) -> None:
    token = FORGED[attack](forger)
    assert token != forger.genuine
    code, details = gateway.balance(f"Bearer {token}")
    assert code == UNAUTHENTICATED, f"{attack}: {code.name} {details!r}"


def test_expired_token_says_so(gateway: Gateway, forger: Forger) -> None:
    code, details = gateway.balance(f"Bearer {forger.sign(iat=past(1000), exp=past(100))}")
    assert code == UNAUTHENTICATED
    assert "expired" in details


@pytest.mark.parametrize("cert", ["client-2", "admin", GATEWAY, "alpha"])
def test_token_bound_to_the_certificate_that_logged_in(
    gateway: Gateway, alice: Client, cert: str
) -> None:
    code, details = gateway.balance(f"Bearer {alice.token}", cert=cert)
    # Another client's certificate: the token is not bound to it. A service's certificate:
    # tokens are never honoured over one.
    refused = (
        UNAUTHENTICATED if cert in ("client-2", "admin") else grpc.StatusCode.PERMISSION_DENIED
    )
    assert code == refused, details
    assert gateway.balance(f"Bearer {alice.token}") == (OK, "")  # still fine at home


def test_admin_token_bound_to_the_admin_certificate(gateway: Gateway) -> None:
    token = gateway.login(*ADMIN, cert="admin").token
    assert gateway.client("admin", token).list_banks().banks
    error = gateway.client("client-1", token).error("list_banks")
    assert error.code == UNAUTHENTICATED


def test_revoked_token(gateway: Gateway, alice: Client) -> None:
    session = gateway.login("alice", SEED_PASSWORDS["alice"])
    assert gateway.balance(f"Bearer {session.token}") == (OK, "")
    session.logout()
    code, details = gateway.balance(f"Bearer {session.token}")
    assert code == UNAUTHENTICATED
    assert "revoked" in details
    assert session.error("logout").code == UNAUTHENTICATED  # cannot log out twice
    assert gateway.balance(f"Bearer {alice.token}") == (OK, "")  # other sessions live on


def test_revocation_survives_a_gateway_restart(gateway: Gateway) -> None:
    revoked = gateway.login("alice", SEED_PASSWORDS["alice"])
    revoked.logout()
    live = gateway.login("alice", SEED_PASSWORDS["alice"])
    gateway.close()  # channels reconnect lazily; drop them across the restart anyway
    gateway.cluster.restart(GATEWAY)
    assert gateway.balance(f"Bearer {revoked.token}")[0] == UNAUTHENTICATED
    assert gateway.balance(f"Bearer {live.token}") == (OK, "")  # same signing key after restart


# -- registration and login ---------------------------------------------------------------------


def test_register_twice_is_no_password_oracle(gateway: Gateway) -> None:
    client = gateway.client("client-2")
    answer = client.register("bob", SEED_PASSWORDS["bob"], *SEED_ACCOUNTS["bob"])
    assert (answer.bank, answer.account) == SEED_ACCOUNTS["bob"]
    # Once registered, the right password and a wrong one get the very same answer.
    right = client.error("register", "bob", SEED_PASSWORDS["bob"], *SEED_ACCOUNTS["bob"])
    wrong = client.error("register", "bob", "not-bobs-password", *SEED_ACCOUNTS["bob"])
    assert said(right) == said(wrong)
    assert (right.code, right.reason) == (UNAUTHENTICATED, "REGISTRATION_FAILED")


def test_register_gives_one_answer_for_every_wrong_credential(gateway: Gateway) -> None:
    client = gateway.client()
    attempts = {
        "wrong password": ("amir", "not-amirs-password-1", "alpha", "A-1003"),
        "unknown user": ("nobody", "nobodys-password-1", "alpha", "A-1003"),
        "someone else's account": ("bea", SEED_PASSWORDS["bea"], "alpha", "A-1001"),
        "account at another bank": ("bea", SEED_PASSWORDS["bea"], "alpha", "B-2003"),
    }
    answers = {}
    for what, attempt in attempts.items():
        gateway.secrets.passwords.add(attempt[1])
        error = client.error("register", *attempt)
        answers[what] = said(error)
    assert set(answers.values()) == {answers["wrong password"]}, answers
    assert answers["wrong password"][:2] == (UNAUTHENTICATED, "REGISTRATION_FAILED")
    # And nothing was registered by any of them: they can still register their own accounts.
    client.register("amir", SEED_PASSWORDS["amir"], "alpha", "A-1003")
    client.register("bea", SEED_PASSWORDS["bea"], "beta", "B-2003")


def test_login_gives_one_answer_for_every_wrong_credential(gateway: Gateway) -> None:
    gateway.client("client-3").register("gia", SEED_PASSWORDS["gia"], *SEED_ACCOUNTS["gia"])
    errors = {
        "wrong password": gateway.login_error("gia", "not-gias-password-1"),
        "unknown user": gateway.login_error("nobody-at-all", "whatever-password-1"),
        "seed customer never registered": gateway.login_error("frank", SEED_PASSWORDS["frank"]),
        "admin, wrong password": gateway.login_error("admin", "not-the-admin-pass", "admin"),
    }
    answers = {what: said(error) for what, error in errors.items()}
    assert len(set(answers.values())) == 1, answers
    assert answers["wrong password"][:2] == (UNAUTHENTICATED, "LOGIN_FAILED")
    gateway.login("gia", SEED_PASSWORDS["gia"], "client-3")  # the right password still works


def test_login_throttle(gateway: Gateway) -> None:
    gateway.client().register("erin", SEED_PASSWORDS["erin"], *SEED_ACCOUNTS["erin"])
    for attempt in range(MAX_FAILURES):
        error = gateway.login_error("erin", f"not-erins-password-{attempt}")
        assert error.code == UNAUTHENTICATED, error
    locked_at = time.monotonic()
    error = gateway.login_error("erin", SEED_PASSWORDS["erin"])  # even the right password
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_THROTTLED")
    assert error.retry_after is not None and 0 < error.retry_after <= COOLDOWN + 1, error
    gateway.login("alice", SEED_PASSWORDS["alice"])  # other usernames are not locked out
    time.sleep(max(0.0, COOLDOWN + 0.3 - (time.monotonic() - locked_at)))
    gateway.login("erin", SEED_PASSWORDS["erin"])


def test_disabled_user_cannot_log_in(gateway: Gateway) -> None:
    gateway.client().register("dave", SEED_PASSWORDS["dave"], *SEED_ACCOUNTS["dave"])
    gateway.login("dave", SEED_PASSWORDS["dave"])
    admin = gateway.login(*ADMIN, cert="admin")
    admin.set_disabled("beta", "dave", True)
    try:
        # The right password and a wrong one get the same answer: nothing tells them apart.
        right = gateway.login_error("dave", SEED_PASSWORDS["dave"])
        wrong = gateway.login_error("dave", "not-daves-password")
        assert said(right) == said(wrong)
        assert right.code == UNAUTHENTICATED
    finally:
        admin.set_disabled("beta", "dave", False)
    gateway.login("dave", SEED_PASSWORDS["dave"])


# -- the command lines, end to end ----------------------------------------------------------------


@dataclass
class Cli:
    """The admin's and the customer's command lines against the module's cluster."""

    gateway: Gateway
    home: Path
    extra: dict[str, str] = field(default_factory=dict)  # environment overrides

    def run(
        self, tool: str, cert: str, *args: str, password: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """TOOL's command line in this process (tests/command_lines.py) as certificate CERT,
        with a home of its own."""
        if password is not None:
            args = (*args, "--password-stdin")
        given = command_lines.variables(
            self.gateway.certs, self.gateway.cluster.gateway_address, self.home / cert, cert
        )
        given.update(self.extra)
        stdin = f"{password}\n" if password is not None else ""
        return command_lines.run_here(tool, args, given, stdin)

    def ok(self, tool: str, cert: str, *args: str, password: str | None = None) -> str:
        result = self.run(tool, cert, *args, password=password)
        assert result.returncode == 0, f"{tool} {args}: {result.stderr}"
        assert "Traceback" not in result.stderr
        return result.stdout

    def json(self, tool: str, cert: str, *args: str, password: str | None = None) -> Any:
        return json.loads(self.ok(tool, cert, *args, "--json", password=password))

    def fails(
        self, tool: str, cert: str, *args: str, password: str | None = None, code: str = ""
    ) -> subprocess.CompletedProcess[str]:
        result = self.run(tool, cert, *args, password=password)
        assert result.returncode != 0, f"{tool} {args} succeeded: {result.stdout}"
        output = result.stdout + result.stderr
        assert "Traceback" not in output, output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
        assert code in lines[0], lines[0]
        return result

    def session(self, cert: str, name: str) -> Path:
        return self.home / cert / name


def said(error: ApiError) -> tuple[grpc.StatusCode, str, str, tuple[tuple[str, str], ...]]:
    """Everything an error tells the caller but its request id: two answers that must not
    differ compare equal on this."""
    return error.code, error.reason, error.message, tuple(sorted(error.metadata.items()))


def assert_private(path: Path) -> None:
    assert path.exists(), path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)


def test_command_lines_end_to_end(gateway: Gateway, tmp_path: Path) -> None:
    cli = Cli(gateway, tmp_path / "homes")
    admin, zed = "admin", "client-3"

    # The admin logs in and creates a customer with an account and an opening balance.
    cli.fails("admin", admin, "list-users", code="not logged in")
    cli.fails(
        "admin",
        admin,
        "login",
        "--username",
        "admin",
        password="wrong-admin-pass",
        code="UNAUTHENTICATED",
    )
    gateway.secrets.passwords.add("wrong-admin-pass")
    login = cli.json("admin", admin, "login", "--username", "admin", password=ADMIN[1])
    assert login["role"] == "admin"
    admin_session = cli.session(admin, "admin-session.json")
    assert_private(admin_session)
    gateway.secrets.tokens.add(json.loads(admin_session.read_text())["token"])
    created = cli.json("admin", admin, *CREATE_ZED, "--balance", "100.00", password=ZED_PASSWORD)
    assert (created["username"], created["bank"], created["account"]) == ("zed", "gamma", "G-9")
    assert created["balance_minor_units"] == 10000
    cli.fails("admin", admin, *CREATE_ZED, password=ZED_PASSWORD, code="ALREADY_EXISTS")
    users = cli.json("admin", admin, "list-users")["users"]
    listed = {user["username"]: user for user in users}
    assert listed["zed"]["account"] == "G-9" and listed["zed"]["balance_minor_units"] == 10000
    assert {"alice", "carol", "erin"} <= set(listed)
    assert "zed" in cli.ok("admin", admin, "list-users", "--bank", "gamma")
    banks = cli.json("admin", admin, "list-banks")["banks"]
    assert {bank["name"]: bank["serving"] for bank in banks} == {
        "alpha": True,
        "beta": True,
        "gamma": True,
    }
    assert "serving" in cli.ok("admin", admin, "list-banks")

    # The new customer registers, logs in and sees their balance.
    cli.fails("client", zed, "balance", code="not logged in")
    registered = cli.json(
        "client",
        zed,
        "register",
        "--bank",
        "gamma",
        "--account",
        "G-9",
        "--username",
        "zed",
        password=ZED_PASSWORD,
    )
    assert registered.pop("request_id")
    assert registered == {"username": "zed", "bank": "gamma", "account": "G-9"}
    cli.fails(
        "client",
        zed,
        "register",
        "--bank",
        "gamma",
        "--account",
        "G-9",
        "--username",
        "zed",
        password=ZED_PASSWORD,
        code="UNAUTHENTICATED",
    )
    cli.fails(
        "client",
        zed,
        "login",
        "--username",
        "zed",
        password="not-zeds-password",
        code="UNAUTHENTICATED",
    )
    gateway.secrets.passwords.add("not-zeds-password")
    assert "logged in as zed" in cli.ok(
        "client", zed, "login", "--username", "zed", password=ZED_PASSWORD
    )
    session = cli.session(zed, "session.json")
    assert_private(session)
    gateway.secrets.tokens.add(json.loads(session.read_text())["token"])
    balance = cli.json("client", zed, "balance")
    assert (balance["bank"], balance["account"]) == ("gamma", "G-9")
    assert balance["balance_minor_units"] == 10000 and balance["available_minor_units"] == 10000
    assert cli.json("client", zed, "history")["payments"] == []
    cli.fails(
        "client", zed, "pay", "--to-bank", "alpha", "--to-account", "A-1001", "--amount", "lots"
    )
    # A payee that does not exist: the payment is recorded, aborted, and exits 1.
    pay_nobody = ("pay", "--to-bank", "alpha", "--to-account", "A-404", "--amount", "1.00")
    aborted = cli.run("client", zed, *pay_nobody, "--json")
    assert aborted.returncode == 1, aborted.stderr
    payment = json.loads(aborted.stdout)
    assert (payment["status"], payment["reason_code"]) == ("ABORTED", "ACCOUNT_NOT_FOUND")
    looked_up = cli.json("client", zed, "payment", payment["payment_id"])
    assert (looked_up["payment_id"], looked_up["status"]) == (payment["payment_id"], "ABORTED")
    assert looked_up["request_id"] and looked_up["request_id"] != payment["request_id"]
    pay_omega = ("pay", "--to-bank", "omega", "--to-account", "O-1", "--amount", "1.00")
    refused = cli.fails("client", zed, *pay_omega, "--json", code="NOT_FOUND (BANK_NOT_FOUND)")
    assert json.loads(refused.stdout)["error"]["reason"] == "BANK_NOT_FOUND"

    # The admin disables zed, who can no longer log in, then enables them again.
    cli.ok("admin", admin, "disable-user", "--bank", "gamma", "--username", "zed")
    cli.fails(
        "client", zed, "login", "--username", "zed", password=ZED_PASSWORD, code="UNAUTHENTICATED"
    )
    enabled = cli.json("admin", admin, "enable-user", "--bank", "gamma", "--username", "zed")
    assert enabled["disabled"] is False
    cli.ok("client", zed, "login", "--username", "zed", password=ZED_PASSWORD)
    gateway.secrets.tokens.add(json.loads(session.read_text())["token"])

    # A customer's session is no admin session, and logging out forgets the token.
    customer_token = json.loads(session.read_text())["token"]
    error = gateway.client(zed, customer_token).error("list_users")
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "METHOD_NOT_ALLOWED")
    logged_out = cli.json("client", zed, "logout")
    assert logged_out["logged_out"] is True and logged_out["request_id"]
    assert not session.exists()
    assert gateway.balance(f"Bearer {customer_token}", cert=zed)[0] == UNAUTHENTICATED
    failed = cli.fails("client", zed, "balance", "--json", code="not logged in")
    assert json.loads(failed.stdout)["error"]["code"] == "CLIENT_ERROR"
    cli.ok("admin", admin, "logout")
    assert not admin_session.exists()
    cli.fails("admin", admin, "list-banks", code="not logged in")

    # Trouble on this side or on the way is one line too, never a traceback.
    nowhere = Cli(gateway, cli.home, {"MINIPAY_CERT": str(tmp_path / "missing.pem")})
    nowhere.fails(
        "client",
        zed,
        "login",
        "--username",
        "zed",
        password=ZED_PASSWORD,
        code="cannot read certificate",
    )
    # (Two attempts: the default retries would wait ten seconds for the same line.)
    closed = Cli(
        gateway,
        cli.home,
        {"MINIPAY_GATEWAY": f"127.0.0.1:{free_port()}", "MINIPAY_ATTEMPTS": "2"},
    )
    closed.fails(
        "client", zed, "login", "--username", "zed", password=ZED_PASSWORD, code="UNAVAILABLE"
    )

    # The client's own log holds no secret either.
    for log_file in (tmp_path / "homes").rglob("*.log"):
        text = log_file.read_text()
        assert not [s for s in gateway.secrets.passwords | gateway.secrets.tokens if s in text]


# -- nothing secret on disk -----------------------------------------------------------------------


def test_no_password_or_token_in_any_file(gateway: Gateway) -> None:
    """Runs last: every file of the cluster (databases, logs, process output) as bytes."""
    # A few flows of its own, so this holds even when run alone.
    session = gateway.login("alice", SEED_PASSWORDS["alice"])
    session.balance()
    session.history()
    session.logout()
    gateway.login_error("alice", f"wrong-{uuid.uuid4().hex}")
    gateway.client().error("register", "bob", "not-bobs-password", *SEED_ACCOUNTS["bob"])
    gateway.secrets.passwords.add("not-bobs-password")
    gateway.login(*ADMIN, cert="admin").create_user(
        username="yara",
        name="Yara",
        password="yara-secret-pass",
        bank="beta",
        account="B-77",
        balance_minor_units=500,
    )
    gateway.secrets.passwords.add("yara-secret-pass")

    needles = {s.encode() for s in gateway.secrets.passwords | gateway.secrets.tokens if s}
    assert len(gateway.secrets.tokens) >= 2
    files = [path for path in gateway.cluster.data_dir.rglob("*") if path.is_file()]
    kinds = {path.suffix for path in files}
    assert {".db", ".log", ".out"} <= kinds, kinds
    found = [
        (path.name, needle.decode()[:24])
        for path in files
        for needle in needles
        if needle in path.read_bytes()
    ]
    assert not found, f"secrets stored in clear: {found}"
    # The controls: these are the real bytes (the new user is there), and the DEBUG bodies
    # that carried passwords and tokens did reach the logs, redacted.
    assert any(b"yara" in path.read_bytes() for path in files if ".db" in path.name)
    assert any(b'"password": "[redacted]"' in path.read_bytes() for path in files)
    assert any(b'"token": "[redacted]"' in path.read_bytes() for path in files)
