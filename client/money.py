"""Amounts as people write them ("12.34") and as the system keeps them (1234 minor units)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# Minor-unit exponent per currency; ISO 4217 says two for almost all.
EXPONENTS = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3}
MAX_MINOR_UNITS = 10**15


class AmountError(ValueError):
    pass


def exponent(currency: str) -> int:
    return EXPONENTS.get(currency.upper(), 2)


def to_minor_units(text: str, currency: str = "USD") -> int:
    """Parses a positive decimal amount; refuses more decimals than the currency has."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise AmountError(f"amount {text!r} is not a number") from None
    if not value.is_finite():
        raise AmountError(f"amount {text!r} is not a number")
    places = exponent(currency)
    minor = value.scaleb(places)
    if minor != minor.to_integral_value():
        raise AmountError(f"amount {text!r} has more than {places} decimals for {currency}")
    if minor <= 0:
        raise AmountError("amount must be greater than zero")
    if minor > MAX_MINOR_UNITS:
        raise AmountError(f"amount {text!r} is too large")
    return int(minor)


def format_minor_units(minor_units: int, currency: str = "USD") -> str:
    places = exponent(currency)
    return f"{Decimal(minor_units).scaleb(-places):.{places}f}"
