"""The dev seed's people as tests and the dev tools use them, read from the seed file itself:
every customer (username, password, bank, account, opening balance), the admin's login, and
logging every customer in at once. The one copy for ``tests/`` and ``devtools/bench``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from minipay.client.api import ClientConfig, GatewayClient
from server.common import seed
from server.common.settings import DEFAULT_BANKS, DEFAULT_SEED, parse_bank_map

Customer = seed.SeedCustomer


def seed_customers(path: Path = DEFAULT_SEED) -> list[Customer]:
    """Every customer of the seed file at PATH, at the default banks."""
    return seed.customers(path, parse_bank_map(DEFAULT_BANKS))


def seed_admin(path: Path = DEFAULT_SEED) -> tuple[str, str]:
    """The first admin of the seed file at PATH: (username, password)."""
    first = seed.admins(path)[0]
    return first.username, first.password


ADMIN = seed_admin()


async def log_in_everyone(
    config: ClientConfig, customers: Sequence[Customer] | None = None
) -> dict[str, str]:
    """Registers every customer (the seed's unless CUSTOMERS says), then logs each in, over
    one channel; their tokens by username, in the customers' order."""
    customers = seed_customers() if customers is None else customers
    async with GatewayClient(config) as client:
        for customer in customers:
            await client.register(
                customer.username, customer.password, customer.bank, customer.account
            )
        return {
            customer.username: (await client.login(customer.username, customer.password)).token
            for customer in customers
        }
