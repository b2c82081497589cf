"""An admin's deposits, as the gateway records them: RECORDED before the bank is asked to
apply one (so that the reconcile knows every deposit a bank may hold), then APPLIED once the
bank answered, or REFUSED when the bank said no (nothing was applied). A deposit still
RECORDED is one whose bank never answered: the admin retries it with the same key.

The deposit's id is the one the bank stores it under, derived from the admin and their
idempotency key: the same key again is the same deposit. Plain functions over a session;
the caller owns the transaction."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from minipay.errors import ErrorReason
from server.common.clock import now
from server.common.errors import InvalidArgument
from server.gateway.models import Deposit


class DepositState(enum.StrEnum):
    RECORDED = "RECORDED"  # asked of the bank, no answer yet
    APPLIED = "APPLIED"  # the bank applied it
    REFUSED = "REFUSED"  # the bank refused it: no money moved


@dataclass(frozen=True)
class DepositView:
    deposit_id: str
    bank: str
    account: str
    amount: int  # minor units
    currency: str
    admin: str
    state: DepositState
    created_at: float
    applied_at: float | None


# Run inside the transaction that marks a deposit APPLIED, once per deposit: what must be
# written with that mark (an event, an audit record) goes in the same transaction.
OnApplied = Callable[[Session, DepositView], None]


def deposit_id(admin: str, idempotency_key: str) -> str:
    """The bank's id of ADMIN's deposit with this key: bounded, whatever the key."""
    scope = f"{admin}\n{idempotency_key}".encode()
    return "admin-" + hashlib.sha256(scope).hexdigest()[:48]


def view(deposit: Deposit) -> DepositView:
    return DepositView(
        deposit.deposit_id,
        deposit.bank,
        deposit.account,
        deposit.amount,
        deposit.currency,
        deposit.admin,
        DepositState(deposit.state),
        deposit.created_at,
        deposit.applied_at,
    )


def record(
    session: Session,
    *,
    deposit_id: str,
    bank: str,
    account: str,
    amount: int,
    currency: str,
    admin: str,
) -> DepositView:
    """Records the deposit as RECORDED, or returns the one this id already names (a retry);
    the same id for another deposit is IDEMPOTENCY_KEY_REUSED. Two racing first inserts:
    the unique id refuses one, whose transaction is retried and finds the other."""
    existing = session.get(Deposit, deposit_id)
    if existing is not None:
        if (existing.bank, existing.account, existing.amount, existing.currency) != (
            bank,
            account,
            amount,
            currency,
        ):
            raise InvalidArgument(
                "this idempotency key was already used for another deposit; use a new key",
                ErrorReason.IDEMPOTENCY_KEY_REUSED,
                field="idempotency_key",
            )
        return view(existing)
    deposit = Deposit(
        deposit_id=deposit_id,
        bank=bank,
        account=account,
        amount=amount,
        currency=currency,
        admin=admin,
        state=DepositState.RECORDED.value,
        created_at=now(),
        applied_at=None,
    )
    session.add(deposit)
    session.flush()
    return view(deposit)


def mark_applied(
    session: Session, deposit_id: str, on_applied: OnApplied | None = None
) -> DepositView:
    """Marks the deposit APPLIED (the bank answered that it holds it); ON_APPLIED runs in
    this same transaction, only when this call is the one that marked it."""
    deposit = session.get(Deposit, deposit_id, with_for_update=True)
    assert deposit is not None, deposit_id  # recorded before the bank was asked
    if deposit.state == DepositState.APPLIED:
        return view(deposit)
    deposit.state = DepositState.APPLIED.value
    deposit.applied_at = now()
    session.flush()
    applied = view(deposit)
    if on_applied is not None:
        on_applied(session, applied)
    return applied


def mark_refused(session: Session, deposit_id: str) -> DepositView | None:
    """Marks a deposit the bank refused (it applied nothing) REFUSED, unless it is APPLIED
    already (a retry refused for another reason leaves the first one standing)."""
    deposit = session.get(Deposit, deposit_id, with_for_update=True)
    if deposit is None:
        return None
    if deposit.state == DepositState.RECORDED:
        deposit.state = DepositState.REFUSED.value
    return view(deposit)
