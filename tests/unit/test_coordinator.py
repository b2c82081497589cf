"""The coordinator against a fake of the banks (its ``Participants`` seam) and a real
(temporary) SQLite payment log: every way phase one can end, decisions riding on Prepares
and not acknowledged, balance reads, replays, and recovery after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from server.common.db import Database
from server.common.errors import InvalidArgument
from server.common.faults import Faults
from server.common.logs import REQUEST_ID
from server.common.vocabulary import Reason, Side, Status
from server.gateway import payment_log
from server.gateway.coordinator import Coordinator
from server.gateway.payment_log import Deciding
from server.gateway.payment_state import (
    COMMIT,
    CoordinatorState,
    Outcome,
    PaymentOrder,
    abort,
    no_vote,
)
from server.gateway.recovery import Recovery
from server.gateway.replicas import Replica
from tests.unit.conftest import FakeBanks

T = TypeVar("T")
BANKS = ("alpha", "beta")
ORDER = PaymentOrder("alice", "alpha", "A-1", "beta", "B-1", 1_234, "USD", "key-1")


DEAD = 999  # the fencing token of a replica incarnation that died
WITHHELD = Faults("withhold_decisions")  # the outbox sends nothing: only a balance read does


def run(
    db: Database,
    owner: Replica,
    banks: FakeBanks,
    work: Callable[[Coordinator], Awaitable[T]],
    timeout: float = 1.0,
    faults: Faults | None = None,
) -> T:
    async def go() -> T:
        subject = Coordinator(db, banks, owner, BANKS, timeout, batch_max=16, faults=faults)
        try:
            return await asyncio.wait_for(work(subject), 10)
        finally:
            if faults is None:
                await until_quiet(subject)
            await subject.stop()

    return asyncio.run(go())


async def until_quiet(subject: Coordinator) -> None:
    """Waits for background deliveries (the client does not wait for all of them)."""
    for _ in range(300):
        if subject.quiet:
            return
        await asyncio.sleep(0.01)


def stored_state(db: Database, payment_id: str) -> CoordinatorState:
    return db.run_statements(lambda c: payment_log.by_ids(c, [payment_id]))[payment_id].state


def test_two_yes_votes_commit_at_both_banks(gateway_db: Database, replica: Replica) -> None:
    banks = FakeBanks()
    outcome = run(gateway_db, replica, banks, lambda c: c.pay(ORDER))
    assert outcome.status is Status.COMMITTED
    assert not outcome.replayed
    prepared = {
        bank: [(leg.side, leg.account, leg.amount) for leg in legs] for bank, legs in banks.prepared
    }
    assert prepared == {
        "alpha": [(Side.DEBIT, "A-1", 1_234)],
        "beta": [(Side.CREDIT, "B-1", 1_234)],
    }
    assert sorted(banks.decisions_for(outcome.payment_id)) == [("alpha", True), ("beta", True)]
    assert stored_state(gateway_db, outcome.payment_id) is CoordinatorState.COMMITTED


def test_one_no_aborts_at_both_banks(gateway_db: Database, replica: Replica) -> None:
    banks = FakeBanks()
    banks.votes["alpha"] = no_vote(Reason.INSUFFICIENT_FUNDS, "insufficient funds in A-1")
    outcome = run(gateway_db, replica, banks, lambda c: c.pay(ORDER))
    assert outcome.status is Status.ABORTED
    assert outcome.reason_code is Reason.INSUFFICIENT_FUNDS
    assert outcome.reason == "insufficient funds in A-1"
    assert sorted(banks.decisions_for(outcome.payment_id)) == [("alpha", False), ("beta", False)]
    assert stored_state(gateway_db, outcome.payment_id) is CoordinatorState.ABORTED


def test_a_bank_slower_than_the_timeout_aborts(gateway_db: Database, replica: Replica) -> None:
    banks = FakeBanks()
    banks.prepare_delay["beta"] = 5.0
    outcome = run(gateway_db, replica, banks, lambda c: c.pay(ORDER), timeout=0.2)
    assert outcome.status is Status.ABORTED
    assert outcome.reason_code is Reason.TIMEOUT


def test_a_bank_that_cannot_be_reached_aborts(gateway_db: Database, replica: Replica) -> None:
    banks = FakeBanks()
    banks.votes["beta"] = no_vote(Reason.BANK_UNAVAILABLE, "bank beta: a bank could not be reached")
    outcome = run(gateway_db, replica, banks, lambda c: c.pay(ORDER))
    assert outcome.status is Status.ABORTED
    assert outcome.reason_code is Reason.BANK_UNAVAILABLE


def test_a_decision_not_acknowledged_is_sent_again(gateway_db: Database, replica: Replica) -> None:
    banks = FakeBanks()
    banks.unacknowledged["beta"] = 3
    outcome = run(gateway_db, replica, banks, lambda c: c.pay(ORDER))
    assert outcome.status is Status.COMMITTED, "the decision is final before delivery"
    sent_to_beta = [ids for bank, _, ids in banks.calls if bank == "beta"]
    assert sent_to_beta == [[outcome.payment_id]] * 4
    assert banks.decisions_for(outcome.payment_id).count(("beta", True)) == 1
    assert stored_state(gateway_db, outcome.payment_id) is CoordinatorState.COMMITTED


def test_the_same_key_replays_the_outcome(gateway_db: Database, replica: Replica) -> None:
    banks = FakeBanks()

    async def twice(c: Coordinator) -> tuple[Outcome, Outcome]:
        return await c.pay(ORDER), await c.pay(ORDER)

    first, again = run(gateway_db, replica, banks, twice)
    assert again.replayed
    assert (again.payment_id, again.status) == (first.payment_id, Status.COMMITTED)
    assert len(banks.prepared) == 2, "phase one ran once"


def test_the_same_key_concurrently_pays_once(gateway_db: Database, replica: Replica) -> None:
    banks = FakeBanks()
    banks.prepare_delay["alpha"] = 0.1

    async def together(c: Coordinator) -> list[Outcome]:
        return await asyncio.gather(*(c.pay(ORDER) for _ in range(5)))

    outcomes = run(gateway_db, replica, banks, together)
    assert len({o.payment_id for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1
    assert all(o.status is Status.COMMITTED for o in outcomes)


def test_the_same_key_with_other_parameters_is_refused(
    gateway_db: Database, replica: Replica
) -> None:
    banks = FakeBanks()

    async def reuse(c: Coordinator) -> None:
        await c.pay(ORDER)
        await c.pay(dataclasses.replace(ORDER, amount=1))

    with pytest.raises(InvalidArgument, match="already used"):
        run(gateway_db, replica, banks, reuse)


def test_payments_waiting_together_share_a_round(gateway_db: Database, replica: Replica) -> None:
    banks = FakeBanks()
    banks.prepare_delay["alpha"] = 0.05  # the first round is under way while the rest arrive

    async def many(c: Coordinator) -> list[Outcome]:
        return await asyncio.gather(
            *(c.pay(dataclasses.replace(ORDER, idempotency_key=f"k{i}")) for i in range(40))
        )

    outcomes = run(gateway_db, replica, banks, many)
    assert all(o.status is Status.COMMITTED for o in outcomes)
    to_alpha = [legs for bank, legs in banks.prepared if bank == "alpha"]
    assert len(to_alpha) <= 4, "40 payments in a handful of rounds, not 40"
    assert max(len(legs) for legs in to_alpha) <= 16, "never more than batch_max per round"


def keyed(key: str, **changes: object) -> PaymentOrder:
    return dataclasses.replace(ORDER, idempotency_key=key, **changes)  # type: ignore[arg-type]


def test_many_orders_at_once_answer_in_order_over_several_rounds(
    gateway_db: Database, replica: Replica
) -> None:
    banks = FakeBanks()
    banks.votes["beta"] = no_vote(Reason.ACCOUNT_NOT_FOUND)
    orders = [keyed(f"k{i}", to_bank="alpha" if i % 3 else "beta") for i in range(40)]
    outcomes = run(gateway_db, replica, banks, lambda c: c.pay_many(orders))
    assert len(outcomes) == 40
    for index, outcome in enumerate(outcomes):
        assert isinstance(outcome, Outcome), outcome
        assert outcome.payment.to_bank == orders[index].to_bank
        expected = Status.COMMITTED if index % 3 else Status.ABORTED
        assert outcome.status is expected, index
    rounds = [{leg.payment_id for leg in legs} for bank, legs in banks.prepared if bank == "alpha"]
    assert max(map(len, rounds)) <= 16, "never more than batch_max per round"
    assert len(rounds) >= 3, "40 orders at once fill several rounds"


def test_one_key_twice_in_many_orders_pays_once_or_is_refused(
    gateway_db: Database, replica: Replica
) -> None:
    banks = FakeBanks()
    # Far apart, so that the repeat could land in a later round than the first.
    orders = [keyed("same"), *(keyed(f"k{i}") for i in range(30)), keyed("same")]
    orders += [keyed("other"), keyed("other", amount=1)]
    outcomes = run(gateway_db, replica, banks, lambda c: c.pay_many(orders))
    first, repeat = outcomes[0], outcomes[31]
    assert isinstance(first, Outcome) and isinstance(repeat, Outcome)
    assert (first.replayed, repeat.replayed) == (False, True), "the later one is the replay"
    assert repeat.payment_id == first.payment_id and repeat.status is Status.COMMITTED
    kept, refused = outcomes[32], outcomes[33]
    assert isinstance(kept, Outcome) and kept.status is Status.COMMITTED and not kept.replayed
    assert isinstance(refused, InvalidArgument) and "already used" in refused.message
    assert sum(len(legs) for bank, legs in banks.prepared if bank == "alpha") == 32, "32 payments"


def test_many_orders_wait_for_nothing_but_themselves(
    gateway_db: Database, replica: Replica
) -> None:
    """A slow payment asked alone does not hold up a batch asked after it, in a later round."""
    banks = FakeBanks()

    async def go(c: Coordinator) -> float:
        banks.prepare_delay["beta"] = 0.5
        slow = asyncio.create_task(c.pay(keyed("slow")))
        await asyncio.sleep(0.1)  # its round is waiting on beta
        banks.prepare_delay["beta"] = 0.0
        started = asyncio.get_running_loop().time()
        outcomes = await c.pay_many([keyed(f"k{i}", to_bank="alpha") for i in range(5)])
        took = asyncio.get_running_loop().time() - started
        assert all(isinstance(o, Outcome) and o.status is Status.COMMITTED for o in outcomes)
        assert not slow.done(), "the batch finished first"
        await slow
        return took

    assert run(gateway_db, replica, banks, go) < 0.35


def test_a_failing_round_fails_only_its_own_orders(gateway_db: Database, replica: Replica) -> None:
    banks = FakeBanks()

    async def go(c: Coordinator) -> list[Outcome | Exception]:
        original = c._db

        class Broken:
            async def statements(self, work: object) -> object:
                raise RuntimeError("disk full")

        c._db = Broken()  # type: ignore[assignment]
        failed = await c.pay_many([keyed("a"), keyed("b")])
        assert all(isinstance(o, RuntimeError) for o in failed), failed
        c._db = original
        return await c.pay_many([keyed("a"), keyed("b")])

    again = run(gateway_db, replica, banks, go)
    assert all(isinstance(o, Outcome) and o.status is Status.COMMITTED for o in again)


def test_a_decision_rides_on_the_next_prepare_to_its_bank(
    gateway_db: Database, replica: Replica
) -> None:
    banks = FakeBanks()

    async def two(c: Coordinator) -> tuple[Outcome, Outcome]:
        first = await c.pay(ORDER)
        return first, await c.pay(dataclasses.replace(ORDER, idempotency_key="key-2"))

    first, _ = run(gateway_db, replica, banks, two)
    assert ("alpha", True, [first.payment_id]) in banks.carried
    assert ("beta", True, [first.payment_id]) in banks.carried
    assert banks.decisions_for(first.payment_id) == [("alpha", True), ("beta", True)], (
        "delivered once to each bank, on the second payment's Prepare"
    )


def test_a_balance_read_first_delivers_the_accounts_decisions(
    gateway_db: Database, replica: Replica
) -> None:
    """The caller has its answer once the decision is stored; a balance read right after
    still sees the payment, because it delivers what the account's bank has not applied."""
    banks = FakeBanks()

    async def pay_then_read(c: Coordinator) -> tuple[Outcome, list[tuple[str, bool]]]:
        outcome = await c.pay(ORDER)
        await c.delivery.deliver_before_read("beta", "B-1")
        return outcome, banks.decisions_for(outcome.payment_id)

    outcome, delivered = run(gateway_db, replica, banks, pay_then_read)
    assert outcome.status is Status.COMMITTED
    assert ("beta", True) in delivered, "delivered before the balance is read"


