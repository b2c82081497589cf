"""Checks on request fields shared by the gateway and the banks, made before anything is
stored, counted or logged; each raises InvalidArgument with a sentence that names the field."""

from __future__ import annotations

import re
import unicodedata

from minipay.money import MAX_MINOR_UNITS, is_currency
from server.common.errors import InvalidArgument

# The most an account may hold: its balance column is a signed 64-bit integer.
MAX_BALANCE = 2**63 - 1
MAX_NAME_LENGTH = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_PAYMENT_ID_LENGTH = 64
_CURRENCY = re.compile(r"[A-Z]{3}")
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,33}")
_BANK = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}")  # printable ASCII
_PAYMENT_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_PAYMENT_ID_LENGTH}}}")
_ROLES = {"customer", "admin"}


def username(value: str) -> str:
    # fullmatch, not match with "$": "$" would also accept a trailing newline.
    if not _USERNAME.fullmatch(value):
        raise InvalidArgument(
            "username must be 1-64 letters, digits or . _ @ - and start with a letter or digit",
            field="username",
        )
    return value


def normalized_username(value: str) -> str:
    """The form a username is compared and counted in: case does not make a new name."""
    return username(value).lower()


def account_number(value: str, field: str = "account") -> str:
    if not _ACCOUNT.fullmatch(value):
        raise InvalidArgument(f"{field} must be 1-34 letters, digits or '-'", field=field)
    return value


def bank_name(value: str, field: str = "bank") -> str:
    # A bank's name is part of the DNS name its certificate proves: a lower-case DNS label.
    if not _BANK.fullmatch(value):
        raise InvalidArgument(
            f"{field} must be a bank's name: 1-63 lower-case letters, digits or '-', "
            "not starting or ending with '-'",
            field=field,
        )
    return value


def display_name(value: str, field: str = "name") -> str:
    value = value.strip()
    if not value or len(value) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"{field} must be 1 to {MAX_NAME_LENGTH} characters", field=field)
    if any(unicodedata.category(char).startswith("C") for char in value):
        raise InvalidArgument(f"{field} must not contain control characters", field=field)
    return value


def currency(value: str, field: str = "amount.currency") -> str:
    if not _CURRENCY.fullmatch(value):
        shown = value if len(value) <= 8 else value[:8] + "..."
        raise InvalidArgument(
            f"currency must be a three-letter ISO 4217 code like USD, not {shown!r}", field=field
        )
    if not is_currency(value):
        raise InvalidArgument(f"{value} is not an ISO 4217 currency code", field=field)
    return value


def positive_amount(minor_units: int, field: str = "amount.minor_units") -> int:
    if minor_units <= 0:
        raise InvalidArgument(f"{field} must be greater than zero", field=field)
    if minor_units > MAX_MINOR_UNITS:
        raise InvalidArgument(f"{field} is larger than the largest accepted amount", field=field)
    return minor_units


def non_negative_amount(minor_units: int, field: str = "amount.minor_units") -> int:
    if minor_units < 0:
        raise InvalidArgument(f"{field} must not be negative", field=field)
    if minor_units > MAX_MINOR_UNITS:
        raise InvalidArgument(f"{field} is larger than the largest accepted amount", field=field)
    return minor_units


def password(value: str) -> str:
    if not 8 <= len(value.encode()) <= 72:
        raise InvalidArgument("password must be 8 to 72 bytes long", field="password")
    return value


def role(value: str) -> str:
    if value not in _ROLES:
        raise InvalidArgument(f"role must be one of {', '.join(sorted(_ROLES))}", field="role")
    return value


def idempotency_key(value: str) -> str:
    if not _KEY.fullmatch(value):
        raise InvalidArgument(
            f"idempotency_key is required: 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII "
            "characters without spaces",
            field="idempotency_key",
        )
    return value


def payment_id(value: str, field: str = "payment_id") -> str:
    # The gateway makes "pay_" and 32 hex digits; any id a request carries keeps to this.
    if not _PAYMENT_ID.fullmatch(value):
        raise InvalidArgument(
            f"{field} must be 1-{MAX_PAYMENT_ID_LENGTH} printable ASCII characters without spaces",
            field=field,
        )
    return value
