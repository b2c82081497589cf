"""The currency table in ``minipay/money.py`` is ISO 4217's: every current code with a minor
unit, with its exponent, checked against the ``iso4217`` package (the ISO list as data, a test
dependency only). A code that dropped out, or a wrong exponent, would make amounts 10x off."""

from __future__ import annotations

import pytest
from iso4217 import Currency

from minipay.money import EXPONENTS, AmountError, currency_code, format_minor_units, to_minor_units

ISO_4217 = {c.code: c.exponent for c in Currency if c.exponent is not None}


def test_the_table_is_iso_4217() -> None:
    assert len(ISO_4217) > 150  # the data is there at all
    missing = sorted(ISO_4217.keys() - EXPONENTS.keys())
    extra = sorted(EXPONENTS.keys() - ISO_4217.keys())
    wrong = sorted(c for c in ISO_4217.keys() & EXPONENTS.keys() if ISO_4217[c] != EXPONENTS[c])
    assert (missing, extra, wrong) == ([], [], [])


@pytest.mark.parametrize(
    ("currency", "text", "minor_units"),
    [("BHD", "1.234", 1234), ("JPY", "1234", 1234), ("CLF", "0.0001", 1), ("EUR", "12.34", 1234)],
)
def test_amounts_use_the_iso_exponent(currency: str, text: str, minor_units: int) -> None:
    assert to_minor_units(text, currency) == minor_units
    assert format_minor_units(minor_units, currency) == text


@pytest.mark.parametrize("code", ["XYZ", "XAU", "XXX", "US", "usdd", ""])
def test_codes_without_a_minor_unit_are_refused(code: str) -> None:
    with pytest.raises(AmountError, match="not an ISO 4217 currency code"):
        currency_code(code)
    with pytest.raises(AmountError, match="not an ISO 4217 currency code"):
        to_minor_units("1", code)


def test_codes_are_upper_cased() -> None:
    assert currency_code(" usd ") == "USD"