def test_decisions_riding_on_a_failed_prepare_are_sent_again(
    gateway_db: Database, replica: Replica
) -> None:
    """A Prepare that fails takes the decisions riding on it down too: they are not
    acknowledged, so they go again (alone), and the payment completes only once the bank
    has them."""
    banks = FakeBanks()

    async def two(c: Coordinator) -> tuple[Outcome, Outcome]:
        first = await c.pay(ORDER)
        banks.failing_prepares["beta"] = 1
        second = await c.pay(dataclasses.replace(ORDER, idempotency_key="key-2"))
        await until_quiet(c)
        return first, second

    first, second = run(gateway_db, replica, banks, two)
    assert (second.status, second.reason_code) == (Status.ABORTED, Reason.BANK_UNAVAILABLE)
    rode = [ids for bank, ids in banks.riders if bank == "beta" and first.payment_id in ids]
    assert rode, "the first decision rode on the Prepare that failed"
    assert banks.decisions_for(first.payment_id).count(("beta", True)) == 1, (
        "beta was sent the commit again and applied it"
    )
    assert stored_state(gateway_db, first.payment_id) is CoordinatorState.COMMITTED


def test_a_balance_read_right_after_an_abort_delivers_the_abort(
    gateway_db: Database, replica: Replica
) -> None:
    """Right after an ABORTED answer the payer's money must no longer show as held: the read
    delivers aborts as well as commits. (The gateway withholds decisions here, so only the
    read can bring them.)"""
    banks = FakeBanks()
    banks.votes["beta"] = no_vote(Reason.ACCOUNT_NOT_FOUND)
    committed = dataclasses.replace(ORDER, to_bank="alpha", to_account="A-2", idempotency_key="c")

    async def pay_then_read(c: Coordinator) -> tuple[Outcome, Outcome]:
        aborted, paid = await c.pay(ORDER), await c.pay(committed)
        await c.delivery.deliver_before_read("alpha", "A-1")
        return aborted, paid

    aborted, paid = run(gateway_db, replica, banks, pay_then_read, faults=WITHHELD)
    assert (aborted.status, paid.status) == (Status.ABORTED, Status.COMMITTED)
    assert banks.decisions_for(aborted.payment_id) == [("alpha", False)]
    assert banks.decisions_for(paid.payment_id) == [("alpha", True)]


