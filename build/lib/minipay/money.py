"""Amounts as people write them ("12.34") and as the system keeps them (1234 minor units).

The one table of currency exponents: the client, the admin and the servers' seed loader all
convert between display amounts and minor units here, so that "100" JPY is 100 yen on every
side. Amounts are plain ASCII decimals: digits, optionally a point and more digits.
"""

from __future__ import annotations

import re
from decimal import Decimal

# ISO 4217 minor-unit exponents that are not 2; every other code has two decimals.
EXPONENTS = {
    "JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0,
    "BHD": 3, "KWD": 3, "JOD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip
# The largest single amount anything accepts: keeps sums of many amounts far from int64 overflow.
MAX_MINOR_UNITS = 10**15
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class AmountError(ValueError):
    pass


def exponent(currency: str) -> int:
    return EXPONENTS.get(currency.upper(), 2)


def to_minor_units(text: str, currency: str = "USD", *, allow_zero: bool = False) -> int:
    """Parses a decimal amount such as "12.34"; refuses more decimals than the currency has,
    anything but ASCII digits and one point, and amounts out of range."""
    text = text.strip()
    if not _DECIMAL.fullmatch(text):
        raise AmountError(
            f"amount {text!r} is not a plain decimal number like 12.34 (digits and one point)"
        )
    places = exponent(currency)
    minor = Decimal(text).scaleb(places)
    if minor != minor.to_integral_value():
        raise AmountError(f"amount {text!r} has more than {places} decimals for {currency}")
    if minor <= 0 and not allow_zero:
        raise AmountError("amount must be greater than zero")
    if minor > MAX_MINOR_UNITS:
        raise AmountError(f"amount {text!r} is too large")
    return int(minor)


def format_minor_units(minor_units: int, currency: str = "USD") -> str:
    places = exponent(currency)
    return f"{Decimal(minor_units).scaleb(-places):.{places}f}"
