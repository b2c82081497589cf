"""The permission matrix: every unary method, on the gateway and on a bank, is called with an
empty request as each kind of caller, and each gets what a hand-written list (``ALLOWED``, not
computed from the permission table) says; the refusals that must never be lost are listed one
by one (``MUST_DENY``).

A refusal is PERMISSION_DENIED or UNAUTHENTICATED (a token-needing method called without a
token is UNAUTHENTICATED; a caller whose kind the table does not allow is PERMISSION_DENIED).
An allowed call may well fail on the empty request (INVALID_ARGUMENT, NOT_FOUND...): any code
but those two proves that authorization let it through. Also: the table lists every method
the .proto files define (deny by default must never be the reason a method is closed), and a
customer's token only ever reaches their own account.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2

from devtools.cluster import GATEWAY, Cluster
from minipay.v1 import admin_pb2, bank_pb2, common_pb2, events_pb2, gateway_pb2
from server.interceptors.authorization import PERMISSIONS
from tests.conftest import TEST_ENV
from tests.helpers import (
    ADMIN,
    SEED_ACCOUNTS,
    SEED_BALANCES,
    SEED_PASSWORDS,
    Client,
    channel,
    running_cluster,
)

BANK = "alpha"
REFUSALS = frozenset({grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED})
SERVICE_CERTIFICATES = frozenset({GATEWAY, BANK})


def refusals(server: str, who: Who) -> frozenset[grpc.StatusCode]:
    """How a refusal looks: a bank trusts only service certificates, so it refuses anyone
    else at the TLS handshake (UNAVAILABLE), before any method is even named."""
    if server != GATEWAY and who.cert not in SERVICE_CERTIFICATES:
        return REFUSALS | {grpc.StatusCode.UNAVAILABLE}
    return REFUSALS


LOGOUT = "/minipay.v1.Auth/Logout"
CALL_TIMEOUT = 15.0


def method_name(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def proto_methods(*modules: Any) -> dict[str, MethodDescriptor]:
    return {
        method_name(method): method
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


GATEWAY_METHODS = proto_methods(gateway_pb2, admin_pb2, events_pb2)
BANK_METHODS = proto_methods(bank_pb2)
HEALTH_METHODS = proto_methods(health_pb2)
ALL_PROTO_METHODS = {**proto_methods(common_pb2), **GATEWAY_METHODS, **BANK_METHODS}


def targets(method: str) -> list[tuple[str, MethodDescriptor]]:
    """The servers that serve a method, and its descriptor."""
    if method in GATEWAY_METHODS and not GATEWAY_METHODS[method].server_streaming:
        return [(GATEWAY, GATEWAY_METHODS[method])]
    if method in BANK_METHODS:
        return [(BANK, BANK_METHODS[method])]
    if method in HEALTH_METHODS and not HEALTH_METHODS[method].server_streaming:
        return [(GATEWAY, HEALTH_METHODS[method]), (BANK, HEALTH_METHODS[method])]
    return []  # streaming (health Watch, reflection): covered by test_foundation


@dataclass(frozen=True)
class Who:
    """A kind of caller: the certificate it presents, and whose login token (if any)."""

    name: str
    cert: str
    login: tuple[str, str] | None = None
    role: str = ""  # the role in the token


CALLERS = (
    Who("anonymous", "client-1"),
    Who("customer-a", "client-1", ("alice", SEED_PASSWORDS["alice"]), "customer"),
    Who("customer-b", "client-2", ("carol", SEED_PASSWORDS["carol"]), "customer"),
    Who("admin", "admin", ADMIN, "admin"),
    Who("gateway", "gateway"),
    Who("bank", BANK),
)


# Who may call what, written out by hand (not computed from PERMISSIONS): a change to the
# permission table that this list does not make too fails the matrix below.
CUSTOMERS = frozenset({"customer-a", "customer-b"})
EVERYONE = frozenset(who.name for who in CALLERS)
ALLOWED: dict[str, frozenset[str]] = {
    "/grpc.health.v1.Health/Check": EVERYONE,
    "/grpc.health.v1.Health/Watch": EVERYONE,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": EVERYONE,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": EVERYONE,
    "/minipay.v1.Auth/Register": EVERYONE,
    "/minipay.v1.Auth/Login": EVERYONE,
    "/minipay.v1.Auth/Logout": CUSTOMERS | {"admin"},
    "/minipay.v1.Payments/GetBalance": CUSTOMERS,
    "/minipay.v1.Payments/Pay": CUSTOMERS,
    "/minipay.v1.Payments/GetPayment": CUSTOMERS,
    "/minipay.v1.Payments/ListHistory": CUSTOMERS,
    "/minipay.v1.Payments/Refund": CUSTOMERS,
    "/minipay.v1.Payments/GetPaymentTrace": CUSTOMERS,
    "/minipay.v1.Payments/PayBatch": CUSTOMERS,
    "/minipay.v1.Events/List": CUSTOMERS | {"admin"},
    "/minipay.v1.Events/Watch": CUSTOMERS | {"admin"},
    "/minipay.v1.Admin/ListBanks": frozenset({"admin"}),
    "/minipay.v1.Admin/CreateUser": frozenset({"admin"}),
    "/minipay.v1.Admin/ListUsers": frozenset({"admin"}),
    "/minipay.v1.Admin/SetUserDisabled": frozenset({"admin"}),
    "/minipay.v1.Admin/Deposit": frozenset({"admin"}),
    "/minipay.v1.Admin/Refund": frozenset({"admin"}),
    "/minipay.v1.Admin/GetPayment": frozenset({"admin"}),
    "/minipay.v1.Admin/GetPaymentTrace": frozenset({"admin"}),
    "/minipay.v1.Admin/ListPayments": frozenset({"admin"}),
    "/minipay.v1.Admin/ListAudit": frozenset({"admin"}),
    "/minipay.v1.Admin/Reconcile": frozenset({"admin"}),
    "/minipay.v1.Admin/GetLastReconcile": frozenset({"admin"}),
    "/minipay.v1.Admin/GetOverview": frozenset({"admin"}),
    "/minipay.v1.Coordinator/GetDecision": frozenset({"bank"}),
    "/minipay.v1.Participant/Prepare": frozenset({"gateway"}),
    "/minipay.v1.Participant/Commit": frozenset({"gateway"}),
    "/minipay.v1.Participant/Abort": frozenset({"gateway"}),
    "/minipay.v1.Accounts/VerifyCredentials": frozenset({"gateway"}),
    "/minipay.v1.Accounts/GetAccount": frozenset({"gateway"}),
    "/minipay.v1.Accounts/CreateCustomer": frozenset({"gateway"}),
    "/minipay.v1.Accounts/ListCustomers": frozenset({"gateway"}),
    "/minipay.v1.Accounts/SetCustomerDisabled": frozenset({"gateway"}),
    "/minipay.v1.Accounts/ApplyDeposit": frozenset({"gateway"}),
    "/minipay.v1.Ledger/ListBankPayments": frozenset({"gateway"}),
    "/minipay.v1.Ledger/ListDeposits": frozenset({"gateway"}),
    "/minipay.v1.Ledger/GetBooks": frozenset({"gateway"}),
}
ADMIN_METHODS = [m for m in ALLOWED if m.startswith("/minipay.v1.Admin/")]
BANK_METHODS_BY_NAME = [
    m
    for m in ALLOWED
    if m.startswith(("/minipay.v1.Participant/", "/minipay.v1.Accounts/", "/minipay.v1.Ledger/"))
]
CUSTOMER_METHODS = [m for m in ALLOWED if m.startswith("/minipay.v1.Payments/")]
# Streaming methods (Events/Watch) are refused the same way, checked where they are served.
EVENT_METHODS = ["/minipay.v1.Events/List"]
# The refusals a payment system must never lose, named one by one.
MUST_DENY = [
    *((method, who) for method in ADMIN_METHODS for who in ("customer-a", "customer-b", "bank")),
    *(
        (method, who)
        for method in BANK_METHODS_BY_NAME
        for who in ("anonymous", "customer-a", "admin", "bank")
    ),
    *((method, who) for method in CUSTOMER_METHODS for who in ("admin", "gateway", "bank")),
    *((method, who) for method in EVENT_METHODS for who in ("anonymous", "gateway", "bank")),
    ("/minipay.v1.Coordinator/GetDecision", "customer-a"),
    ("/minipay.v1.Coordinator/GetDecision", "gateway"),
]


MATRIX = [
    pytest.param(method, server, descriptor, who, id=f"{server}{method}-{who.name}")
    for method in PERMISSIONS
    for server, descriptor in targets(method)
    for who in CALLERS
]


# -- one cluster for the module ---------------------------------------------------------------


class Callers:
    """Channels per (server, certificate) and login tokens per caller, made once."""

    def __init__(self, cluster: Cluster, certs: Path) -> None:
        self.cluster = cluster
        self.certs = certs
        self.channels: dict[tuple[str, str], grpc.Channel] = {}
        self.tokens: dict[str, str] = {}
        self.clients: dict[str, Client] = {}
        for who in CALLERS:
            if who.login is not None:
                self.clients[who.name] = self.log_in(who)
                self.tokens[who.name] = self.clients[who.name].token

    def log_in(self, who: Who) -> Client:
        assert who.login is not None
        client = Client(self.cluster, self.certs, who.cert)
        client.login(*who.login)
        return client

    def channel(self, server: str, cert: str) -> grpc.Channel:
        if (server, cert) not in self.channels:
            self.channels[server, cert] = channel(self.cluster, self.certs, server, cert)
        return self.channels[server, cert]

    def call(
        self, server: str, descriptor: MethodDescriptor, who: Who
    ) -> tuple[grpc.StatusCode, str]:
        """Calls the method with an empty request; the status code and details."""
        method = method_name(descriptor)
        request_class = GetMessageClass(descriptor.input_type)
        response_class = GetMessageClass(descriptor.output_type)
        stub = self.channel(server, who.cert).unary_unary(
            method,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        metadata = []
        if who.login is not None:
            # Logout revokes the token it carries: spend a fresh one, keep the shared one.
            token = self.log_in(who).token if method == LOGOUT else self.tokens[who.name]
            metadata.append(("authorization", f"Bearer {token}"))
        try:
            stub(request_class(), metadata=metadata, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
        return grpc.StatusCode.OK, ""

    def close(self) -> None:
        for opened in self.channels.values():
            opened.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("permissions"), certs, TEST_ENV) as cluster:
        for username, cert in (("alice", "client-1"), ("carol", "client-2")):
            Client(cluster, certs, cert).register(
                username, SEED_PASSWORDS[username], *SEED_ACCOUNTS[username]
            )
        yield cluster


@pytest.fixture(scope="module")
def callers(running: Cluster, certs: Path) -> Iterator[Callers]:
    made = Callers(running, certs)
    try:
        yield made
    finally:
        made.close()


# -- the table itself -------------------------------------------------------------------------


def test_the_hand_written_list_names_every_method_of_the_table() -> None:
    assert set(ALLOWED) == set(PERMISSIONS)


def test_every_proto_method_is_in_the_table() -> None:
    unlisted = sorted(set(ALL_PROTO_METHODS) - set(PERMISSIONS))
    assert not unlisted, f"methods missing from PERMISSIONS (refused by default): {unlisted}"


def test_every_minipay_entry_names_a_real_method() -> None:
    stale = sorted(
        method
        for method in PERMISSIONS
        if method.startswith("/minipay.") and method not in ALL_PROTO_METHODS
    )
    assert not stale, f"PERMISSIONS entries no .proto defines: {stale}"


def test_every_entry_allows_someone() -> None:
    assert all(PERMISSIONS.values()), "an empty entry is a method nobody may call"


def test_matrix_covers_every_service() -> None:
    services = {method.rsplit("/", 1)[0] for method in PERMISSIONS if targets(method)}
    assert {
        "/minipay.v1.Auth",
        "/minipay.v1.Payments",
        "/minipay.v1.Admin",
        "/minipay.v1.Coordinator",
        "/minipay.v1.Participant",
        "/minipay.v1.Accounts",
        "/minipay.v1.Ledger",
        "/grpc.health.v1.Health",
    } <= services


# -- the matrix -------------------------------------------------------------------------------


def refused(callers: Callers, method: str, who: Who) -> list[str]:
    """The servers on which the call was NOT refused (empty: refused everywhere)."""
    passed = []
    for server, descriptor in targets(method):
        code, details = callers.call(server, descriptor, who)
        if code not in refusals(server, who):
            passed.append(f"{server}: {code.name} {details!r}")
    return passed


@pytest.mark.parametrize(("method", "server", "descriptor", "who"), MATRIX)
def test_permission_matrix(
    callers: Callers, method: str, server: str, descriptor: MethodDescriptor, who: Who
) -> None:
    code, details = callers.call(server, descriptor, who)
    if who.name not in ALLOWED[method]:
        assert code in refusals(server, who), f"{who.name} on {server}{method}: {code.name}"
        return
    assert code not in REFUSALS, f"{who.name} refused on {server}{method}: {details!r}"
    assert code != grpc.StatusCode.UNIMPLEMENTED, f"{server} does not serve {method}"


@pytest.mark.parametrize(("method", "who"), MUST_DENY, ids=[f"{w}{m}" for m, w in MUST_DENY])
def test_must_deny(callers: Callers, method: str, who: str) -> None:
    caller = next(c for c in CALLERS if c.name == who)
    assert targets(method), method
    assert refused(callers, method, caller) == []


def test_unknown_method_is_unimplemented(callers: Callers) -> None:
    stub = callers.channel(GATEWAY, "client-1").unary_unary(
        "/minipay.v1.Payments/StealEverything",
        request_serializer=gateway_pb2.GetBalanceRequest.SerializeToString,
        response_deserializer=gateway_pb2.GetBalanceResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub(gateway_pb2.GetBalanceRequest(), timeout=CALL_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- a customer reaches only their own account ------------------------------------------------


def test_customer_b_cannot_read_customer_a(callers: Callers) -> None:
    alice = callers.clients["customer-a"]
    carol = callers.clients["customer-b"]
    paid = [alice.pay("alpha", "A-1002", 100 + n).payment_id for n in range(2)]
    first_page = alice.history(page_size=1)
    assert first_page.next_page_token, "alice has two payments: expected a second page"

    mine = alice.balance()
    assert (mine.bank, mine.account) == SEED_ACCOUNTS["alice"]

    balance = carol.balance()
    assert (balance.bank, balance.account) == SEED_ACCOUNTS["carol"]
    # carol's seed balance, not alice's
    assert balance.balance_minor_units == SEED_BALANCES[SEED_ACCOUNTS["carol"]]
    for page_token in ("", first_page.next_page_token):
        history = carol.history(page_size=50, page_token=page_token)
        assert not {entry.payment_id for entry in history.payments} & set(paid)
        alpha = [e for e in history.payments if e.counterparty.bank == "alpha"]
        assert not alpha, f"carol sees alpha payments she is not part of: {alpha}"
    # Nor can she look one up: answered exactly like a payment that does not exist.
    nobodys = "pay_" + "0" * 32
    answers = {pid: carol.error("payment", pid) for pid in (*paid, nobodys)}
    assert {(e.code, e.reason, e.message) for e in answers.values()} == {
        (grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND", answers[nobodys].message)
    }
    assert all(e.metadata == {"payment_id": pid} for pid, e in answers.items())

    # And alice still sees her own, both of them.
    assert set(paid) <= {entry.payment_id for entry in alice.history(page_size=50).payments}
    assert alice.payment(paid[0]).payment_id == paid[0]
