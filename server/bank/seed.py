"""Loading this bank's customers and accounts from the seed file, idempotently: a restart
adds what is missing and never touches an existing row or balance."""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.bank import accounts
from server.bank.models import Account
from server.common.passwords import hash_password
from server.common.seed import SeedCustomer


def load(session: Session, customers: list[SeedCustomer], bcrypt_rounds: int) -> int:
    """Adds the customers not there yet; returns how many were added."""
    added = 0
    for row in customers:
        if accounts.find_customer(session, row.username) or session.get(Account, row.account):
            continue
        accounts.open_customer(
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
