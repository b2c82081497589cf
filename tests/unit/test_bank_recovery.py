"""A bank in doubt asks the coordinator and applies the answer; one that hears nothing keeps
its holds and asks again."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from server.bank import participant
from server.bank.models import Account
from server.bank.recovery import DecisionAsker
from server.common.db import Database
from server.common.errors import Unavailable
from server.common.vocabulary import Leg, Side, Status


class FakeCoordinator:
    def __init__(self, answers: dict[str, Status] | None = None) -> None:
        self.answers = answers
        self.asked: list[list[str]] = []

    async def statuses(self, payment_ids: Sequence[str], timeout: float) -> dict[str, Status]:
        self.asked.append(list(payment_ids))
        if self.answers is None:
            raise Unavailable("cannot reach the coordinator")
        return {pid: self.answers.get(pid, Status.PENDING) for pid in payment_ids}


def held(db: Database, number: str) -> tuple[int, int]:
    account = db.run_sync(lambda s: s.get(Account, number))
    assert account is not None
    return account.balance, account.held


def vote_yes(db: Database, *ids: str) -> None:
    legs = [Leg(pid, Side.DEBIT, "A-1", 1_000, "USD") for pid in ids]
    votes = db.run_statements(lambda c: participant.prepare(c, legs))
    assert all(vote.yes for vote in votes)


def test_a_bank_in_doubt_asks_and_applies_the_answers(bank_db: Database) -> None:
    vote_yes(bank_db, "commit-me", "abort-me", "undecided")
    coordinator = FakeCoordinator({"commit-me": Status.COMMITTED, "abort-me": Status.ABORTED})
    asker = DecisionAsker(bank_db, coordinator, timeout=0.0)
    assert asyncio.run(asker.resolve_in_doubt()) == 2
    assert sorted(coordinator.asked[0]) == ["abort-me", "commit-me", "undecided"]
    # One payment committed (1_000 out), one released, one still held.
    assert held(bank_db, "A-1") == (9_000, 1_000)
    assert bank_db.run_sync(lambda s: participant.in_doubt(s, float("inf"))) == ["undecided"]


def test_a_bank_waits_the_timeout_before_asking(bank_db: Database) -> None:
    vote_yes(bank_db, "fresh")
    coordinator = FakeCoordinator({})
    assert asyncio.run(DecisionAsker(bank_db, coordinator, timeout=60).resolve_in_doubt()) == 0
    assert coordinator.asked == []


def test_a_coordinator_that_does_not_answer_changes_nothing(bank_db: Database) -> None:
    vote_yes(bank_db, "p1")
    asker = DecisionAsker(bank_db, FakeCoordinator(None), timeout=0.0)
    with pytest.raises(Unavailable):
        asyncio.run(asker.resolve_in_doubt())
    assert held(bank_db, "A-1") == (10_000, 1_000), "a yes vote never decides alone"
