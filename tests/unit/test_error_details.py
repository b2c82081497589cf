"""Errors as a program meets them: every domain error becomes a status with an ErrorInfo
(its reason, the minipay.v1 domain, metadata), a BadRequest naming the field when a field is
at fault, and a RetryInfo when retrying may help."""

from __future__ import annotations

from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2

from minipay.errors import DOMAIN, EXPLANATIONS, ErrorReason
from server.common import errors
from server.interceptors.status import STATUS_OF_ERROR, rich_status


def details(status: grpc.Status) -> list[object]:
    [(key, value)] = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    message = status_pb2.Status.FromString(value)
    assert message.code == status.code.value[0]
    unpacked: list[object] = []
    for detail in message.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if detail.Is(kind.DESCRIPTOR):
                item = kind()
                detail.Unpack(item)
                unpacked.append(item)
    return unpacked


def test_every_reason_is_explained_once() -> None:
    assert set(EXPLANATIONS) == set(ErrorReason)
    assert all(reason.value == reason.name for reason in ErrorReason), "upper-snake on the wire"


def test_an_invalid_field_names_the_field() -> None:
    status = rich_status(errors.InvalidArgument("amount must be positive", field="amount"))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    info, bad_request = details(status)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, info.metadata["field"]) == ("INVALID_FIELD", DOMAIN, "amount")
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    [violation] = bad_request.field_violations
    assert (violation.field, violation.description) == ("amount", "amount must be positive")


def test_throttling_says_when_to_retry() -> None:
    status = rich_status(errors.Throttled("too many failed attempts", retry_after=2.2))
    info, retry = details(status)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "LOGIN_THROTTLED"
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 3


def test_an_unavailable_bank_is_worth_retrying_and_named() -> None:
    error = errors.Unavailable("bank beta is not answering", metadata={"bank": "beta"})
    info, retry = details(rich_status(error))
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, dict(info.metadata)) == ("BANK_UNAVAILABLE", {"bank": "beta"})
    assert isinstance(retry, error_details_pb2.RetryInfo) and retry.retry_delay.seconds >= 1


def test_every_kind_of_error_has_a_status_and_a_reason() -> None:
    for kind in STATUS_OF_ERROR:
        status = rich_status(kind("something"))
        assert status.code == STATUS_OF_ERROR[kind]
        info = details(status)[0]
        assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason in set(ErrorReason)


def test_the_readme_lists_every_reason() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [reason.value for reason in ErrorReason if f"| `{reason.value}` |" not in readme]
    assert not missing, f"README's API section lacks {missing}"
