"""The checks every request passes before a servicer sees it (server/interceptors/fields.py),
the field named for bytes that do not parse, the currency table the servers accept, and the
BadRequest that every INVALID_ARGUMENT carries."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from minipay.money import EXPONENTS
from minipay.v1 import admin_pb2, bank_pb2, common_pb2, gateway_pb2
from server.common import validation
from server.common.errors import InvalidArgument, RequestTooLarge
from server.gateway.app import REQUEST_LIMITS
from server.interceptors.fields import (
    MAX_NANOS,
    MAX_SECONDS,
    MAX_TEXT_LENGTH,
    MIN_SECONDS,
    check_request,
    malformed_reader,
)
from server.interceptors.handlers import Oversized, wrap_unary
from server.interceptors.status import rich_status


def refused_field(request: object) -> str:
    with pytest.raises(InvalidArgument) as refused:
        check_request(request)  # type: ignore[arg-type]
    return refused.value.field


def test_a_nul_anywhere_is_refused_naming_the_field() -> None:
    pay = gateway_pb2.PayRequest(to=common_pb2.AccountRef(bank="beta", account="B-1\x00"))
    assert refused_field(pay) == "to.account"
    prepare = bank_pb2.PrepareRequest(
        legs=[bank_pb2.Leg(payment_id="p1"), bank_pb2.Leg(payment_id="p2\x00")]
    )
    assert refused_field(prepare) == "legs.payment_id"
    assert refused_field(bank_pb2.CommitRequest(payment_ids=["p1", "\x00"])) == "payment_ids"


def test_every_text_is_bounded() -> None:
    check_request(gateway_pb2.LoginRequest(username="a" * MAX_TEXT_LENGTH))
    too_long = gateway_pb2.LoginRequest(username="a" * (MAX_TEXT_LENGTH + 1))
    assert refused_field(too_long) == "username"


@pytest.mark.parametrize(
    ("seconds", "nanos", "valid"),
    [
        (MIN_SECONDS, 0, True),
        (MAX_SECONDS, MAX_NANOS, True),
        (MIN_SECONDS - 1, 0, False),
        (MAX_SECONDS + 1, 0, False),
        (-(2**63), 0, False),
        (0, -1, False),
        (0, MAX_NANOS + 1, False),
    ],
)
def test_times_are_real_times(seconds: int, nanos: int, valid: bool) -> None:
    request = gateway_pb2.ListHistoryRequest(
        created_before=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    )
    if valid:
        check_request(request)
    else:
        assert refused_field(request) == "created_before"


def test_an_enum_value_the_enum_does_not_define_is_refused() -> None:
    check_request(gateway_pb2.ListHistoryRequest(status=gateway_pb2.PAYMENT_STATUS_ABORTED))
    undefined: Any = 7
    assert refused_field(gateway_pb2.ListHistoryRequest(direction=undefined)) == "direction"
    assert (
        refused_field(bank_pb2.PrepareRequest(legs=[bank_pb2.Leg(side=undefined)])) == "legs.side"
    )


def test_maps_are_checked_too() -> None:
    nested = struct_pb2.Struct()
    nested.fields["inner"].struct_value.fields["text"].string_value = "x\x00"
    assert refused_field(nested) == "fields.struct_value.fields.string_value"
    assert refused_field(struct_pb2.Struct(fields={"\x00": struct_pb2.Value()})) == "fields"


def with_raw(request: bytes, marker: bytes, raw: bytes) -> bytes:
    assert request.count(marker) == 1
    return request.replace(marker, raw)


@pytest.mark.parametrize("raw", [b"\xed\xa0\x80", b"\xc0\xaf", b"\xff", b"\xe2\x82"])
def test_text_that_is_not_utf8_is_named(raw: bytes) -> None:
    """Bytes Python's protobuf refuses to parse: a lone surrogate, an overlong form, a byte
    UTF-8 never uses, a character cut short."""
    request = admin_pb2.CreateUserRequest(
        username="u", account=common_pb2.AccountRef(bank="alpha", account="~" * len(raw))
    ).SerializeToString()
    data = with_raw(request, b"~" * len(raw), raw)
    with pytest.raises(Exception):  # noqa: B017 - what a parser raises is its own business
        admin_pb2.CreateUserRequest.FromString(data)
    malformed = malformed_reader("/minipay.v1.Admin/CreateUser")(data)
    assert malformed.field == "account.account"
    assert "UTF-8" in malformed.problem


def test_bytes_cut_short_name_the_field_they_stop_in() -> None:
    whole = gateway_pb2.PayRequest(idempotency_key="key-1").SerializeToString()
    malformed = malformed_reader("/minipay.v1.Payments/Pay")(whole[:-2])
    assert (malformed.field, malformed.problem) == (
        "idempotency_key",
        "idempotency_key is cut short",
    )


def test_bytes_that_are_no_message_at_all_name_the_request() -> None:
    read = malformed_reader("/minipay.v1.Payments/Pay")
    assert read(b"\xff" * 12).field == ""
    assert read(b"\x07\x01").problem == "the request is not in the protobuf wire format"
    assert read(b"\x0f\x01").problem == "to is not in the protobuf wire format"  # field 1
    assert malformed_reader("/no.such.Service/Method")(b"\x00").field == ""


def test_every_invalid_argument_carries_a_bad_request() -> None:
    """Even when no single field is at fault (bytes that are no message at all): the
    BadRequest then names the request as a whole, with an empty path."""
    for error in (
        InvalidArgument("to.account must not contain a NUL character", field="to.account"),
        InvalidArgument("the request is not a valid message for this method"),
    ):
        status = rich_status(error)
        [(_, value)] = status.trailing_metadata
        details = status_pb2.Status.FromString(value).details
        bad_requests = [d for d in details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
        assert len(bad_requests) == 1, error.message
        bad_request = error_details_pb2.BadRequest()
        bad_requests[0].Unpack(bad_request)
        [violation] = bad_request.field_violations
        assert (violation.field, violation.description) == (error.field, error.message)


# -- currencies --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["XYZ", "XXX", "XAU", "ABC", "usd"])
def test_a_code_that_is_no_currency_is_refused(code: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validation.currency(code)
    assert refused.value.field == "amount.currency"


def test_every_currency_of_the_table_is_accepted() -> None:
    assert {"USD", "EUR", "JPY", "KWD", "CLF"} <= set(EXPONENTS)
    for code in EXPONENTS:
        assert validation.currency(code) == code


# -- payment ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "a" * 65, "pay_\x00", "pay x", "pay_\u00e9"])
def test_a_payment_id_is_printable_ascii(value: str) -> None:
    with pytest.raises(InvalidArgument):
        validation.payment_id(value)
    assert validation.payment_id("pay_" + "0" * 32) == "pay_" + "0" * 32


# -- request sizes -------------------------------------------------------------------------------


def test_bytes_over_a_method_s_limit_are_never_parsed() -> None:
    parsed: list[bytes] = []

    def parse(data: bytes) -> bytes:
        parsed.append(data)
        return data

    async def behavior(request: Any, context: Any) -> Any:
        return request

    async def wrapper(inner: Any, request: Any, context: Any) -> Any:
        return await inner(request, context)

    handler = grpc.unary_unary_rpc_method_handler(behavior, request_deserializer=parse)
    bounded = wrap_unary(handler, wrapper, limit=10).request_deserializer
    assert bounded(b"x" * 10) == b"x" * 10
    assert bounded(b"x" * 11) == Oversized(11, 10)
    assert parsed == [b"x" * 10], "the bytes over the limit were not read"


def worst_case_batch(items: int) -> gateway_pb2.PayBatchRequest:
    """ITEMS valid items, each as long as every field's own rule lets it be."""
    item = gateway_pb2.PayBatchItem(
        to=common_pb2.AccountRef(bank="b" * 63, account="A" * 34),
        amount=common_pb2.Money(minor_units=10**15, currency="USD"),
        idempotency_key="k" * validation.MAX_IDEMPOTENCY_KEY_LENGTH,
    )
    return gateway_pb2.PayBatchRequest(items=[item] * items)


def test_the_batch_method_alone_takes_a_thousand_of_the_largest_items() -> None:
    limits = REQUEST_LIMITS
    batch = "/minipay.v1.Payments/PayBatch"
    assert worst_case_batch(1000).ByteSize() <= limits.of(batch)
    assert limits.of("/minipay.v1.Payments/Pay") == 64 * 1024
    assert limits.of("/minipay.v1.Auth/Login") == 64 * 1024
    assert limits.largest == limits.of(batch), "the server as a whole lets the batch in"


def test_a_request_too_large_says_the_limit_and_no_retry_helps() -> None:
    error = RequestTooLarge("too large", metadata={"limit_bytes": "65536", "method": "/m"})
    status = status_pb2.Status.FromString(
        dict(rich_status(error).trailing_metadata)["grpc-status-details-bin"]
    )
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    kinds = [detail.type_url.rsplit(".", 1)[-1] for detail in status.details]
    assert kinds == ["ErrorInfo"], "no RetryInfo: the same request is refused again"
