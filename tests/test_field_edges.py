"""Every field of every method at its edges, against a real cluster on SQLite and on
PostgreSQL: each string, Timestamp and enum field of each request type the .proto files define
(read from the descriptors, so a new method or field is covered with no change here) is sent
with edge values: a NUL, a lone surrogate (raw bytes ED A0 80, which Python cannot encode, sent
through a channel that passes bytes as they are), the documented maximum length and one more,
the length every field is bounded by and one more, times below year 1 and after 9999, nanos
out of range, an enum value the enum does not define.

Each call goes to the server that serves it, as the caller the permission table lets in (a
customer's or an admin's real token, the gateway's certificate at a bank, a bank's at the
gateway), over an otherwise valid request, so that the edge value is what the server meets.
Judged: no call ends INTERNAL (nor UNKNOWN), no log records one; every INVALID_ARGUMENT
carries a BadRequest; the values no field may hold are refused naming the field; and a refused
call changes nothing in any database.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import Connection, create_engine, text

from devtools.cluster import GATEWAY, Cluster
from minipay.v1 import admin_pb2, bank_pb2, common_pb2, gateway_pb2
from server.common.principal import Caller
from server.interceptors.authorization import allowed_callers
from tests.conftest import ClusterFactory
from tests.helpers import (
    SEED_PASSWORDS,
    admin,
    bank_url,
    channel,
    customer,
    gateway_url,
    wait_until,
)

BANK = "alpha"
# What every string is bounded by (the README's "What every field must be"), and what the
# .proto comments promise of some fields, by name.
EVERY_FIELD_MAX = 1024
DOCUMENTED_MAX = {
    "username": 64,
    "name": 100,
    "password": 72,
    "bank": 63,
    "account": 34,
    "idempotency_key": 255,
    "payment_id": 64,
    "deposit_id": 64,
    "currency": 3,
}
# 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z: the first and last valid times.
FIRST_SECOND, LAST_SECOND = -62_135_596_800, 253_402_300_799
MARKER = "\x7f\x7f\x7f"  # three bytes in the serialized request, swapped for a lone surrogate
LONE_SURROGATE = b"\xed\xa0\x80"
# Page tokens the server never gave out, well formed on the outside (its cursor is base64).
MADE_UP_PAGE_TOKENS = [
    base64.urlsafe_b64encode(inner).decode()
    for inner in (b"1.0|pay_\x00", b"nan|pay_x", b"1e999|pay_x", b"1.0|\xed\xa0\x80", b"1|" * 40)
]


def method_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


METHODS = [
    method
    for module in (gateway_pb2, admin_pb2, bank_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


def edge_fields(descriptor: Descriptor, prefix: str = "") -> list[tuple[str, FieldDescriptor]]:
    """Every string, Timestamp and enum field of a message type, nested ones by their path."""
    found = []
    for field in descriptor.fields:
        path = prefix + field.name
        if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_ENUM):
            found.append((path, field))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            assert field.message_type is not None
            if field.message_type.full_name == "google.protobuf.Timestamp":
                found.append((path, field))
            else:
                found += edge_fields(field.message_type, path + ".")
    return found


@dataclass(frozen=True)
class Edge:
    name: str
    value: Any  # a str, a Timestamp or an enum number
    must_refuse: bool  # INVALID_ARGUMENT naming the field, whatever else the request says


def edges(field_name: str, field: FieldDescriptor) -> list[Edge]:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return [Edge("undefined", 99, True)]
    if field.type == FieldDescriptor.TYPE_MESSAGE:  # a Timestamp

        def time(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
            return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)

        return [
            Edge("first", time(FIRST_SECOND), False),
            Edge("last", time(LAST_SECOND, 999_999_999), False),
            Edge("before-year-1", time(FIRST_SECOND - 1), True),
            Edge("after-9999", time(LAST_SECOND + 1), True),
            Edge("far-future", time(2**62), True),
            Edge("negative-nanos", time(0, -1), True),
            Edge("nanos-over", time(0, 1_000_000_000), True),
        ]
    found = [
        Edge("nul", "a\x00b", True),
        Edge("lone-surrogate", MARKER, True),
        Edge("every-field-max", "a" * EVERY_FIELD_MAX, False),
        Edge("every-field-max+1", "a" * (EVERY_FIELD_MAX + 1), True),
    ]
    if field_name in DOCUMENTED_MAX:
        longest = DOCUMENTED_MAX[field_name]
        found += [Edge("max", "a" * longest, False), Edge("max+1", "a" * (longest + 1), False)]
    if field_name == "page_token":
        found += [Edge(f"made-up-{i}", t, False) for i, t in enumerate(MADE_UP_PAGE_TOKENS)]
    return found


# -- valid requests for each method, new identifiers each time ---------------------------------


def usd(minor_units: int) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor_units, currency="USD")


def ref(bank: str, account: str) -> common_pb2.AccountRef:
    return common_pb2.AccountRef(bank=bank, account=account)


BASES: dict[str, Callable[[int], Message]] = {
    "/minipay.v1.Auth/Register": lambda n: gateway_pb2.RegisterRequest(
        username="dave", password=SEED_PASSWORDS["dave"], bank="beta", account="B-2002"
    ),
    "/minipay.v1.Auth/Login": lambda n: gateway_pb2.LoginRequest(
        username="erin", password=SEED_PASSWORDS["erin"]
    ),
    "/minipay.v1.Payments/Pay": lambda n: gateway_pb2.PayRequest(
        to=ref("beta", "B-2001"), amount=usd(1), idempotency_key=f"edge-{n}"
    ),
    "/minipay.v1.Payments/PayBatch": lambda n: gateway_pb2.PayBatchRequest(
        items=[
            gateway_pb2.PayBatchItem(
                to=ref("beta", "B-2001"), amount=usd(1), idempotency_key=f"edge-{n}"
            )
        ]
    ),
    "/minipay.v1.Payments/GetPayment": lambda n: gateway_pb2.GetPaymentRequest(
        payment_id="pay_" + "0" * 32
    ),
    "/minipay.v1.Payments/ListHistory": lambda n: gateway_pb2.ListHistoryRequest(page_size=5),
    "/minipay.v1.Payments/Refund": lambda n: gateway_pb2.RefundRequest(
        payment_id="pay_" + "0" * 32, amount=usd(1), idempotency_key=f"edge-{n}"
    ),
    "/minipay.v1.Admin/Refund": lambda n: admin_pb2.AdminRefundRequest(
        payment_id="pay_" + "0" * 32,
        payee=ref("beta", "B-2001"),
        amount=usd(1),
        idempotency_key=f"edge-{n}",
    ),
    "/minipay.v1.Admin/GetPayment": lambda n: admin_pb2.AdminGetPaymentRequest(
        payment_id="pay_" + "0" * 32
    ),
    "/minipay.v1.Admin/ListPayments": lambda n: admin_pb2.ListPaymentsRequest(
        page_size=5, bank="beta", account="B-2001"
    ),
    "/minipay.v1.Payments/GetPaymentTrace": lambda n: gateway_pb2.GetPaymentTraceRequest(
        payment_id="pay_" + "0" * 32
    ),
    "/minipay.v1.Admin/GetPaymentTrace": lambda n: admin_pb2.AdminGetPaymentTraceRequest(
        payment_id="pay_" + "0" * 32
    ),
    "/minipay.v1.Admin/CreateUser": lambda n: admin_pb2.CreateUserRequest(
        username=f"edge{n}",
        name="Edge Case",
        password="edge-password-1",
        account=ref(BANK, f"EDGE-{n}"),
        initial_balance=usd(0),
        role="customer",
    ),
    "/minipay.v1.Admin/ListUsers": lambda n: admin_pb2.ListUsersRequest(bank=BANK),
    "/minipay.v1.Admin/SetUserDisabled": lambda n: admin_pb2.SetUserDisabledRequest(
        bank="gamma", username="gia", disabled=False
    ),
    "/minipay.v1.Admin/Deposit": lambda n: admin_pb2.DepositRequest(
        account=ref("gamma", "G-3003"), amount=usd(1), idempotency_key=f"edge-{n}"
    ),
    "/minipay.v1.Coordinator/GetDecision": lambda n: gateway_pb2.GetDecisionRequest(
        payment_ids=["pay_" + "0" * 32]
    ),
    "/minipay.v1.Participant/Prepare": lambda n: bank_pb2.PrepareRequest(
        legs=[
            bank_pb2.Leg(
                payment_id=f"edge-{n}",
                side=bank_pb2.LEG_SIDE_DEBIT,
                account="A-1003",
                amount=usd(1),
            )
        ]
    ),
    "/minipay.v1.Participant/Commit": lambda n: bank_pb2.CommitRequest(payment_ids=[f"edge-{n}"]),
    "/minipay.v1.Participant/Abort": lambda n: bank_pb2.AbortRequest(payment_ids=[f"edge-{n}"]),
    "/minipay.v1.Accounts/VerifyCredentials": lambda n: bank_pb2.VerifyCredentialsRequest(
        username="amir", password=SEED_PASSWORDS["amir"], account="A-1003"
    ),
    "/minipay.v1.Accounts/GetAccount": lambda n: bank_pb2.GetAccountRequest(account="A-1003"),
    "/minipay.v1.Accounts/CreateCustomer": lambda n: bank_pb2.CreateCustomerRequest(
        username=f"edgeb{n}",
        name="Edge Case",
        password="edge-password-1",
        role="customer",
        account=f"EDGEB-{n}",
        initial_balance=usd(0),
    ),
    "/minipay.v1.Accounts/SetCustomerDisabled": lambda n: bank_pb2.SetCustomerDisabledRequest(
        username="bob", disabled=False
    ),
    "/minipay.v1.Accounts/ApplyDeposit": lambda n: bank_pb2.ApplyDepositRequest(
        account="A-1003", amount=usd(1), deposit_id=f"edge-{n}"
    ),
}


def base_request(method: MethodDescriptor, n: int) -> Message:
    """A valid request (an empty one for a method this file does not know yet)."""
    make = BASES.get(method_path(method))
    return make(n) if make else GetMessageClass(method.input_type)()


def with_edge(request: Message, path: str, value: Any) -> bytes:
    """REQUEST with the field at PATH set to VALUE (the first element of a repeated one),
    serialized; the marker becomes a lone surrogate in the bytes."""
    *parents, name = path.split(".")
    target = request
    for part in parents:
        if target.DESCRIPTOR.fields_by_name[part].is_repeated:
            items = getattr(target, part)
            target = items[0] if len(items) else items.add()
        else:
            target = getattr(target, part)
    field = target.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        items = getattr(target, name)
        if len(items):
            items[0] = value
        else:
            items.append(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(target, name).CopyFrom(value)
    else:
        setattr(target, name, value)
    data = request.SerializeToString()
    if value == MARKER:
        assert data.count(MARKER.encode()) == 1
        data = data.replace(MARKER.encode(), LONE_SURROGATE)
    return data


# -- who calls, and what the databases hold ----------------------------------------------------


class Callers:
    """Raw channels (bytes in, bytes out) per server and certificate, and the tokens."""

    def __init__(self, cluster: Cluster, certs: Path) -> None:
        self.cluster, self.certs = cluster, certs
        self.customer_token = customer(cluster, certs, "alice").token
        self.admin_token = admin(cluster, certs).token
        self.channels: dict[tuple[str, str], grpc.Channel] = {}

    def as_allowed(self, method: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The certificate and metadata of a caller the permission table lets in."""
        allowed = allowed_callers(method)
        if Caller.CUSTOMER in allowed:
            return "client-1", (("authorization", f"Bearer {self.customer_token}"),)
        if Caller.ADMIN in allowed:
            return "admin", (("authorization", f"Bearer {self.admin_token}"),)
        if Caller.GATEWAY in allowed:
            return GATEWAY, ()
        if Caller.BANK in allowed:
            return BANK, ()
        return "client-3", ()

    def call(self, method: MethodDescriptor, data: bytes) -> grpc.StatusCode | Any:
        """The status of the call (OK) or the error it raised."""
        path = method_path(method)
        server = BANK if method.containing_service.file.name.endswith("bank.proto") else GATEWAY
        cert, metadata = self.as_allowed(path)
        if (server, cert) not in self.channels:
            self.channels[server, cert] = channel(self.cluster, self.certs, server, cert)
        stub = self.channels[server, cert].unary_unary(path)
        try:
            stub(data, metadata=metadata, timeout=20)
        except grpc.RpcError as error:
            return error
        return grpc.StatusCode.OK

    def close(self) -> None:
        for opened in self.channels.values():
            opened.close()


