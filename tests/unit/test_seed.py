"""Reading the seed file: amounts in each currency's own minor unit, bad rows refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from server.common import seed
from server.common.errors import ConfigError


def write(path: Path, *customers: dict[str, str]) -> Path:
    path.write_text(yaml.safe_dump({"customers": list(customers)}))
    return path


ROW = {
    "bank": "alpha",
    "username": "kenji",
    "name": "Kenji",
    "password": "kenji-dev-pass",
    "account": "A-7",
}


def test_balances_use_the_currency_s_minor_unit(tmp_path: Path) -> None:
    path = write(
        tmp_path / "seed.yaml",
        {**ROW, "balance": "100", "currency": "JPY"},
        {**ROW, "username": "ann", "account": "A-8", "balance": "100.50"},
        {**ROW, "username": "bo", "account": "A-9", "balance": "1.250", "currency": "KWD"},
    )
    balances = {c.username: (c.balance, c.currency) for c in seed.customers(path, ["alpha"])}
    assert balances == {"kenji": (100, "JPY"), "ann": (10_050, "USD"), "bo": (1_250, "KWD")}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"balance": "1.5", "currency": "JPY"}, "decimals"),
        ({"balance": "1e3"}, "plain decimal"),
        ({"balance": "-1"}, "plain decimal"),
        ({"bank": "omega"}, "unknown bank"),
        ({"username": "bad name"}, "username"),
        ({"name": "x" * 101}, "name"),
    ],
)
def test_a_bad_row_stops_the_start(tmp_path: Path, change: dict[str, str], words: str) -> None:
    path = write(tmp_path / "seed.yaml", {**ROW, "balance": "1", **change})
    with pytest.raises(ConfigError, match=words):
        seed.customers(path, ["alpha"])
