"""Checks on request fields shared by the gateway and the banks; each raises InvalidArgument
with a sentence that names the field."""

from __future__ import annotations

import re

from server.common.errors import InvalidArgument

INT64_MAX = 2**63 - 1
# Largest single amount we accept: keeps sums of many amounts far from int64 overflow.
MAX_AMOUNT = 10**15
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,33}$")
_ROLES = {"customer", "admin"}


def username(value: str) -> str:
    if not _NAME.match(value):
        raise InvalidArgument(
            "username must be 1-64 letters, digits or . _ @ - and start with a letter or digit"
        )
    return value


def account_number(value: str, field: str = "account") -> str:
    if not _ACCOUNT.match(value):
        raise InvalidArgument(f"{field} must be 1-34 letters, digits or '-'")
    return value


def currency(value: str) -> str:
    if not _CURRENCY.match(value):
        raise InvalidArgument(
            f"currency must be a three-letter ISO 4217 code like USD, not {value!r}"
        )
    return value


def positive_amount(minor_units: int, field: str = "amount") -> int:
    if minor_units <= 0:
        raise InvalidArgument(f"{field} must be greater than zero")
    if minor_units > MAX_AMOUNT:
        raise InvalidArgument(f"{field} is larger than the largest accepted amount")
    return minor_units


def non_negative_amount(minor_units: int, field: str = "amount") -> int:
    if minor_units < 0:
        raise InvalidArgument(f"{field} must not be negative")
    if minor_units > MAX_AMOUNT:
        raise InvalidArgument(f"{field} is larger than the largest accepted amount")
    return minor_units


def password(value: str) -> str:
    if not 8 <= len(value.encode()) <= 72:
        raise InvalidArgument("password must be 8 to 72 bytes long")
    return value


def role(value: str) -> str:
    if value not in _ROLES:
        raise InvalidArgument(f"role must be one of {', '.join(sorted(_ROLES))}")
    return value


def idempotency_key(value: str) -> str:
    if not 1 <= len(value) <= 255:
        raise InvalidArgument("idempotency_key is required (1-255 characters)")
    return value