def test_no_caller_s_request_id_stays_with_a_decision(
    gateway_db: Database, replica: Replica
) -> None:
    """A Prepare carries the request ids of its own round's payments only; the decisions
    that ride along, or go alone later, carry none of their callers'."""
    banks = FakeBanks()

    async def two(c: Coordinator) -> None:
        REQUEST_ID.set("first-caller")
        await c.pay(ORDER)
        REQUEST_ID.set("second-caller")
        await c.pay(dataclasses.replace(ORDER, idempotency_key="key-2"))

    run(gateway_db, replica, banks, two)
    prepares = [ids for method, ids in banks.request_ids if method == "Prepare"]
    assert prepares == [["first-caller"]] * 2 + [["second-caller"]] * 2
    assert any(ids for _, ids in banks.riders), "the first decision rode along"
    assert all(ids == [] for method, ids in banks.request_ids if method != "Prepare")


def test_a_failing_record_round_fails_its_callers_and_the_next_round_runs(
    gateway_db: Database, replica: Replica
) -> None:
    banks = FakeBanks()

    async def go(c: Coordinator) -> Outcome:
        original = c._db

        class Broken:
            async def statements(self, work: object) -> object:
                raise RuntimeError("disk full")

        c._db = Broken()  # type: ignore[assignment]
        with pytest.raises(RuntimeError):
            await c.pay(ORDER)
        c._db = original
        return await c.pay(ORDER)

    assert run(gateway_db, replica, banks, go).status is Status.COMMITTED


