"""Loading the seed file: this bank's customers and accounts, idempotently (a restart adds
what is missing and never touches an existing row or balance)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from server.bank import ledger
from server.bank.models import Account
from server.common import validation
from server.common.errors import ConfigError, MinipayError
from server.common.passwords import hash_password


@dataclass(frozen=True)
class SeedCustomer:
    bank: str
    username: str
    name: str
    password: str
    account: str
    balance: int
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


def to_minor_units(text: Any, where: str) -> int:
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise ConfigError(f"{where}: balance {text!r} is not a number") from None
    if value < 0 or value != value.quantize(Decimal("0.01")):
        raise ConfigError(f"{where}: balance {text!r} must be >= 0 with at most two decimals")
    return int(value * 100)


def customers_for(path: Path, bank: str, known_banks: Collection[str]) -> list[SeedCustomer]:
    """This bank's rows from the seed file, each checked; any bad row stops the start."""
    rows = read_seed(path).get("customers") or []
    found = []
    for index, row in enumerate(rows, start=1):
        where = f"seed file {path}, customer #{index}"
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: expected a mapping")
        try:
            customer = SeedCustomer(
                bank=str(row["bank"]),
                username=validation.username(str(row["username"])),
                name=str(row["name"]),
                password=validation.password(str(row["password"])),
                account=validation.account_number(str(row["account"])),
                balance=to_minor_units(row.get("balance", 0), where),
                currency=validation.currency(str(row.get("currency", "USD"))),
                role=validation.role(str(row.get("role", "customer"))),
            )
        except KeyError as missing:
            raise ConfigError(f"{where}: missing field {missing}") from None
        except MinipayError as error:
            raise ConfigError(f"{where}: {error.message}") from None
        if customer.bank not in known_banks:
            raise ConfigError(f"{where}: unknown bank {customer.bank!r}")
        if customer.bank == bank:
            found.append(customer)
    return found


def load(session: Session, customers: list[SeedCustomer], bcrypt_rounds: int) -> int:
    """Adds the customers not there yet; returns how many were added."""
    added = 0
    for row in customers:
        if ledger.find_customer(session, row.username) or session.get(Account, row.account):
            continue
        ledger.open_customer(
            session,
            username=row.username,
            name=row.name,
            password_hash=hash_password(row.password, bcrypt_rounds),
            role=row.role,
            account_number=row.account,
            currency=row.currency,
            initial_balance=row.balance,
        )
        added += 1
    return added
