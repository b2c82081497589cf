"""How votes become a decision, and what a stored state means to the client."""

from __future__ import annotations

import dataclasses

from server.common.vocabulary import Reason, Side, Status
from server.gateway.payment_state import (
    COMMIT,
    CoordinatorState,
    PaymentView,
    Share,
    Vote,
    decide,
    legs_by_bank,
    no_vote,
    status_of,
)


def test_commit_only_when_every_vote_is_yes() -> None:
    assert decide([Vote(True), Vote(True)]) == COMMIT
    assert decide([Vote(True)]).commit


def test_any_no_aborts_with_the_first_no_s_reason() -> None:
    decision = decide(
        [
            Vote(True),
            no_vote(Reason.INSUFFICIENT_FUNDS, "insufficient funds in account A-1"),
            no_vote(Reason.TIMEOUT),
        ]
    )
    assert not decision.commit
    assert decision.reason_code is Reason.INSUFFICIENT_FUNDS
    assert decision.reason == "insufficient funds in account A-1"


def test_a_no_without_a_reason_is_a_plain_abort() -> None:
    decision = decide([Vote(False)])
    assert not decision.commit
    assert decision.reason_code is Reason.ABORTED
    assert decision.reason == Reason.ABORTED.sentence


def payment(from_bank: str, from_account: str, to_bank: str, to_account: str) -> PaymentView:
    return PaymentView(
        id="p",
        payer="alice",
        from_bank=from_bank,
        from_account=from_account,
        to_bank=to_bank,
        to_account=to_account,
        amount=500,
        currency="USD",
        state=CoordinatorState.PREPARING,
        reason_code="",
        reason="",
        deadline=0.0,
        created_at=0.0,
    )


def test_each_bank_holds_its_own_leg() -> None:
    legs = legs_by_bank(payment("alpha", "A-1", "beta", "B-1"))
    assert set(legs) == {"alpha", "beta"}
    (debit,) = legs["alpha"]
    (credit,) = legs["beta"]
    assert (debit.side, debit.account, debit.amount) == (Side.DEBIT, "A-1", 500)
    assert (credit.side, credit.account, credit.amount) == (Side.CREDIT, "B-1", 500)


def test_one_bank_with_both_accounts_gets_both_legs_in_one_prepare() -> None:
    same_bank = payment("alpha", "A-1", "alpha", "A-2")
    legs = legs_by_bank(same_bank)
    assert [leg.side for leg in legs["alpha"]] == [Side.DEBIT, Side.CREDIT]
    assert same_bank.banks == ["alpha"]


def test_status_the_client_sees() -> None:
    assert status_of(CoordinatorState.PREPARING) is Status.PENDING
    # A decision is final the moment it is stored, before the banks acknowledge it.
    assert status_of(CoordinatorState.COMMITTING) is Status.COMMITTED
    assert status_of(CoordinatorState.COMMITTED) is Status.COMMITTED
    assert status_of(CoordinatorState.ABORTING) is Status.ABORTED
    assert status_of(CoordinatorState.ABORTED) is Status.ABORTED


def test_the_banks_of_a_payment_are_those_legs_by_bank_asks() -> None:
    plain = payment("alpha", "A-1", "beta", "B-1")
    split = dataclasses.replace(
        plain,
        to_bank="",
        to_account="",
        shares=(Share("gamma", "G-1", 1), Share("alpha", "A-2", 2), Share("gamma", "G-2", 3)),
    )
    for each in (plain, split, payment("alpha", "A-1", "alpha", "A-2")):
        assert each.banks == list(legs_by_bank(each))
