"""The API as a client in any language meets it, through plain gRPC stubs on the project's
protos (no client library): request ids on every answer, errors with machine-readable
details, one shape for a payment's outcome, payments looked up by id, history filters, and
the balance in full."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

from devtools.cluster import GATEWAY, Cluster
from minipay.errors import DOMAIN
from minipay.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.conftest import TEST_ENV
from tests.helpers import (
    SEED_ACCOUNTS,
    SEED_PASSWORDS,
    channel,
    gateway_payments,
    settle,
)
from tests.inprocess import in_process_cluster

COMMITTED = gateway_pb2.PAYMENT_STATUS_COMMITTED
ABORTED = gateway_pb2.PAYMENT_STATUS_ABORTED


class Caller:
    """One customer over raw stubs: every call returns (response, initial metadata)."""

    def __init__(self, cluster: Cluster, certs: Path, username: str, cert: str) -> None:
        self.channel = channel(cluster, certs, GATEWAY, cert)
        self.auth = gateway_pb2_grpc.AuthStub(self.channel)
        self.payments = gateway_pb2_grpc.PaymentsStub(self.channel)
        bank, account = SEED_ACCOUNTS[username]
        self.bank, self.account = bank, account
        password = SEED_PASSWORDS[username]
        self.auth.Register(
            gateway_pb2.RegisterRequest(
                username=username, password=password, bank=bank, account=account
            )
        )
        login = self.auth.Login(gateway_pb2.LoginRequest(username=username, password=password))
        self.metadata = (("authorization", f"Bearer {login.token}"),)

    def call(self, method: Any, request: Any, request_id: str = "") -> tuple[Any, dict[str, str]]:
        metadata = self.metadata + ((("x-request-id", request_id),) if request_id else ())
        response, call = method.with_call(request, metadata=metadata, timeout=20)
        return response, dict(call.initial_metadata())

    def pay(
        self, bank: str, account: str, amount: int, key: str = "", currency: str = "USD"
    ) -> gateway_pb2.PayResponse:
        request = gateway_pb2.PayRequest(
            to=common_pb2.AccountRef(bank=bank, account=account),
            amount=common_pb2.Money(minor_units=amount, currency=currency),
            idempotency_key=key or str(uuid.uuid4()),
        )
        response: gateway_pb2.PayResponse = self.call(self.payments.Pay, request)[0]
        return response


def refusal(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, list[Any]]:
    """The ErrorInfo of a refused call, and every other detail, unpacked."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "every error carries a google.rpc.Status"
    info, others = None, []
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if detail.Is(kind.DESCRIPTOR):
                item = kind()
                detail.Unpack(item)
                if isinstance(item, error_details_pb2.ErrorInfo):
                    info = item
                else:
                    others.append(item)
    assert info is not None and info.domain == DOMAIN
    return info, others


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[Cluster]:
    with in_process_cluster(tmp_path_factory.mktemp("api"), certs, TEST_ENV) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def alice(api: Cluster, certs: Path) -> Caller:
    return Caller(api, certs, "alice", "client-1")


@pytest.fixture(scope="module")
def carol(api: Cluster, certs: Path) -> Caller:
    return Caller(api, certs, "carol", "client-2")


# -- request ids ------------------------------------------------------------------------------


def test_every_answer_carries_the_request_id(alice: Caller) -> None:
    mine = "support-case-" + uuid.uuid4().hex[:8]
    _, headers = alice.call(alice.payments.GetBalance, gateway_pb2.GetBalanceRequest(), mine)
    assert headers["x-request-id"] == mine, "the caller's own id comes back"
    _, headers = alice.call(alice.payments.GetBalance, gateway_pb2.GetBalanceRequest())
    assert len(headers["x-request-id"]) == 32, "without one, the gateway makes one"
    with pytest.raises(grpc.RpcError) as refused:
        alice.call(alice.payments.GetPayment, gateway_pb2.GetPaymentRequest(), mine)
    assert dict(refused.value.initial_metadata())["x-request-id"] == mine, "errors too"  # type: ignore[attr-defined]


# -- errors -----------------------------------------------------------------------------------