# Whatever a call may change: money, payments and their 2PC records, users (not the throttle's
# counts, leases or signing keys, which a refused login or the clock may change).
GATEWAY_TABLES = ("admins", "registrations", "revoked_tokens", "payments")
BANK_TABLES = ("customers", "accounts", "ledger_entries", "bank_payments", "legs")


class Books:
    def __init__(self, cluster: Cluster) -> None:
        urls = {
            GATEWAY: gateway_url(cluster),
            **{b: bank_url(cluster, b) for b in cluster.bank_names},
        }
        self.engines = {
            name: create_engine(url, isolation_level="AUTOCOMMIT") for name, url in urls.items()
        }
        self.connections: dict[str, Connection] = {n: e.connect() for n, e in self.engines.items()}
        self.banks = list(cluster.bank_names)

    def snapshot(self) -> dict[str, list[str]]:
        found = {}
        for name, connection in self.connections.items():
            tables = GATEWAY_TABLES if name == GATEWAY else BANK_TABLES
            for table in tables:
                rows = connection.execute(text(f"SELECT * FROM {table}"))
                found[f"{name}.{table}"] = sorted(repr(tuple(row)) for row in rows)
        return found

    def settled(self) -> bool:
        """Nothing under way: every payment decided and acknowledged, no bank holding money
        or waiting for a decision."""
        queries = {
            GATEWAY: "SELECT count(*) FROM payments WHERE state IN "
            "('PREPARING', 'COMMITTING', 'ABORTING')",
            **dict.fromkeys(
                self.banks,
                "SELECT (SELECT count(*) FROM accounts WHERE held <> 0) + "
                "(SELECT count(*) FROM bank_payments WHERE state = 'PREPARED')",
            ),
        }
        return not any(self.connections[name].scalar(text(q)) for name, q in queries.items())

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
        for engine in self.engines.values():
            engine.dispose()


