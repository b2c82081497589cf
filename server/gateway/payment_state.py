"""The per-payment 2PC rules, in plain Python: the legs a payment asks each bank to hold,
how votes become a decision, and what a payment's stored state means to the client. Nothing
here knows about rounds, databases or transports."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from server.common.vocabulary import Leg, Reason, Side
from server.gateway.models import CoordinatorState


class Status(enum.Enum):
    """A payment's status as the client sees it."""

    PENDING = "PENDING"
    COMMITTED = "COMMITTED"
    ABORTED = "ABORTED"


@dataclass(frozen=True)
class Vote:
    yes: bool
    reason_code: Reason | None = None
    reason: str = ""  # words a person can act on


@dataclass(frozen=True)
class Prepared:
    """A bank's answer to a Prepare: its vote on each payment, and which of the decisions on
    earlier payments that rode along it applied."""

    votes: dict[str, Vote]
    acknowledged: set[str]


@dataclass(frozen=True)
class Decision:
    commit: bool
    reason_code: Reason | None = None
    reason: str = ""


COMMIT = Decision(True)


def no_vote(reason_code: Reason, reason: str = "") -> Vote:
    return Vote(False, reason_code, reason or reason_code.sentence)


def abort(reason_code: Reason, reason: str = "") -> Decision:
    return Decision(False, reason_code, reason or reason_code.sentence)


def legs_by_bank(
    payment_id: str,
    from_bank: str,
    from_account: str,
    to_bank: str,
    to_account: str,
    amount: int,
    currency: str,
) -> dict[str, tuple[Leg, ...]]:
    """The payer's bank holds the debit and the payee's bank the credit; one bank with both
    accounts gets both legs in one Prepare."""
    debit = Leg(payment_id, Side.DEBIT, from_account, amount, currency)
    credit = Leg(payment_id, Side.CREDIT, to_account, amount, currency)
    if from_bank == to_bank:
        return {from_bank: (debit, credit)}
    return {from_bank: (debit,), to_bank: (credit,)}


def decide(votes: Sequence[Vote]) -> Decision:
    """Commit only when every vote is yes; otherwise abort with the first no's reason."""
    for vote in votes:
        if not vote.yes:
            return abort(vote.reason_code or Reason.ABORTED, vote.reason)
    return COMMIT


def status_of(state: CoordinatorState) -> Status:
    if state in (CoordinatorState.COMMITTING, CoordinatorState.COMMITTED):
        return Status.COMMITTED
    if state in (CoordinatorState.ABORTING, CoordinatorState.ABORTED):
        return Status.ABORTED
    return Status.PENDING


def decided_state(decision: Decision) -> CoordinatorState:
    return CoordinatorState.COMMITTING if decision.commit else CoordinatorState.ABORTING
