"""A payment at the gateway, in plain Python: what a caller asks for (``PaymentOrder``), what
the coordinator stores (``PaymentView`` in a ``CoordinatorState``), what the caller learns
(``Outcome``), and the per-payment 2PC rules: the legs each bank is asked to hold, how votes
become a decision, and what a stored state means to the client. Nothing here knows about
rounds, databases or transports; the ORM (``models``) and the payment log build on it."""

from __future__ import annotations

import enum
import functools
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from server.common.vocabulary import Leg, Reason, Side, Status

# A split payment pays 2 to MAX_SHARES payees.
MIN_SHARES, MAX_SHARES = 2, 100


class PaymentKind(enum.StrEnum):
    PAYMENT = "payment"  # money paid
    REFUND = "refund"  # money given back: a payment of its own, from the payee to the payer


class CoordinatorState(enum.StrEnum):
    """Where the coordinator is with a payment (the banks keep a ``ParticipantState``)."""

    PREPARING = "PREPARING"  # recorded; phase one under way, no decision yet
    COMMITTING = "COMMITTING"  # decided commit; not every bank has acknowledged
    ABORTING = "ABORTING"  # decided abort; not every bank has acknowledged
    COMMITTED = "COMMITTED"  # every bank applied it
    ABORTED = "ABORTED"  # every bank released it


# Not finished: undecided, or decided and not yet acknowledged by every bank.
OPEN_STATES = (CoordinatorState.PREPARING, CoordinatorState.COMMITTING, CoordinatorState.ABORTING)
# Decided commit, delivered or not.
DECIDED_COMMIT_STATES = (CoordinatorState.COMMITTING, CoordinatorState.COMMITTED)
# Decided, not yet acknowledged by every bank: what is still to deliver.
DELIVERING_STATES = (CoordinatorState.COMMITTING, CoordinatorState.ABORTING)
_STATES_OF_STATUS = {
    Status.PENDING: (CoordinatorState.PREPARING,),
    Status.COMMITTED: (CoordinatorState.COMMITTING, CoordinatorState.COMMITTED),
    Status.ABORTED: (CoordinatorState.ABORTING, CoordinatorState.ABORTED),
}
_STATUS_OF_STATE = {
    state: status for status, states in _STATES_OF_STATUS.items() for state in states
}


@dataclass(frozen=True)
class Share:
    """One payee's part of a split payment: their account, their amount, and (stored) the
    refunds of this share committed or in flight, and those committed."""

    bank: str
    account: str
    amount: int  # minor units
    refund_reserved: int = 0
    refunded: int = 0

    @property
    def refundable(self) -> int:
        return max(self.amount - self.refund_reserved, 0)


@dataclass(frozen=True)
class PaymentOrder:
    """A validated request to pay, with the payer's account taken from their token."""

    payer: str
    from_bank: str
    from_account: str
    to_bank: str
    to_account: str
    amount: int  # minor units
    currency: str
    idempotency_key: str
    # A refund: the payment it gives back. Its payee pays (``from_``) its payer (``to_``).
    refund_of: str | None = None
    # A refund of all that is left to refund: AMOUNT is found when it is recorded.
    whole_rest: bool = False
    # A split payment: its payees, in the order asked (``to_bank`` and ``to_account`` are
    # then empty, and AMOUNT is their total).
    shares: tuple[Share, ...] = ()
    # A refund of one share of a split payment (the share of its payer, ``from_``).
    of_share: bool = False

    @functools.cached_property
    def fingerprint(self) -> str:
        """The request as sent, to tell a replay from a key reused for something else."""
        if self.shares:
            payees = "|".join(f"{s.bank}|{s.account}|{s.amount}" for s in self.shares)
            text = f"split|{payees}|{self.currency}"
        elif self.refund_of is None:
            text = f"{self.to_bank}|{self.to_account}|{self.amount}|{self.currency}"
        else:
            amount = "rest" if self.whole_rest else str(self.amount)
            text = f"refund|{self.refund_of}|{amount}|{self.currency}"
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class PaymentView:
    """A detached snapshot of a stored payment."""

    id: str
    payer: str
    from_bank: str
    from_account: str
    to_bank: str
    to_account: str
    amount: int  # minor units
    currency: str
    state: CoordinatorState
    reason_code: str
    reason: str
    deadline: float
    created_at: float
    owner_token: int | None = None  # the fencing token of the replica driving it
    decided_by: int | None = None  # ... and of the one that decided it
    decided_at: float | None = None
    refund_of: str | None = None  # a refund: the payment it gives back
    refund_reserved: int = 0  # a payment: its refunds committed or in flight
    refunded: int = 0  # ... and those committed
    decided_now: bool = False  # set by ``payment_log.store_decisions`` when it stored this one
    # A split payment (``to_bank`` empty): its payees, as ``payment_log`` loads them from
    # ``payment_payees``; a payee's own view (``seen_by``) keeps only their share.
    shares: tuple[Share, ...] = ()

    @property
    def is_split(self) -> bool:
        return not self.to_bank or bool(self.shares)

    def share_of(self, bank: str, account: str) -> Share | None:
        """The share of BANK/ACCOUNT, if this is a split payment paying it."""
        for share in self.shares:
            if (share.bank, share.account) == (bank, account):
                return share
        return None

    def seen_by(self, bank: str, account: str) -> PaymentView:
        """The payment as the owner of BANK/ACCOUNT sees it: a split payment's payee sees it
        as paying them their share (payee, amount, refunds), and no other share; anyone else
        sees it as it is."""
        share = self.share_of(bank, account) if not self.to_bank else None
        if share is None:
            return self
        return replace(
            self,
            to_bank=share.bank,
            to_account=share.account,
            amount=share.amount,
            refund_reserved=share.refund_reserved,
            refunded=share.refunded,
            shares=(share,),
        )

    def pays(self, bank: str, account: str) -> bool:
        """Whether BANK/ACCOUNT is the payee, or one of a split payment's payees."""
        if (self.to_bank, self.to_account) == (bank, account):
            return True
        return not self.to_bank and self.share_of(bank, account) is not None

    @property
    def owner(self) -> int:
        """The fencing token of the replica driving it (every stored payment has one)."""
        assert self.owner_token is not None, self.id
        return self.owner_token

    @property
    def banks(self) -> list[str]:
        """Every bank the payment asks to hold a leg, the payer's first (the keys of
        ``legs_by_bank``, without making the legs)."""
        if self.to_bank:
            if self.to_bank == self.from_bank:
                return [self.from_bank]
            return [self.from_bank, self.to_bank]
        return list(dict.fromkeys([self.from_bank, *(share.bank for share in self.shares)]))

    @property
    def kind(self) -> PaymentKind:
        return PaymentKind.PAYMENT if self.refund_of is None else PaymentKind.REFUND

    @property
    def refundable(self) -> int:
        """What its payee may still refund: the amount less every refund committed or in
        flight, once the payment is committed (a decided commit never goes back); nothing
        of a payment not committed, nor of a refund."""
        if self.refund_of is not None or status_of(self.state) is not Status.COMMITTED:
            return 0
        return max(self.amount - self.refund_reserved, 0)

    @property
    def reason_enum(self) -> Reason | None:
        return Reason.parse(self.reason_code) if self.reason_code else None