@pytest.fixture
def edge_cluster(
    make_cluster: ClusterFactory, backend: str, certs: Path
) -> Iterator[tuple[Cluster, Callers, Books]]:
    cluster = make_cluster(backend)
    callers, books = Callers(cluster, certs), Books(cluster)
    try:
        yield cluster, callers, books
    finally:
        callers.close()
        books.close()


def bad_request_field(error: Any) -> str:
    """The field an INVALID_ARGUMENT's BadRequest names (it must carry one)."""
    status = rpc_status.from_call(error)
    assert status is not None, "every error carries a google.rpc.Status"
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            return str(bad_request.field_violations[0].field)
    raise AssertionError(f"INVALID_ARGUMENT without a BadRequest: {error.details()}")


def test_every_field_of_every_method_at_its_edges(
    edge_cluster: tuple[Cluster, Callers, Books],
) -> None:
    cluster, callers, books = edge_cluster
    started = time.monotonic()
    calls, accepted, problems = 0, 0, []
    before = None  # the books as the last refused call left them
    for method in METHODS:
        for path, field in edge_fields(method.input_type):
            for edge in edges(field.name, field):
                calls += 1
                request = base_request(method, calls)
                what = f"{method_path(method)} {path}={edge.name}"
                before = before or books.snapshot()
                answer = callers.call(method, with_edge(request, path, edge.value))
                if answer == grpc.StatusCode.OK:
                    accepted += 1
                    if edge.must_refuse:
                        problems.append(f"{what}: accepted")
                    undo(callers, books, method, request)
                    before = None
                    continue
                code = answer.code()
                if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                    problems.append(f"{what}: {code.name} {answer.details()}")
                    continue
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    named = bad_request_field(answer)
                    if edge.must_refuse and named != path:
                        problems.append(f"{what}: the BadRequest names {named!r}")
                elif edge.must_refuse:
                    problems.append(f"{what}: {code.name}, not INVALID_ARGUMENT")
                after = books.snapshot()
                if after != before:
                    problems.append(f"{what}: refused ({code.name}) but changed the books")
                before = after
    assert not problems, "\n".join(problems)
    assert calls > 250, calls
    assert_no_internal_logged(cluster)
    print(f"{calls} calls ({accepted} accepted) in {time.monotonic() - started:.1f} s")


def undo(callers: Callers, books: Books, method: MethodDescriptor, request: Message) -> None:
    """Leaves nothing under way after an accepted call: a bank's yes vote is aborted at once
    (as a gateway would), and a payment's decision reaches both banks."""
    if method_path(method) == "/minipay.v1.Participant/Prepare":
        assert isinstance(request, bank_pb2.PrepareRequest)
        abort = bank_pb2.AbortRequest(payment_ids=[leg.payment_id for leg in request.legs])
        abort_method = bank_pb2.DESCRIPTOR.services_by_name["Participant"].methods_by_name["Abort"]
        assert callers.call(abort_method, abort.SerializeToString()) == grpc.StatusCode.OK
    wait_until(books.settled, 30, "every decision to be delivered")


def assert_no_internal_logged(cluster: Cluster) -> None:
    time.sleep(0.5)  # records are written by a thread of their own
    for name in cluster.names:
        for line in cluster.log_file(name).read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line being written
                continue
            assert record.get("code") != "INTERNAL" and "traceback" not in record, (name, line)
