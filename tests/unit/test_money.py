"""Display amounts and minor units: plain ASCII decimals, each currency's own exponent."""

from __future__ import annotations

import pytest

from minipay.money import AmountError, format_minor_units, to_minor_units


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "1.234",
        "0",
        "-1",
        "1e30",
        "1e2",
        "1_000",
        "\uff11\uff10\uff10",
        "",
        "NaN",
        "Infinity",
        "+5",
    ],
)
def test_amount_parser_refuses(text: str) -> None:
    with pytest.raises(AmountError):
        to_minor_units(text)


def test_amount_parser_accepts() -> None:
    assert to_minor_units("12.34") == 1234
    assert to_minor_units(" 7 ") == 700
    assert to_minor_units("0.01") == 1
    assert to_minor_units("1200", "JPY") == 1200
    assert to_minor_units("10000000000000.00") == 10**15


def test_formatting_uses_the_currency_s_exponent() -> None:
    assert format_minor_units(1234) == "12.34"
    assert format_minor_units(1234, "JPY") == "1234"
    assert format_minor_units(1234, "KWD") == "1.234"
    assert format_minor_units(0) == "0.00"