def insert(db: Database, state: CoordinatorState, key: str, owner: int = DEAD) -> str:
    """A payment in STATE, as the replica incarnation OWNER left it."""
    order = dataclasses.replace(ORDER, idempotency_key=key)
    [recorded] = db.run_statements(lambda c: payment_log.record(c, [order], 1.0, owner))
    assert recorded.payment is not None
    payment_id = recorded.payment.id
    if state is not CoordinatorState.PREPARING:
        decision = COMMIT if state is CoordinatorState.COMMITTING else abort(Reason.TIMEOUT)
        deciding = [Deciding(payment_id, decision, owner)]
        db.run_statements(lambda c: payment_log.store_decisions(c, deciding))
    return payment_id


def test_a_restarted_coordinator_delivers_every_stored_decision(
    gateway_db: Database, replica: Replica
) -> None:
    # What a coordinator that died left behind: one payment of each open state.
    committing = insert(gateway_db, CoordinatorState.COMMITTING, "k1")
    aborting = insert(gateway_db, CoordinatorState.ABORTING, "k2")
    preparing = insert(gateway_db, CoordinatorState.PREPARING, "k3")
    banks = FakeBanks()

    async def restart(c: Coordinator) -> None:
        await Recovery(gateway_db, c, idempotency_ttl=3600).run_once()
        await until_quiet(c)

    run(gateway_db, replica, banks, restart)
    assert sorted(banks.decisions_for(committing)) == [("alpha", True), ("beta", True)]
    assert sorted(banks.decisions_for(aborting)) == [("alpha", False), ("beta", False)]
    # Nobody was deciding the recorded one: presumed abort, delivered like any other.
    assert sorted(banks.decisions_for(preparing)) == [("alpha", False), ("beta", False)]
    assert stored_state(gateway_db, committing) is CoordinatorState.COMMITTED
    assert stored_state(gateway_db, aborting) is CoordinatorState.ABORTED
    assert stored_state(gateway_db, preparing) is CoordinatorState.ABORTED


