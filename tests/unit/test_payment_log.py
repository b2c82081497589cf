"""The coordinator's durable log on a real (temporary) SQLite database: recording payments
with idempotency keys, storing decisions once, reading them back, forgetting old keys."""

from __future__ import annotations

import dataclasses
import re

from server.common.db import Database
from server.common.vocabulary import Reason
from server.gateway import payment_log
from server.gateway.payment_log import Deciding, Recorded, RecordKind
from server.gateway.payment_state import (
    COMMIT,
    CoordinatorState,
    Decision,
    PaymentOrder,
    PaymentView,
    abort,
)

ORDER = PaymentOrder(
    payer="alice",
    from_bank="alpha",
    from_account="A-1",
    to_bank="beta",
    to_account="B-1",
    amount=1_234,
    currency="USD",
    idempotency_key="key-1",
)


OWNER = 7  # the fencing token of the replica recording


def record(db: Database, *orders: PaymentOrder) -> list[Recorded]:
    return db.run_statements(lambda c: payment_log.record(c, list(orders), 5, OWNER))


def decide(db: Database, *decisions: tuple[str, Decision], owner: int = OWNER) -> list[PaymentView]:
    items = [Deciding(pid, decision, owner) for pid, decision in decisions]
    return db.run_statements(lambda c: payment_log.store_decisions(c, items))


def test_a_new_key_records_a_preparing_payment(gateway_db: Database) -> None:
    [recorded] = record(gateway_db, ORDER)
    assert recorded.kind is RecordKind.NEW
    assert recorded.payment is not None
    assert recorded.payment.state is CoordinatorState.PREPARING
    assert recorded.payment.deadline == recorded.payment.created_at + 5


def test_payment_ids_sort_by_creation_time() -> None:
    """Time first, so new payments are written at the end of every index on their id."""
    ids = [payment_log.new_payment_id(at) for at in (1_700_000_000.0, 1_700_000_000.001)]
    assert ids == sorted(ids) and ids[0] != ids[1]
    assert all(re.fullmatch("pay_[0-9a-f]{32}", payment_id) for payment_id in ids)
    assert payment_log.new_payment_id() != payment_log.new_payment_id(), "80 random bits"


def test_the_same_key_and_parameters_replay_the_first_payment(gateway_db: Database) -> None:
    [first] = record(gateway_db, ORDER)
    [again] = record(gateway_db, ORDER)
    assert again.kind is RecordKind.REPLAY
    assert again.payment is not None and first.payment is not None
    assert again.payment.id == first.payment.id


def test_the_same_key_with_other_parameters_is_refused(gateway_db: Database) -> None:
    record(gateway_db, ORDER)
    for change in ({"amount": 1}, {"to_account": "B-2"}, {"currency": "EUR"}, {"to_bank": "g"}):
        [other] = record(gateway_db, dataclasses.replace(ORDER, **change))  # type: ignore[arg-type]
        assert other.kind is RecordKind.KEY_REUSED, change
        assert other.payment is None, "the other payment is never shown"


def test_a_key_repeated_inside_one_round(gateway_db: Database) -> None:
    different = dataclasses.replace(ORDER, amount=99)
    first, second, third = record(gateway_db, ORDER, ORDER, different)
    assert first.kind is RecordKind.NEW
    assert second.kind is RecordKind.REPLAY
    assert first.payment is not None and second.payment is not None
    assert second.payment.id == first.payment.id
    assert third.kind is RecordKind.KEY_REUSED


def test_keys_belong_to_one_payer(gateway_db: Database) -> None:
    [alices] = record(gateway_db, ORDER)
    [bobs] = record(gateway_db, dataclasses.replace(ORDER, payer="bob", from_account="A-2"))
    assert bobs.kind is RecordKind.NEW
    assert alices.payment is not None and bobs.payment is not None
    assert bobs.payment.id != alices.payment.id
    assert bobs.payment.from_account == "A-2"


def test_a_decision_is_stored_once(gateway_db: Database) -> None:
    [recorded] = record(gateway_db, ORDER)
    assert recorded.payment is not None
    pid = recorded.payment.id
    [stranger] = decide(gateway_db, (pid, abort(Reason.TIMEOUT)), owner=OWNER + 1)
    assert stranger.state is CoordinatorState.PREPARING, "only its owner decides a payment"
    [first] = decide(gateway_db, (pid, COMMIT))
    [second] = decide(gateway_db, (pid, abort(Reason.TIMEOUT)))
    assert first.decided_now and first.state is CoordinatorState.COMMITTING
    assert not second.decided_now
    assert second.state is CoordinatorState.COMMITTING, "a decision never changes"
    gateway_db.run_statements(lambda c: payment_log.complete(c, [(pid, OWNER + 1)]))
    assert payment_log_state(gateway_db, pid) is CoordinatorState.COMMITTING
    gateway_db.run_statements(lambda c: payment_log.complete(c, [(pid, OWNER)]))
    assert payment_log_state(gateway_db, pid) is CoordinatorState.COMMITTED


def payment_log_state(db: Database, payment_id: str) -> CoordinatorState:
    return db.run_statements(lambda c: payment_log.by_ids(c, [payment_id]))[payment_id].state


def test_payments_read_by_id_come_back_as_recorded_and_decided(gateway_db: Database) -> None:
    [first, second] = record(gateway_db, ORDER, dataclasses.replace(ORDER, idempotency_key="k2"))
    assert first.payment is not None and second.payment is not None
    [decided] = decide(gateway_db, (first.payment.id, abort(Reason.INSUFFICIENT_FUNDS, "no")))
    ids = [first.payment.id, second.payment.id, "pay_unknown"]
    read = gateway_db.run_statements(lambda c: payment_log.by_ids(c, ids))
    assert set(read) == {first.payment.id, second.payment.id}, "an unknown id is left out"
    assert read[second.payment.id] == second.payment
    assert read[first.payment.id] == dataclasses.replace(decided, decided_now=False)
    assert read[first.payment.id].state is CoordinatorState.ABORTING
    assert (read[first.payment.id].reason_code, read[first.payment.id].reason) == (
        "INSUFFICIENT_FUNDS",
        "no",
    )


def test_expired_keys_are_forgotten_once_their_payment_finished(gateway_db: Database) -> None:
    finished, still_open = (
        r.payment
        for r in record(gateway_db, ORDER, dataclasses.replace(ORDER, idempotency_key="k2"))
    )
    assert finished is not None and still_open is not None
    decide(gateway_db, (finished.id, COMMIT))
    gateway_db.run_statements(lambda c: payment_log.complete(c, [(finished.id, OWNER)]))
    later = finished.created_at + 1
    assert gateway_db.run_sync(lambda s: payment_log.forget_keys(s, later)) >= 1
    [again, open_again] = record(
        gateway_db, ORDER, dataclasses.replace(ORDER, idempotency_key="k2")
    )
    assert again.kind is RecordKind.NEW, "the finished payment's key can be used again"
    assert open_again.kind is RecordKind.REPLAY, "an open payment keeps its key"
