"""A bank's customers and accounts: opening them, deposits (each one a ledger entry),
balances and disabling. Plain functions over a SQLAlchemy session; the caller owns the
transaction. The ledger entries of payments are written by ``participant`` on commit."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from minipay.errors import ErrorReason
from server.bank.models import Account, Customer, LedgerEntry
from server.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from server.common.validation import MAX_BALANCE


@dataclass(frozen=True)
class AccountView:
    number: str
    currency: str
    balance: int
    held: int  # for outgoing payments still being decided
    available: int
    disabled: bool


@dataclass(frozen=True)
class CustomerView:
    username: str
    name: str
    role: str
    disabled: bool
    account: AccountView | None


def view_account(account: Account) -> AccountView:
    return AccountView(
        account.number,
        account.currency,
        account.balance,
        account.held,
        account.available,
        account.customer.disabled,
    )


def view_customer(customer: Customer) -> CustomerView:
    account = customer.accounts[0] if customer.accounts else None
    return CustomerView(
        customer.username,
        customer.name,
        customer.role,
        customer.disabled,
        view_account(account) if account else None,
    )


def find_customer(session: Session, username: str) -> Customer | None:
    return session.scalars(select(Customer).where(Customer.username == username)).one_or_none()


def get_customer(session: Session, username: str) -> Customer:
    customer = find_customer(session, username)
    if customer is None:
        raise NotFound(f"no customer {username!r} at this bank", ErrorReason.CUSTOMER_NOT_FOUND)
    return customer


def get_account(session: Session, number: str, *, for_update: bool = False) -> Account:
    query = select(Account).where(Account.number == number)
    if for_update:
        query = query.with_for_update()
    account = session.scalars(query).one_or_none()
    if account is None:
        raise NotFound(f"no account {number!r} at this bank", ErrorReason.ACCOUNT_NOT_FOUND)
    return account


def open_customer(
    session: Session,
    *,
    username: str,
    name: str,
    password_hash: str,
    role: str,
    account_number: str,
    currency: str,
    initial_balance: int,
) -> Customer:
    """Creates a customer with one account; the opening balance is a ledger entry."""
    if find_customer(session, username) is not None:
        raise AlreadyExists(
            f"customer {username!r} already exists at this bank", ErrorReason.USERNAME_TAKEN
        )
    if session.get(Account, account_number) is not None:
        raise AlreadyExists(
            f"account {account_number!r} already exists at this bank", ErrorReason.ACCOUNT_EXISTS
        )
    customer = Customer(
        username=username, name=name, password_hash=password_hash, role=role, disabled=False
    )
    account = Account(
        number=account_number, currency=currency, balance=0, held=0, customer=customer
    )
    session.add_all([customer, account])
    session.flush()
    if initial_balance:
        deposit(session, account_number, initial_balance, currency, f"open:{account_number}")
    return customer


def deposit(session: Session, number: str, amount: int, currency: str, deposit_id: str) -> Account:
    """Adds money from outside the system; the same ``deposit_id`` is applied once."""
    account = get_account(session, number, for_update=True)
    if currency != account.currency:
        raise FailedPrecondition(
            f"account {number!r} holds {account.currency}, not {currency}",
            ErrorReason.CURRENCY_MISMATCH,
        )
    already = session.scalars(
        select(LedgerEntry).where(LedgerEntry.deposit_id == deposit_id)
    ).one_or_none()
    if already is not None:
        if already.account_number != number or already.amount != amount:
            raise InvalidArgument(
                "this idempotency key was already used for another deposit; use a new key",
                ErrorReason.IDEMPOTENCY_KEY_REUSED,
                field="idempotency_key",
            )
        return account
    if account.balance + account.incoming + amount > MAX_BALANCE:
        raise FailedPrecondition(
            f"account {number!r} cannot hold more money", ErrorReason.BALANCE_LIMIT
        )
    account.balance += amount
    session.add(
        LedgerEntry(
            account_number=number,
            amount=amount,
            balance_after=account.balance,
            deposit_id=deposit_id,
        )
    )
    return account


def set_disabled(session: Session, username: str, disabled: bool) -> Customer:
    customer = get_customer(session, username)
    customer.disabled = disabled
    return customer


def list_customers(session: Session) -> list[CustomerView]:
    customers = session.scalars(select(Customer).order_by(Customer.username)).all()
    return [view_customer(customer) for customer in customers]