@dataclass(frozen=True)
class Outcome:
    """What a caller of Pay learns: the payment as it stands, and whether this answer
    replays an earlier request with the same key."""

    payment: PaymentView
    replayed: bool = False

    @property
    def payment_id(self) -> str:
        return self.payment.id

    @property
    def status(self) -> Status:
        return status_of(self.payment.state)

    @property
    def reason_code(self) -> Reason | None:
        return self.payment.reason_enum

    @property
    def reason(self) -> str:
        return self.payment.reason


@dataclass(frozen=True)
class Vote:
    yes: bool
    reason_code: Reason | None = None
    reason: str = ""  # words a person can act on


@dataclass(frozen=True)
class Prepared:
    """A bank's answer to a Prepare: its vote on each payment, and which of the decisions on
    earlier payments that rode along it acknowledged."""

    votes: dict[str, Vote]
    acknowledged: set[str]


@dataclass(frozen=True)
class Delivered:
    """A bank's answer to a Commit or an Abort: the payments it acknowledged. A failed call
    acknowledged none, and says how it failed: ``refused``, the bank answered with an error
    (something in the call is at fault); ``unreachable``, it did not answer (nothing is)."""

    acknowledged: set[str]
    refused: bool = False
    unreachable: bool = False


@dataclass(frozen=True)
class Decision:
    commit: bool
    reason_code: Reason | None = None
    reason: str = ""


COMMIT = Decision(True)
YES = Vote(True)


def no_vote(reason_code: Reason, reason: str = "") -> Vote:
    return Vote(False, reason_code, reason or reason_code.sentence)


def abort(reason_code: Reason, reason: str = "") -> Decision:
    return Decision(False, reason_code, reason or reason_code.sentence)


def legs_by_bank(payment: PaymentView) -> dict[str, list[Leg]]:
    """What each bank is asked to hold: the debit at the payer's bank, the credit at the
    payee's, or of a split payment one credit per payee at that payee's bank. A bank with
    several of the payment's accounts gets all their legs in one Prepare, and votes on them
    together; every bank involved votes."""
    debit = Leg(payment.id, Side.DEBIT, payment.from_account, payment.amount, payment.currency)
    by_bank: dict[str, list[Leg]] = defaultdict(list)
    by_bank[payment.from_bank].append(debit)
    if payment.to_bank:
        credits = [(payment.to_bank, payment.to_account, payment.amount)]
    else:
        # A split payment read without its shares would ask no payee's bank: never send it.
        assert payment.shares, f"split payment {payment.id} without its shares"
        credits = [(share.bank, share.account, share.amount) for share in payment.shares]
    for bank, account, amount in credits:
        by_bank[bank].append(Leg(payment.id, Side.CREDIT, account, amount, payment.currency))
    return dict(by_bank)


def decide(votes: Sequence[Vote]) -> Decision:
    """Commit only when every vote is yes; otherwise abort with the first no's reason."""
    for vote in votes:
        if not vote.yes:
            return abort(vote.reason_code or Reason.ABORTED, vote.reason)
    return COMMIT


def status_of(state: CoordinatorState) -> Status:
    """What anyone outside the coordinator sees: a decision is final once stored, before
    the banks acknowledge it."""
    return _STATUS_OF_STATE[state]


def states_of(status: Status) -> tuple[CoordinatorState, ...]:
    return _STATES_OF_STATUS[status]


def decided_state(decision: Decision) -> CoordinatorState:
    return CoordinatorState.COMMITTING if decision.commit else CoordinatorState.ABORTING
