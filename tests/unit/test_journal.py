"""The journal's rules without a network: the audit chain's hashing and verification, the
events a round's decisions make and who may read them, and the stream read by cursor over an
in-memory database (SQLite, the schema made from the models)."""

from __future__ import annotations

import dataclasses
import time

from sqlalchemy import create_engine

from minipay.audit import GENESIS, Head, Record, canonical, chain_hash, verify
from server.gateway import events, journal
from server.gateway.models import Base
from server.gateway.payment_state import CoordinatorState, PaymentView


def chain(*bodies: str) -> list[Record]:
    records, previous = [], GENESIS
    for sequence, body in enumerate(bodies, 1):
        digest = chain_hash(previous, body)
        records.append(Record(sequence, previous, digest, body))
        previous = digest
    return records


def test_an_empty_chain_holds_and_bodies_are_canonical() -> None:
    assert verify([]).ok and str(verify([]).head) == f"0:{GENESIS}"
    assert canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


def test_verify_names_the_first_record_that_does_not_match() -> None:
    records = chain("a", "b", "c")
    assert verify(records).ok and verify(records).head == Head(3, records[-1].hash)
    edited = [records[0], dataclasses.replace(records[1], body="B"), records[2]]
    assert verify(edited).at_sequence == 2
    assert verify([records[0], records[2]]).problem == "record 2 is missing"
    assert not verify([records[1], records[0], records[2]]).ok
    assert not verify(records[:2], expect_head=Head(3, records[2].hash)).ok  # truncated
    assert not verify(records, declared=Head(4, "0" * 64)).ok  # the gateway says more
    assert verify(records, expect_head=Head(2, records[1].hash)).ok
    assert Head.parse(str(Head(2, records[1].hash))) == Head(2, records[1].hash)


def payment(state: CoordinatorState, refund_of: str | None = None) -> PaymentView:
    return PaymentView(
        id="pay_1",
        payer="alice",
        from_bank="alpha",
        from_account="A-1",
        to_bank="beta",
        to_account="B-1",
        amount=500,
        currency="USD",
        state=state,
        reason_code="",
        reason="",
        deadline=0.0,
        created_at=1.0,
        decided_at=2.0,
        refund_of=refund_of,
        decided_now=True,
    )


def test_a_payee_reads_committed_payments_only() -> None:
    (committed,) = events.of_decisions([payment(CoordinatorState.COMMITTING)])
    assert committed.type is events.EventType.PAYMENT_COMMITTED
    assert (committed.payer_key, committed.payee_key) == ("alpha/A-1", "beta/B-1")
    (aborted,) = events.of_decisions([payment(CoordinatorState.ABORTING, refund_of="pay_0")])
    assert aborted.type is events.EventType.REFUND_ABORTED
    assert (aborted.payer_key, aborted.payee_key) == ("alpha/A-1", None)
    undecided = dataclasses.replace(payment(CoordinatorState.COMMITTING), decided_now=False)
    assert events.of_decisions([undecided]) == []


def test_the_stream_by_cursor_and_by_reader() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        journal.write(connection, events.of_decisions([payment(CoordinatorState.COMMITTING)]))
        journal.write(connection, [events.key_rotated(time.time(), replica="g", kid="k")])
        journal.write(connection, events.of_decisions([payment(CoordinatorState.ABORTING)]))
    with engine.begin() as connection:
        every = events.read(connection, events.Query(0, 10))
        assert [e.sequence for e in every.events] == [1, 2, 3] and every.next_after == 3
        payee = events.read(connection, events.Query(0, 10, reader="beta/B-1"))
        assert [e.sequence for e in payee.events] == [1] and payee.next_after == 3
        page = events.read(connection, events.Query(0, 2))
        assert page.next_after == 2  # a full page: go on from its last event
        assert (
            events.read(connection, events.Query(1, 10, (events.EventType.KEY_ROTATED,)))
            .events[0]
            .sequence
            == 2
        )
        assert events.read(connection, events.Query(0, 10)).events[0].payment().amount == 500
        assert events.prune(connection, older_than=time.time() + 10) == 3
        assert events.read(connection, events.Query(0, 10)).events == []