def test_a_bad_field_names_the_field(alice: Caller) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        alice.pay("beta", "B-2001", 0)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    info, [bad_request] = refusal(refused.value)
    assert info.reason == "INVALID_FIELD"
    assert info.metadata["field"] == "amount.minor_units"
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert bad_request.field_violations[0].field == "amount.minor_units"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"\xff\xff\xff\xff garbage", ""),  # no message at all: the request as a whole
        (b"\x0a\x07pay_\xed\xa0\x80", "payment_id"),  # a lone surrogate, not UTF-8
    ],
)
def test_bytes_that_do_not_parse_are_a_bad_request_too(
    alice: Caller, data: bytes, field: str
) -> None:
    """The README's promise: every INVALID_ARGUMENT carries a BadRequest, malformed bytes too."""
    raw = alice.channel.unary_unary("/minipay.v1.Payments/GetPayment")
    with pytest.raises(grpc.RpcError) as refused:
        raw(data, metadata=alice.metadata, timeout=20)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    info, [bad_request] = refusal(refused.value)
    assert info.reason == "MALFORMED_REQUEST"
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    [violation] = bad_request.field_violations
    assert violation.field == field
    assert violation.description == refused.value.details()  # type: ignore[attr-defined]


def test_an_unknown_currency_is_refused_before_anything_is_recorded(
    api: Cluster, alice: Caller
) -> None:
    recorded = gateway_payments(api)
    with pytest.raises(grpc.RpcError) as refused:
        alice.pay("beta", "B-2001", 100, currency="XYZ")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    info, _ = refusal(refused.value)
    assert (info.reason, info.metadata["field"]) == ("INVALID_FIELD", "amount.currency")
    assert "ISO 4217" in refused.value.details()  # type: ignore[attr-defined]
    assert set(gateway_payments(api)) == set(recorded), "nothing recorded"


def test_an_unknown_bank_is_named(alice: Caller) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        alice.pay("nowhere", "X-1", 100)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    info, _ = refusal(refused.value)
    assert (info.reason, info.metadata["bank"]) == ("BANK_NOT_FOUND", "nowhere")


def test_a_reused_key_is_refused_with_its_reason(alice: Caller) -> None:
    key = str(uuid.uuid4())
    first = alice.pay("beta", "B-2001", 101, key)
    assert first.payment.status == COMMITTED
    with pytest.raises(grpc.RpcError) as refused:
        alice.pay("beta", "B-2001", 102, key)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    info, _ = refusal(refused.value)
    assert (info.reason, info.metadata["field"]) == ("IDEMPOTENCY_KEY_REUSED", "idempotency_key")


