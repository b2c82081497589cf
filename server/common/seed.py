"""The dev seed file (YAML): admins for the gateway, customers and accounts for the banks.
Reading and checking it lives here; each component loads its own rows idempotently."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from minipay.money import AmountError, to_minor_units
from server.common import validation
from server.common.errors import ConfigError, MinipayError


@dataclass(frozen=True)
class SeedAdmin:
    username: str
    password: str


@dataclass(frozen=True)
class SeedCustomer:
    bank: str
    username: str
    name: str
    password: str
    account: str
    balance: int  # minor units of ``currency``
    currency: str
    role: str


def read_seed(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read seed file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"seed file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"seed file {path}: expected a mapping at the top")
    return data


def admins(path: Path) -> list[SeedAdmin]:
    found = []
    for index, row in enumerate(read_seed(path).get("admins") or [], start=1):
        if not isinstance(row, dict) or not row.get("username") or not row.get("password"):
            raise ConfigError(f"seed file {path}, admin #{index}: needs username and password")
        found.append(SeedAdmin(str(row["username"]), str(row["password"])))
    return found


def customers(path: Path, known_banks: Collection[str]) -> list[SeedCustomer]:
    """Every customer row, each checked; any bad row stops the start."""
    found = []
    for index, row in enumerate(read_seed(path).get("customers") or [], start=1):
        where = f"seed file {path}, customer #{index}"
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: expected a mapping")
        try:
            currency = validation.currency(str(row.get("currency", "USD")))
            customer = SeedCustomer(
                bank=str(row["bank"]),
                username=validation.username(str(row["username"])),
                name=validation.display_name(str(row["name"])),
                password=validation.password(str(row["password"])),
                account=validation.account_number(str(row["account"])),
                balance=to_minor_units(str(row.get("balance", "0")), currency, allow_zero=True),
                currency=currency,
                role=validation.role(str(row.get("role", "customer"))),
            )
        except KeyError as missing:
            raise ConfigError(f"{where}: missing field {missing}") from None
        except MinipayError as error:
            raise ConfigError(f"{where}: {error.message}") from None
        except AmountError as error:
            raise ConfigError(f"{where}: balance: {error}") from None
        if customer.bank not in known_banks:
            raise ConfigError(f"{where}: unknown bank {customer.bank!r}")
        found.append(customer)
    return found
