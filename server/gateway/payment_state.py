"""The per-payment 2PC rules, in plain Python: how votes become a decision, and what a
payment's stored state means to the client. Nothing here knows about rounds or transports."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from server.gateway.models import PaymentState

REASONS = {
    "insufficient_funds": "insufficient funds",
    "account_not_found": "the account does not exist",
    "account_disabled": "the account is disabled",
    "currency_mismatch": "the account holds another currency",
    "timeout": "a bank did not vote within the timeout",
    "bank_unavailable": "a bank could not be reached",
    "aborted": "the payment was aborted",
}


class Status(enum.Enum):
    PENDING = "PENDING"
    COMMITTED = "COMMITTED"
    ABORTED = "ABORTED"


@dataclass(frozen=True)
class Vote:
    yes: bool
    reason_code: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Decision:
    commit: bool
    reason_code: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Outcome:
    payment_id: str
    status: Status
    reason_code: str = ""
    reason: str = ""
    replayed: bool = False


def decide(votes: Sequence[Vote]) -> Decision:
    """Commit only when every vote is yes; otherwise abort with the first no's reason."""
    for vote in votes:
        if not vote.yes:
            code = vote.reason_code or "aborted"
            return Decision(False, code, vote.reason or REASONS.get(code, code))
    return Decision(True)


def status_of(state: PaymentState) -> Status:
    if state in (PaymentState.COMMITTING, PaymentState.COMMITTED):
        return Status.COMMITTED
    if state in (PaymentState.ABORTING, PaymentState.ABORTED):
        return Status.ABORTED
    return Status.PENDING


def decided_state(decision: Decision) -> PaymentState:
    return PaymentState.COMMITTING if decision.commit else PaymentState.ABORTING


def finished_state(state: PaymentState) -> PaymentState:
    """The state once every bank has acknowledged the decision."""
    return {
        PaymentState.COMMITTING: PaymentState.COMMITTED,
        PaymentState.ABORTING: PaymentState.ABORTED,
    }.get(state, state)