def test_a_call_without_a_token_says_log_in(api: Cluster, certs: Path) -> None:
    stub = gateway_pb2_grpc.PaymentsStub(channel(api, certs, GATEWAY, "client-1"))
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetBalance(gateway_pb2.GetBalanceRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert refusal(refused.value)[0].reason == "LOGIN_REQUIRED"


def test_throttled_logins_say_when_to_retry(api: Cluster, certs: Path) -> None:
    auth = gateway_pb2_grpc.AuthStub(channel(api, certs, GATEWAY, "client-3"))
    reasons = []
    for _ in range(12):
        try:
            auth.Login(gateway_pb2.LoginRequest(username="bob", password="wrong-pass"), timeout=20)
        except grpc.RpcError as error:
            info, others = refusal(error)
            reasons.append(info.reason)
            if info.reason == "LOGIN_THROTTLED":
                [retry] = [d for d in others if isinstance(d, error_details_pb2.RetryInfo)]
                assert retry.retry_delay.seconds >= 1
                break
    assert reasons[0] == "LOGIN_FAILED"
    assert reasons[-1] == "LOGIN_THROTTLED"


# -- one shape for an outcome; looking payments up ----------------------------------------------


def test_a_recorded_payment_is_always_an_answer_never_an_error(alice: Caller) -> None:
    answer = alice.pay("beta", "NO-SUCH-1", 100)
    assert answer.payment.status == ABORTED
    assert answer.payment.reason_code == "ACCOUNT_NOT_FOUND"
    assert answer.payment.payment_id.startswith("pay_")
    found, _ = alice.call(
        alice.payments.GetPayment,
        gateway_pb2.GetPaymentRequest(payment_id=answer.payment.payment_id),
    )
    assert found.payment.status == ABORTED and found.payment.reason_code == "ACCOUNT_NOT_FOUND"


def test_a_payment_looked_up_by_payer_payee_and_stranger(
    api: Cluster, alice: Caller, carol: Caller, certs: Path
) -> None:
    paid = alice.pay(carol.bank, carol.account, 250).payment
    assert paid.status == COMMITTED and paid.HasField("decided_at")
    request = gateway_pb2.GetPaymentRequest(payment_id=paid.payment_id)
    mine, _ = alice.call(alice.payments.GetPayment, request)
    theirs, _ = carol.call(carol.payments.GetPayment, request)
    assert mine.payment.direction == gateway_pb2.DIRECTION_OUTGOING
    assert theirs.payment.direction == gateway_pb2.DIRECTION_INCOMING
    assert theirs.payment.amount.minor_units == 250
    assert (theirs.payment.payer.bank, theirs.payment.payer.account) == (alice.bank, alice.account)
    stranger = Caller(api, certs, "erin", "client-2")
    with pytest.raises(grpc.RpcError) as refused:
        stranger.call(stranger.payments.GetPayment, request)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    info, _ = refusal(refused.value)
    assert (info.reason, info.metadata["payment_id"]) == ("PAYMENT_NOT_FOUND", paid.payment_id)


def test_the_payee_never_sees_a_failed_payment_or_its_reason(alice: Caller, carol: Caller) -> None:
    failed = alice.pay(carol.bank, carol.account, 10**14).payment  # more than alice has
    assert failed.reason_code == "INSUFFICIENT_FUNDS"
    with pytest.raises(grpc.RpcError) as refused:
        carol.call(
            carol.payments.GetPayment, gateway_pb2.GetPaymentRequest(payment_id=failed.payment_id)
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


# -- history and balance ----------------------------------------------------------------------


def test_history_filters_by_status_direction_and_time(alice: Caller, carol: Caller) -> None:
    start = timestamp_pb2.Timestamp()
    start.FromNanoseconds(time.time_ns())
    sent = alice.pay(carol.bank, carol.account, 123).payment
    failed = alice.pay(carol.bank, carol.account, 10**14).payment
    received = carol.pay(alice.bank, alice.account, 45).payment

    def ids(**filters: Any) -> set[str]:
        request = gateway_pb2.ListHistoryRequest(page_size=200, created_from=start, **filters)
        page, _ = alice.call(alice.payments.ListHistory, request)
        return {p.payment_id for p in page.payments}

    assert ids() == {sent.payment_id, failed.payment_id, received.payment_id}
    assert ids(status=ABORTED) == {failed.payment_id}
    assert ids(direction=gateway_pb2.DIRECTION_INCOMING) == {received.payment_id}
    assert ids(status=COMMITTED, direction=gateway_pb2.DIRECTION_OUTGOING) == {sent.payment_id}
    assert ids(created_before=start) == set()


def test_the_balance_in_full(api: Cluster, alice: Caller) -> None:
    settle(api)
    balance, _ = alice.call(alice.payments.GetBalance, gateway_pb2.GetBalanceRequest())
    assert balance.held.currency == balance.balance.currency == "USD"
    assert balance.held.minor_units == 0, "nothing in flight"
    assert balance.available.minor_units == balance.balance.minor_units - balance.held.minor_units


# -- a client that has only reflection, as grpcurl has ----------------------------------------


def test_reflection_alone_gives_the_request_id_and_readable_details(
    api: Cluster, certs: Path, alice: Caller
) -> None:
    """What `grpcurl -v` does: every type from the server's reflection, none of the project's
    generated modules; the refusal's details are decoded with the reflected types too."""
    reflected = descriptor_pool.DescriptorPool(
        ProtoReflectionDescriptorDatabase(channel(api, certs, GATEWAY, "client-1"))
    )
    pay = reflected.FindServiceByName("minipay.v1.Payments").methods_by_name["Pay"]
    request_type = message_factory.GetMessageClass(pay.input_type)
    response_type = message_factory.GetMessageClass(pay.output_type)
    request = json_format.ParseDict(
        {
            "to": {"bank": "nowhere", "account": "X-1"},
            "amount": {"minorUnits": "100", "currency": "USD"},
            "idempotencyKey": str(uuid.uuid4()),
        },
        request_type(),
    )
    call = alice.channel.unary_unary(
        "/minipay.v1.Payments/Pay",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    with pytest.raises(grpc.RpcError) as refused:
        call(request, metadata=alice.metadata, timeout=20)
    error: Any = refused.value
    assert len(dict(error.initial_metadata())["x-request-id"]) == 32
    status_type = message_factory.GetMessageClass(
        reflected.FindMessageTypeByName("google.rpc.Status")
    )
    details = dict(error.trailing_metadata())["grpc-status-details-bin"]
    shown = json_format.MessageToDict(status_type.FromString(details), descriptor_pool=reflected)
    assert shown["details"][0] == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "BANK_NOT_FOUND",
        "domain": DOMAIN,
        "metadata": {"bank": "nowhere"},
    }
