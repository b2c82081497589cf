"""A payment's story as the gateway writes it (``server.gateway.trace``), on a real (temporary)
SQLite payment log and a fake of the banks: the steps of each way a payment can go, each
written in a transaction that runs anyway (never one more), the bounded buffer of steps that
wait for a write, and what a payer, a payee and an admin may see."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection

from server.common.db import Database
from server.common.vocabulary import Reason
from server.gateway import payment_log, trace
from server.gateway.coordinator import Coordinator
from server.gateway.payment_log import Deciding
from server.gateway.payment_state import COMMIT, CoordinatorState, PaymentView, Vote, no_vote
from server.gateway.replicas import Replica
from server.gateway.trace import Kind, Step, Trace, Viewer
from tests.unit.conftest import FakeBanks
from tests.unit.test_coordinator import BANKS, DEAD, ORDER, until_quiet

T = TypeVar("T")
Told = list[tuple[str, str, str]]  # (kind, bank, outcome) of each step


class CountingDatabase(Database):
    """A database that counts its transactions."""

    transactions = 0

    def run_statements(self, work: Callable[[Connection], T], retries: int = 3) -> T:
        self.transactions += 1
        return super().run_statements(work, retries)


def run(
    db: Database,
    owner: Replica,
    banks: FakeBanks,
    work: Callable[[Coordinator], Awaitable[T]],
    timeout: float = 1.0,
    enabled: bool = True,
) -> T:
    async def go() -> T:
        subject = Coordinator(
            db, banks, owner, BANKS, timeout, batch_max=16, steps=Trace(owner.name, enabled)
        )
        try:
            result = await asyncio.wait_for(work(subject), 10)
            await until_quiet(subject)
            return result
        finally:
            await subject.stop()

    return asyncio.run(go())


def told(db: Database, payment_id: str) -> Told:
    steps = db.run_statements(lambda c: trace.read(c, payment_id))
    return [(step.kind.value, step.bank, step.outcome) for step in steps]


def read(db: Database, payment_id: str) -> list[Step]:
    return db.run_statements(lambda c: trace.read(c, payment_id))


# -- the stories ----------------------------------------------------------------------------------


def test_a_committed_payment_tells_every_step(gateway_db: Database, replica: Replica) -> None:
    outcome = run(gateway_db, replica, FakeBanks(), lambda c: c.pay(ORDER))
    steps = read(gateway_db, outcome.payment_id)
    assert [(s.kind.value, s.bank, s.outcome) for s in steps] == [
        ("RECORDED", "", ""),
        ("VOTED", "alpha", "YES"),
        ("VOTED", "beta", "YES"),
        ("DECIDED", "", "COMMIT"),
        ("ACKNOWLEDGED", "alpha", "COMMIT"),
        ("ACKNOWLEDGED", "beta", "COMMIT"),
        ("FINISHED", "", ""),
    ]
    assert {s.replica for s in steps} == {"unit"}
    recorded, voted, _, decided, acknowledged, _, finished = steps
    assert recorded.at_ms == int(outcome.payment.created_at * 1000)
    assert voted.sent_ms is not None and recorded.at_ms <= voted.sent_ms <= voted.at_ms
    assert voted.round == decided.round == f"{replica.token}.1"
    assert decided.detail == "every vote yes"
    assert acknowledged.sent_ms is not None and acknowledged.attributes == {}
    assert decided.at_ms <= acknowledged.sent_ms <= acknowledged.at_ms <= finished.at_ms


def test_a_decision_that_rides_on_a_prepare_says_so(gateway_db: Database, replica: Replica) -> None:
    async def two(c: Coordinator) -> str:
        first = await c.pay(ORDER)
        await c.pay(dataclasses.replace(ORDER, idempotency_key="key-2"))
        return first.payment_id

    banks = FakeBanks()
    first = run(gateway_db, replica, banks, two)
    acknowledged = [s for s in read(gateway_db, first) if s.kind is Kind.ACKNOWLEDGED]
    assert [(s.bank, s.attributes, s.round) for s in acknowledged] == [
        ("alpha", {"via": "prepare"}, f"{replica.token}.2"),
        ("beta", {"via": "prepare"}, f"{replica.token}.2"),
    ]


@pytest.mark.parametrize(
    ("bank", "vote", "outcome", "cause"),
    [
        ("alpha", no_vote(Reason.INSUFFICIENT_FUNDS), "INSUFFICIENT_FUNDS", "alpha voted no"),
        ("beta", no_vote(Reason.BANK_UNAVAILABLE), "BANK_UNAVAILABLE", "beta could not be reached"),
        ("beta", None, "TIMEOUT", "beta did not vote within the timeout"),
    ],
    ids=["no-vote", "unreachable", "timeout"],
)
def test_an_abort_names_its_cause(
    gateway_db: Database, replica: Replica, bank: str, vote: Vote | None, outcome: str, cause: str
) -> None:
    banks = FakeBanks()
    if vote is None:
        banks.prepare_delay[bank] = 5.0
    else:
        banks.votes[bank] = vote
    paid = run(gateway_db, replica, banks, lambda c: c.pay(ORDER), timeout=0.2)
    steps = read(gateway_db, paid.payment_id)
    [no] = [s for s in steps if s.kind is Kind.VOTED and s.bank == bank]
    assert no.outcome == outcome and no.detail
    [decided] = [s for s in steps if s.kind is Kind.DECIDED]
    assert decided.outcome == "ABORT" and decided.detail.startswith(cause)
    if vote is None:
        assert no.detail == f"no vote in {no.at_ms - (no.sent_ms or 0)} ms"


def test_a_missing_acknowledgement_once_then_the_attempts(
    gateway_db: Database, replica: Replica
) -> None:
    banks = FakeBanks()
    banks.unacknowledged["beta"] = 3
    outcome = run(gateway_db, replica, banks, lambda c: c.pay(ORDER))
    to_beta = [
        (s.kind.value, s.attributes)
        for s in read(gateway_db, outcome.payment_id)
        if s.bank == "beta" and s.kind is not Kind.VOTED
    ]
    assert to_beta == [("NOT_ACKNOWLEDGED", {}), ("ACKNOWLEDGED", {"attempts": "4"})]


def test_a_replay_and_a_question_are_kept_a_few_times(
    gateway_db: Database, replica: Replica
) -> None:
    async def story(c: Coordinator) -> str:
        first = await c.pay(ORDER)
        for _ in range(trace.REPEATS_KEPT + 5):
            await c.pay(ORDER)
        for _ in range(trace.REPEATS_KEPT + 5):
            await c.statuses([first.payment_id, "pay_nobody"], asked_by="beta")
        return first.payment_id

    payment_id = run(gateway_db, replica, FakeBanks(), story)
    steps = read(gateway_db, payment_id)
    replays = [s for s in steps if s.kind is Kind.REPLAYED]
    questions = [s for s in steps if s.kind is Kind.ASKED]
    assert len(replays) == len(questions) == trace.REPEATS_KEPT
    assert {(s.bank, s.outcome) for s in questions} == {("beta", "COMMIT")}
    assert {s.outcome for s in replays} == {"COMMITTED"}
    nobody = gateway_db.run_statements(lambda c: trace.read(c, "pay_nobody"))
    assert nobody == [], "a question about a payment nobody recorded adds no story"


def test_a_take_over_names_the_replica_it_took_from(gateway_db: Database, replica: Replica) -> None:
    recorded = gateway_db.run_statements(lambda c: payment_log.record(c, [ORDER], 5, DEAD))
    orphan = recorded[0].payment
    assert orphan is not None
    gateway_db.run_statements(
        lambda c: c.exec_driver_sql(
            "INSERT INTO incarnations (token, replica, started_at) VALUES (?, 'gone', 0)", (DEAD,)
        )
    )
    run(gateway_db, replica, FakeBanks(), lambda c: c.take_over())
    steps = read(gateway_db, orphan.id)  # recorded here without a story: it begins after
    assert [(s.kind.value, s.replica, s.outcome) for s in steps] == [
        ("TAKEN_OVER", "unit", ""),
        ("DECIDED", "unit", "ABORT"),
        ("ACKNOWLEDGED", "unit", "ABORT"),
        ("ACKNOWLEDGED", "unit", "ABORT"),
        ("FINISHED", "unit", ""),
    ]
    assert steps[0].attributes == {"from_replica": "gone"}
    assert steps[1].detail == "presumed abort after a take-over"


# -- what it costs ------------------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_the_story_needs_no_transaction_of_its_own(
    tmp_path: Any, replica: Replica, gateway_db: Database, enabled: bool
) -> None:
    """Payments paid with the trace on run exactly the transactions they run with it off."""
    counting = CountingDatabase(gateway_db.url)

    async def pay_all(c: Coordinator) -> list[str]:
        orders = [dataclasses.replace(ORDER, idempotency_key=f"k{i}") for i in range(20)]
        outcomes = await asyncio.gather(*(c.pay(order) for order in orders))
        return [o.payment_id for o in outcomes]

    try:
        ids = run(counting, replica, FakeBanks(), pay_all, enabled=enabled)
        counted = counting.transactions
    finally:
        counting.close()
    stored = gateway_db.run_statements(
        lambda c: c.exec_driver_sql("SELECT count(*) FROM payment_steps").scalar_one()
    )
    # Two rounds at most (record and decide each), and one completion write.
    assert counted <= 5, counted
    assert stored == (20 * 6 if enabled else 0), stored  # FINISHED is the payment's own
    assert all(told(gateway_db, pid)[-1] == ("FINISHED", "", "") for pid in ids)


# -- the buffer ---------------------------------------------------------------------------------


def step(payment_id: str = "pay_1", kind: Kind = Kind.ACKNOWLEDGED, at: int = 1) -> trace.Row:
    return Step(payment_id, kind, at, "unit", at - 1, "alpha", "", "COMMIT").row()


def test_the_buffer_keeps_steps_for_the_next_write_within_its_bound() -> None:
    told_waiting: list[int] = []
    buffer = Trace("unit", limit=3)
    buffer.on_waiting(lambda: told_waiting.append(buffer.waiting))
    buffer.keep([step(at=1), step(at=2)])
    buffer.keep([step(at=3), step(at=4)])
    assert buffer.waiting == 3 and buffer.dropped == 1
    assert told_waiting == [2, 3]
    taken = buffer.take()
    assert [row[2] for row in taken] == [1, 2, 3] and buffer.waiting == 0
    buffer.keep([step(at=5)])
    buffer.put_back(taken)  # a write that failed: they wait again, first
    assert [row[2] for row in buffer.take()] == [1, 2, 5]


def test_off_it_keeps_and_makes_nothing() -> None:
    off = Trace("unit", enabled=False)
    off.keep([step()])
    off.answered("alpha", [("pay_1", True, 0)], {"pay_1"}, 1)
    assert off.waiting == 0
    assert off.taken_over("pay_1", "gone") is None
    assert off.refund("pay_1", "pay_2", 500, "COMMITTED") is None


def test_steps_are_written_in_order_and_go_with_their_payment(gateway_db: Database) -> None:
    many = [step("pay_1", at=n) for n in range(1, 3500)] + [step("pay_2")]
    gateway_db.run_statements(lambda c: trace.write(c, [*many, None]))
    first = read(gateway_db, "pay_1")
    assert [s.at_ms for s in first] == list(range(1, trace.MAX_STEPS + 1))
    assert first[0].row() == many[0]
    gone = gateway_db.run_statements(lambda c: trace.forget(c, ["pay_1"]))
    assert gone == 3499
    assert read(gateway_db, "pay_1") == [] and len(read(gateway_db, "pay_2")) == 1


def test_a_refund_step_for_the_refunds_to_write(gateway_db: Database) -> None:
    refund = Trace("unit").refund("pay_1", "pay_2", 500, "COMMITTED")
    gateway_db.run_statements(lambda c: trace.write(c, [refund]))
    [stored] = read(gateway_db, "pay_1")
    assert (stored.kind, stored.outcome, stored.replica) == (Kind.REFUND, "COMMITTED", "unit")
    assert stored.attributes == {"refund_id": "pay_2", "amount_minor_units": "500"}


# -- who sees what ------------------------------------------------------------------------------


PAYMENT = PaymentView(
    id="pay_1",
    payer="alice",
    from_bank="alpha",
    from_account="A-1",
    to_bank="beta",
    to_account="B-1",
    amount=1_234,
    currency="USD",
    state=CoordinatorState.COMMITTED,
    reason_code="",
    reason="",
    deadline=0.0,
    created_at=0.0,
)
STORY = [
    Step("pay_1", Kind.RECORDED, 0, "g", attributes={"request_id": "r1", "certificate": "c1"}),
    Step("pay_1", Kind.REPLAYED, 1, "g", attributes={"request_id": "r2"}),
    Step("pay_1", Kind.VOTED, 3, "g", 1, "alpha", "7.1", "YES"),
    Step("pay_1", Kind.VOTED, 4, "g", 1, "beta", "7.1", "YES"),
    Step("pay_1", Kind.DECIDED, 4, "g", round="7.1", outcome="COMMIT", detail="every vote yes"),
    Step("pay_1", Kind.NOT_ACKNOWLEDGED, 9, "g", 4, "alpha", outcome="COMMIT"),
    Step("pay_1", Kind.ASKED, 10, "g", 10, "alpha", outcome="COMMIT"),
    Step("pay_1", Kind.ACKNOWLEDGED, 6, "g", 4, "beta", outcome="COMMIT"),
    Step("pay_1", Kind.ASKED, 11, "g", 11, "beta", outcome="COMMIT"),
    Step("pay_1", Kind.ACKNOWLEDGED, 12, "g", 11, "alpha", outcome="COMMIT"),
    Step("pay_1", Kind.REFUND, 20, "g", outcome="PENDING", attributes={"refund_id": "pay_2"}),
    Step("pay_1", Kind.REFUND, 21, "g", outcome="COMMITTED", attributes={"refund_id": "pay_2"}),
    Step("pay_1", Kind.FINISHED, 13, "g"),
]


def test_the_admin_and_the_payer_see_the_whole_story_but_refunds_in_flight() -> None:
    assert trace.visible_steps(STORY, Viewer.ADMIN, PAYMENT) == STORY
    payer = trace.visible_steps(STORY, Viewer.PAYER, PAYMENT)
    assert payer == [s for s in STORY if s.outcome != "PENDING"]


def test_the_payee_sees_no_votes_questions_replays_or_requests_of_the_payers_side() -> None:
    payee = trace.visible_steps(STORY, Viewer.PAYEE, PAYMENT)
    assert [(s.kind.value, s.bank) for s in payee] == [
        ("RECORDED", ""),
        ("VOTED", "beta"),
        ("DECIDED", ""),
        ("ACKNOWLEDGED", "beta"),
        ("ASKED", "beta"),
        ("ACKNOWLEDGED", "alpha"),
        ("REFUND", ""),
        ("REFUND", ""),
        ("FINISHED", ""),
    ]
    assert payee[0].attributes == {}
    assert payee[0].at_ms == 0


def test_every_stored_step_survives_the_round_trip(gateway_db: Database) -> None:
    gateway_db.run_statements(lambda c: trace.write(c, [s.row() for s in STORY[:-1]]))
    stored = read(gateway_db, "pay_1")
    assert stored == STORY[:-1]  # no FINISHED: the payment has no row here


def test_a_decision_stored_by_another_is_no_step_of_this_replica(gateway_db: Database) -> None:
    [recorded] = gateway_db.run_statements(lambda c: payment_log.record(c, [ORDER], 5, 7))
    assert recorded.payment is not None
    fenced = Deciding(recorded.payment.id, COMMIT, 8)  # not the owner's token
    [stale] = gateway_db.run_statements(lambda c: payment_log.store_decisions(c, [fenced]))
    assert not stale.decided_now
    assert Trace("unit").decided(stale, trace.ALL_YES) is None
