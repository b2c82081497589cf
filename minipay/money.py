"""Amounts as people write them ("12.34") and as the system keeps them (1234 minor units).

The one table of currencies and their exponents: the client, the admin and the servers' seed
loader all convert between display amounts and minor units here, so that "100" JPY is 100 yen
on every side. Amounts are plain ASCII decimals: digits, optionally a point and more digits.
"""

from __future__ import annotations

import re
from decimal import Decimal

# ISO 4217 (list one, as published on 2026-01-01): every current currency that has a minor
# unit, by its exponent. Codes without one (precious metals, SDR, bond units, XTS, XXX) are
# not money here. tests/unit/test_currencies.py checks the table against the iso4217 package.
_CODES_BY_EXPONENT = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    2: """AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BMD BND BOB BOV BRL BSD BTN BWP BYN
          BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD
          FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW
          KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR
          MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG
          SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD
          USN UYU UZS VED VES WST XAD XCD XCG YER ZAR ZMW ZWG""",
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}
EXPONENTS: dict[str, int] = {
    code: places for places, codes in _CODES_BY_EXPONENT.items() for code in codes.split()
}
# The largest single amount anything accepts: keeps sums of many amounts far from int64 overflow.
MAX_MINOR_UNITS = 10**15
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class AmountError(ValueError):
    pass


def currency_code(text: str) -> str:
    """TEXT as an ISO 4217 code ("usd" -> "USD"), if the table has it; AmountError if not."""
    code = text.strip().upper()
    if code not in EXPONENTS:
        raise AmountError(f"{text!r} is not an ISO 4217 currency code like USD, EUR or JPY")
    return code


def exponent(currency: str) -> int:
    """How many decimals CURRENCY has; 2 for a code the table lacks, so that an amount in it
    can still be shown (``to_minor_units`` refuses such a code)."""
    return EXPONENTS.get(currency.upper(), 2)


def is_currency(code: str) -> bool:
    """Whether CODE is an ISO 4217 currency as written on the wire (capitals, e.g. "USD")."""
    return code in EXPONENTS


def to_minor_units(text: str, currency: str = "USD", *, allow_zero: bool = False) -> int:
    """Parses a decimal amount such as "12.34"; refuses more decimals than the currency has,
    anything but ASCII digits and one point, amounts out of range, and unknown currencies."""
    text = text.strip()
    if not _DECIMAL.fullmatch(text):
        raise AmountError(
            f"amount {text!r} is not a plain decimal number like 12.34 (digits and one point)"
        )
    places = EXPONENTS[currency_code(currency)]
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