def test_a_bank_in_doubt_hears_the_decision_or_presumed_abort(
    gateway_db: Database, replica: Replica
) -> None:
    committing = insert(gateway_db, CoordinatorState.COMMITTING, "k1")
    orphan = insert(gateway_db, CoordinatorState.PREPARING, "k2")
    banks = FakeBanks()
    answers = run(
        gateway_db,
        replica,
        banks,
        lambda c: c.statuses([committing, orphan, "pay_never_recorded"]),
    )
    assert answers == {
        committing: Status.COMMITTED,
        orphan: Status.ABORTED,
        "pay_never_recorded": Status.ABORTED,
    }


def test_a_payment_a_live_replica_drives_is_not_taken(
    gateway_db: Database, replica: Replica
) -> None:
    other = Replica(gateway_db, "other", lease=60.0)
    asyncio.run(other.join())
    theirs = insert(gateway_db, CoordinatorState.PREPARING, "k1", owner=other.token)
    banks = FakeBanks()

    async def ask(c: Coordinator) -> tuple[dict[str, Status], int]:
        return await c.statuses([theirs]), len(await c.take_over())

    answers, taken = run(gateway_db, replica, banks, ask)
    assert answers == {theirs: Status.PENDING}
    assert taken == 0
    assert stored_state(gateway_db, theirs) is CoordinatorState.PREPARING


def test_a_replica_that_lost_a_payment_writes_nothing(
    gateway_db: Database, replica: Replica
) -> None:
    """Paused mid-payment: a survivor takes the payment over and aborts it. When the paused
    coordinator's votes come back (all yes), its commit is refused and it answers from the
    row."""
    banks = FakeBanks()
    banks.prepare_delay["beta"] = 0.3
    survivor = Replica(gateway_db, "survivor", lease=60.0)
    asyncio.run(survivor.join())

    async def lose_it(c: Coordinator) -> Outcome:
        paying = asyncio.create_task(c.pay(ORDER))
        await asyncio.sleep(0.1)  # recorded, and waiting for beta's vote
        [payment] = await c._db.statements(lambda conn: payment_log.owned_open(conn, replica.token))
        # The survivor takes it (this replica's lease has passed) and decides abort.
        gateway_db.run_statements(
            lambda conn: conn.execute(
                payment_log.PAYMENTS.update()
                .where(payment_log.PAYMENTS.c.id == payment.id)
                .values(owner_token=survivor.token)
            )
        )
        deciding = [Deciding(payment.id, abort(Reason.TIMEOUT), survivor.token)]
        gateway_db.run_statements(lambda conn: payment_log.store_decisions(conn, deciding))
        return await paying

    outcome = run(gateway_db, replica, banks, lose_it, timeout=2.0)
    assert outcome.status is Status.ABORTED, "the woken replica answered from the row"
    stored = gateway_db.run_statements(lambda c: payment_log.by_ids(c, [outcome.payment_id]))
    assert stored[outcome.payment_id].decided_by == survivor.token
    assert banks.decisions_for(outcome.payment_id) == [], "it sent no decision of its own"
