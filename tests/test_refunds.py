"""Refunds end to end on real clusters: partial refunds to the cent and then the rest, seen
from both sides and by an admin; a refund the payee cannot fund or whose payer is disabled
aborts and leaves the amount refundable; 50 concurrent refunds of one payment over three
replicas on PostgreSQL reserve exactly what fits; one key at two replicas at once makes one
refund; kill -9 of the gateway and of each bank during a refund; every bad input refused
with its own reason and nothing changed; the command lines from end to end.

After each test, no payment is refunded beyond its amount (``assert_refunds_within_payments``)
and the books balance."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, select

from devtools.cluster import GATEWAY, Cluster
from minipay.client.api import (
    AccountRef,
    ApiError,
    Direction,
    GatewayClient,
    Payment,
    PaymentKind,
    PaymentStatus,
)
from server.bank.models import LedgerEntry
from server.common.settings import GatewaySettings, environment
from tests import command_lines
from tests.conftest import ClusterFactory
from tests.helpers import (
    ABORTED,
    ADMIN,
    COMMITTED,
    SEED_ACCOUNTS,
    SEED_PASSWORDS,
    Client,
    admin,
    assert_atomic,
    assert_books_balance,
    assert_refunds_within_payments,
    balances,
    bank_url,
    client_config,
    customer,
    gateway_payments,
    moved,
    postgres_available,
    refund_counts,
    settle,
    total_money,
    wait_until,
)

ALICE, CAROL = SEED_ACCOUNTS["alice"], SEED_ACCOUNTS["carol"]  # alpha/A-1001, beta/B-2001


def key() -> str:
    return f"refund-{uuid.uuid4()}"


def refused(client: Client, *args: Any, **kwargs: Any) -> ApiError:
    return client.error("refund", *args, **kwargs)


def check_books(cluster: Cluster, money_before: int) -> None:
    assert_atomic(cluster, money_before)
    assert_refunds_within_payments(cluster)


# -- partial refunds, and what each side sees ---------------------------------------------------


@pytest.mark.in_process
def test_partial_refunds_to_the_cent_then_the_rest(
    make_cluster: ClusterFactory, certs: Path, backend: str
) -> None:
    cluster = make_cluster(backend)
    alice, carol = customer(cluster, certs, "alice"), customer(cluster, certs, "carol")
    boss = admin(cluster, certs)
    money = total_money(cluster)
    paid = alice.pay(*CAROL, 10_001)
    assert paid.status == COMMITTED
    settle(cluster)
    before = balances(cluster)

    cent = carol.refund(paid.payment_id, 1, idempotency_key=key())
    third = carol.refund(paid.payment_id, 3_333, idempotency_key=key())
    seen = carol.payment(paid.payment_id)
    assert (seen.refunded_minor_units, seen.refundable_minor_units) == (3_334, 6_667)
    # The payer sees what came back, and nothing of what the payee may still refund.
    theirs = alice.payment(paid.payment_id)
    assert (theirs.refunded_minor_units, theirs.refundable_minor_units) == (3_334, 0)
    rest = carol.refund(paid.payment_id, idempotency_key=key())  # no amount: all that is left
    for refund, amount in ((cent, 1), (third, 3_333), (rest, 6_667)):
        assert (refund.status, refund.amount_minor_units) == (COMMITTED, amount), refund
        assert (refund.kind, refund.refund_of) == (PaymentKind.REFUND, paid.payment_id)
        assert (refund.payer, refund.payee) == (paid.payee, paid.payer)
        assert refund.direction is Direction.OUTGOING and not refund.replayed
    settle(cluster)
    assert moved(before, balances(cluster)) == {ALICE: 10_001, CAROL: -10_001}

    # Nothing is left: refused with its reason, and how much is left (nothing).
    over = refused(carol, paid.payment_id, 1, idempotency_key=key())
    assert (over.code, over.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REFUND_EXCEEDS_PAYMENT",
    )
    assert over.metadata == {"payment_id": paid.payment_id, "refundable_minor_units": "0"}
    assert "refunded in full" in over.message

    # The payee sees what it gave back; the payer sees the money coming back; both the link.
    ids = [cent.payment_id, third.payment_id, rest.payment_id]
    for who, direction in ((carol, Direction.OUTGOING), (alice, Direction.INCOMING)):
        original = who.payment(paid.payment_id)
        assert (original.refunded_minor_units, original.refundable_minor_units) == (10_001, 0)
        assert [r.payment_id for r in original.refunds] == ids, "oldest first"
        assert {r.direction for r in original.refunds} == {direction}
        refunds = who.history(kind=PaymentKind.REFUND).payments
        assert [r.payment_id for r in refunds] == ids[::-1], "newest first"
        assert all(r.refund_of == paid.payment_id for r in refunds)
        payments = who.history(kind=PaymentKind.PAYMENT).payments
        assert [p.payment_id for p in payments] == [paid.payment_id]
    # An admin sees all of it, from neither side, and picks refunds out of every payment.
    seen = boss.admin_payment(paid.payment_id)
    assert seen.direction is None and seen.refunded_minor_units == 10_001
    assert [r.payment_id for r in seen.refunds] == ids
    listed = boss.list_payments(kind=PaymentKind.REFUND, bank="beta", account="B-2001")
    assert [p.payment_id for p in listed.payments] == ids[::-1]
    check_books(cluster, money)


@pytest.mark.in_process
def test_neither_side_sees_the_other_s_reasons(make_cluster: ClusterFactory, certs: Path) -> None:
    """An aborted refund: its payer (the refunding payee) sees why; the original's payer does
    not see it at all, as for any payment that did not commit to them."""
    cluster = make_cluster()
    alice, carol = customer(cluster, certs, "alice"), customer(cluster, certs, "carol")
    boss = admin(cluster, certs)
    money = total_money(cluster)
    paid = alice.pay(*CAROL, 500)
    boss.set_disabled(ALICE[0], "alice", True)
    try:
        failed = carol.refund(paid.payment_id, idempotency_key=key())
    finally:
        boss.set_disabled(ALICE[0], "alice", False)
    alice = customer(cluster, certs, "alice", register=False)  # a disabled user's tokens go
    assert (failed.status, failed.reason_code) == (ABORTED, "ACCOUNT_DISABLED"), failed
    assert carol.payment(paid.payment_id).refunds[0].reason_code == "ACCOUNT_DISABLED"
    assert alice.payment(paid.payment_id).refunds == ()
    assert alice.error("payment", failed.payment_id).reason == "PAYMENT_NOT_FOUND"
    # The amount is refundable again, and now the refund goes through.
    assert carol.payment(paid.payment_id).refundable_minor_units == 500
    done = carol.refund(paid.payment_id, idempotency_key=key())
    assert done.status == COMMITTED
    [back] = alice.payment(paid.payment_id).refunds
    assert (back.payment_id, back.direction, back.reason) == (
        done.payment_id,
        Direction.INCOMING,
        "",
    )
    check_books(cluster, money)


@pytest.mark.in_process
def test_a_refund_the_payee_cannot_fund_aborts_and_can_be_made_again(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = make_cluster()
    alice, carol = customer(cluster, certs, "alice"), customer(cluster, certs, "carol")
    boss = admin(cluster, certs)
    money = total_money(cluster)
    paid = alice.pay(*CAROL, 5_000)
    # Carol spends everything she has, the 50.00 from alice too.
    everything = carol.balance().available_minor_units
    assert carol.pay(*SEED_ACCOUNTS["dave"], everything).status == COMMITTED
    settle(cluster)
    before = balances(cluster)
    failed = carol.refund(paid.payment_id, idempotency_key=key())
    assert (failed.status, failed.reason_code) == (ABORTED, "INSUFFICIENT_FUNDS"), failed
    assert failed.amount_minor_units == 5_000
    settle(cluster)
    assert balances(cluster) == before, "nothing moved"
    assert carol.payment(paid.payment_id).refundable_minor_units == 5_000
    boss.deposit(*CAROL, 2_000, idempotency_key=key())
    money += 2_000
    part = carol.refund(paid.payment_id, 2_000, idempotency_key=key())
    assert part.status == COMMITTED
    assert carol.payment(paid.payment_id).refundable_minor_units == 3_000
    check_books(cluster, money)


@pytest.mark.in_process
def test_a_refund_reaches_the_payee_s_bank_after_the_payment_it_gives_back(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    """The gateway sends no decision on its own (withheld): the payment carol refunds is
    committed but its credit has not reached her bank when she asks. The refund delivers it
    first, so her bank applies the credit before the refund's debit, which it can fund only
    from that credit."""
    cluster = make_cluster(faults={GATEWAY: "withhold_decisions"})
    alice, carol = customer(cluster, certs, "alice"), customer(cluster, certs, "carol")
    money = total_money(cluster)
    # Carol has nothing but what alice pays her (the balance read delivers her payment).
    assert carol.pay(*SEED_ACCOUNTS["dave"], carol.balance().available_minor_units).status == (
        COMMITTED
    )
    paid = alice.pay(*CAROL, 4_000)
    refund = carol.refund(paid.payment_id, idempotency_key=key())
    assert (refund.status, refund.reason_code) == (COMMITTED, ""), refund
    carol.balance()  # delivers the refund's decision too
    entries = bank_entries(cluster, "beta", CAROL[1])
    assert [payment for payment, _ in entries[-2:]] == [paid.payment_id, refund.payment_id]
    # Nothing is delivered but by asking: the banks learn the rest once in doubt; the
    # gateway never hears their acknowledgements, so it is not settled, and need not be.
    wait_until(lambda: banks_settled(cluster), 30, "the banks to ask and apply every decision")
    assert total_money(cluster) == money
    assert_refunds_within_payments(cluster)


def banks_settled(cluster: Cluster) -> bool:
    try:
        assert_books_balance(cluster)
    except AssertionError:
        return False
    return True


def bank_entries(cluster: Cluster, bank: str, account: str) -> list[tuple[str, int]]:
    """The account's ledger, in the order its bank wrote it: (payment id, amount)."""
    engine = create_engine(bank_url(cluster, bank))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(LedgerEntry.payment_id, LedgerEntry.amount)
                .where(LedgerEntry.account_number == account)
                .order_by(LedgerEntry.id)
            )
            return [(str(row.payment_id), int(row.amount)) for row in rows]
    finally:
        engine.dispose()


# -- concurrent refunds over replicas -----------------------------------------------------------


@pytest.mark.skipif(not postgres_available(), reason="replicas need PostgreSQL")
def test_concurrent_refunds_over_three_replicas_refund_exactly_the_amount(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = make_cluster("postgres", env=environment(GatewaySettings, lease=1.5), gateways=3)
    alice, carol = customer(cluster, certs, "alice"), customer(cluster, certs, "carol")
    money = total_money(cluster)
    paid = alice.pay(*CAROL, 1_000)
    assert paid.status == COMMITTED
    replicas = [cluster.address(name) for name in cluster.gateway_names]
    twins = [key() for _ in range(5)]  # each sent to two replicas at once

    async def all_at_once() -> list[Payment | BaseException]:
        clients = [
            GatewayClient(client_config(cluster, certs, gateway=address), carol.token)
            for address in replicas
        ]
        try:
            calls = [
                clients[i % 3].refund(paid.payment_id, 100, idempotency_key=key())
                for i in range(50)
            ]
            calls += [
                clients[i % 3].refund(paid.payment_id, 100, idempotency_key=twin)
                for twin in twins
                for i in range(2)
            ]
            # And some ask for all that is left, whatever that is when they are recorded.
            calls += [
                clients[i % 3].refund(paid.payment_id, idempotency_key=key()) for i in range(5)
            ]
            return list(await asyncio.gather(*calls, return_exceptions=True))
        finally:
            for client in clients:
                await client.close()

    settle(cluster)
    before = balances(cluster)
    answers = asyncio.run(all_at_once())
    refunds = [a for a in answers if isinstance(a, Payment)]
    errors = [a for a in answers if not isinstance(a, Payment)]
    unexpected = [e for e in errors if getattr(e, "reason", "") != "REFUND_EXCEEDS_PAYMENT"]
    assert not unexpected, unexpected
    assert all(r.status == COMMITTED for r in refunds), refunds
    # Exactly what fits: refunds of 1.00 (and the rest of what was left) of 10.00, all of it.
    made = Counter(r.payment_id for r in refunds)
    amounts = {r.payment_id: r.amount_minor_units for r in refunds}
    assert sum(amounts.values()) == 1_000, amounts
    # A twin's two answers name one refund, one of them replayed (or both were refused).
    assert all(count <= 2 for count in made.values())
    assert sum(r.replayed for r in refunds) == sum(count - 1 for count in made.values())
    assert refund_counts(cluster)[paid.payment_id] == (1_000, 1_000, 1_000)
    settle(cluster)
    assert moved(before, balances(cluster)) == {ALICE: 1_000, CAROL: -1_000}
    check_books(cluster, money)
    keys = Counter(k for _, k in gateway_payments(cluster).values() if k)
    assert all(count == 1 for count in keys.values()), "a key made two refunds"


# -- kill -9 during a refund --------------------------------------------------------------------

# (process to crash, fault, outcome the refund's key must replay). beta holds carol's
# account (the refund's debit), alpha alice's (its credit).
CRASHES = [
    (GATEWAY, "crash_after_record", ABORTED),
    (GATEWAY, "crash_after_decision", COMMITTED),
    (GATEWAY, "crash_after_first_commit_ack", COMMITTED),
    ("beta", "crash_after_vote_yes", ABORTED),
    ("beta", "crash_after_commit_applied", COMMITTED),
    ("alpha", "crash_after_vote_yes", ABORTED),
    ("alpha", "crash_after_commit_applied", COMMITTED),
]


@pytest.mark.parametrize(
    ("victim", "fault", "outcome"), CRASHES, ids=[f"{c[0]}-{c[1]}" for c in CRASHES]
)
def test_kill_9_during_a_refund(
    shared_cluster: ClusterFactory, certs: Path, victim: str, fault: str, outcome: PaymentStatus
) -> None:
    cluster = shared_cluster()  # the crash points take turns on one cluster
    alice = customer(cluster, certs, "alice", register=False)
    money = total_money(cluster)
    paid = alice.pay(*CAROL, 2_500)
    settle(cluster)
    cluster.restart(victim, faults=fault)
    carol = customer(cluster, certs, "carol", register=False)
    before = balances(cluster)
    refund_key = key()
    first: dict[str, Any] = {}

    def refund_once() -> None:
        try:
            first["answer"] = carol.refund(paid.payment_id, 1_000, idempotency_key=refund_key)
        except ApiError as error:
            first["error"] = error.code

    refunding = threading.Thread(target=refund_once)
    refunding.start()
    assert cluster.wait_exit(victim, timeout=30) == 97  # died at the injection point
    cluster.start_process(victim)
    cluster.wait_ready(victim)
    refunding.join(60)
    assert not refunding.is_alive()
    if "error" in first:
        assert first["error"] == grpc.StatusCode.UNAVAILABLE, first
    else:
        assert first["answer"].status == outcome, first["answer"]
    # The key replays the final outcome, whoever asks again.
    again = carol.refund(paid.payment_id, 1_000, idempotency_key=refund_key)
    assert (again.status, again.replayed) == (outcome, True), again
    if "answer" in first:
        assert first["answer"].payment_id == again.payment_id
    settle(cluster)
    back = 1_000 if outcome == COMMITTED else 0
    assert moved(before, balances(cluster)) == ({ALICE: back, CAROL: -back} if back else {})
    left = carol.payment(paid.payment_id).refundable_minor_units
    assert left == 2_500 - back, "an aborted refund's amount is refundable again"
    check_books(cluster, money)
    # And what is left can still be refunded, once.
    assert carol.refund(paid.payment_id, idempotency_key=key()).amount_minor_units == left
    check_books(cluster, money)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.in_process
def test_every_bad_refund_is_refused_with_its_reason_and_changes_nothing(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = make_cluster()
    alice, carol = customer(cluster, certs, "alice"), customer(cluster, certs, "carol")
    dave = customer(cluster, certs, "dave", cert="client-2")
    boss = admin(cluster, certs)
    paid = alice.pay(*CAROL, 1_000)
    pid = paid.payment_id
    other = alice.pay(*CAROL, 300)
    aborted = alice.pay(*CAROL, 10**12)  # more than alice has
    assert aborted.status == ABORTED
    refund_key, pay_key = key(), key()
    back = carol.refund(pid, 100, idempotency_key=refund_key)
    carol.pay(*ALICE, 1, idempotency_key=pay_key)
    settle(cluster)
    books = gateway_payments(cluster), refund_counts(cluster), balances(cluster)
    invalid, failed = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    not_found, denied = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED
    cases: list[tuple[str, ApiError, grpc.StatusCode, str, dict[str, str]]] = [
        (
            f"amount {amount}",
            refused(carol, pid, amount, idempotency_key=key()),
            invalid,
            "INVALID_FIELD",
            {"field": "amount.minor_units"},
        )
        for amount in (0, -5, 10**15 + 1)
    ]
    cases += [
        (
            f"currency {currency}",
            refused(carol, pid, 100, currency, idempotency_key=key()),
            invalid,
            "INVALID_FIELD",
            {"field": "amount.currency"},
        )
        for currency in ("EUR", "XYZ")
    ]
    cases += [
        (
            "more than is left",
            refused(carol, pid, 901, idempotency_key=key()),
            failed,
            "REFUND_EXCEEDS_PAYMENT",
            {"payment_id": pid, "refundable_minor_units": "900"},
        ),
        (
            "a stranger's",
            refused(dave, pid, 1, idempotency_key=key()),
            not_found,
            "PAYMENT_NOT_FOUND",
            {"payment_id": pid},
        ),
        (
            "the payer's",
            refused(alice, pid, 1, idempotency_key=key()),
            denied,
            "REFUND_NOT_ALLOWED",
            {"payment_id": pid},
        ),
        (
            "aborted, to its payee",
            refused(carol, aborted.payment_id, 1, idempotency_key=key()),
            not_found,
            "PAYMENT_NOT_FOUND",
            {},
        ),
        (
            "aborted, to an admin",
            boss.error("admin_refund", aborted.payment_id, idempotency_key=key()),
            failed,
            "PAYMENT_NOT_REFUNDABLE",
            {"status": "ABORTED"},
        ),
        (
            "a refund",
            refused(alice, back.payment_id, 1, idempotency_key=key()),
            failed,
            "PAYMENT_NOT_REFUNDABLE",
            {"payment_id": back.payment_id, "status": "COMMITTED"},
        ),
        (
            "the key with another amount",
            refused(carol, pid, 101, idempotency_key=refund_key),
            invalid,
            "IDEMPOTENCY_KEY_REUSED",
            {},
        ),
        (
            "the key for the rest",
            refused(carol, pid, idempotency_key=refund_key),
            invalid,
            "IDEMPOTENCY_KEY_REUSED",
            {},
        ),
        (
            "the key for another payment",
            refused(carol, other.payment_id, 100, idempotency_key=refund_key),
            invalid,
            "IDEMPOTENCY_KEY_REUSED",
            {},
        ),
        (
            "a payment's key",
            refused(carol, pid, 1, idempotency_key=pay_key),
            invalid,
            "IDEMPOTENCY_KEY_REUSED",
            {},
        ),
        (
            "no key",
            refused(carol, pid, 1, idempotency_key=" "),
            invalid,
            "INVALID_FIELD",
            {"field": "idempotency_key"},
        ),
        (
            "an id with a space",
            refused(carol, "no such id", 1, idempotency_key=key()),
            invalid,
            "INVALID_FIELD",
            {"field": "payment_id"},
        ),
    ]
    for what, error, code, reason, metadata in cases:
        assert (error.code, error.reason) == (code, reason), (what, error)
        assert metadata.items() <= error.metadata.items(), (what, error.metadata)
    # Not theirs to refund: a stranger learns exactly what a made-up id gets.
    made_up = refused(dave, "pay_" + "0" * 32, 1, idempotency_key=key())
    assert made_up.message == cases[6][1].message
    settle(cluster)
    assert (gateway_payments(cluster), refund_counts(cluster), balances(cluster)) == books
    # The same key and request again: the first refund, nothing more.
    again = carol.refund(pid, 100, idempotency_key=refund_key)
    assert (again.payment_id, again.replayed) == (back.payment_id, True)
    settle(cluster)
    assert (gateway_payments(cluster), refund_counts(cluster), balances(cluster)) == books


@pytest.mark.in_process
def test_an_admin_refunds_on_the_payee_s_behalf_once_committed(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = make_cluster(faults={"beta": "delay_prepare=2"})
    alice = customer(cluster, certs, "alice")
    boss = admin(cluster, certs)
    money = total_money(cluster)
    paying = threading.Thread(target=lambda: alice.pay(*CAROL, 700, idempotency_key="slow"))
    paying.start()
    try:
        deadline = time.monotonic() + 20
        listed: tuple[Payment, ...] = ()
        while not listed and time.monotonic() < deadline:
            listed = boss.list_payments(status=PaymentStatus.PENDING).payments
        [pending] = listed
        error = boss.error("admin_refund", pending.payment_id, idempotency_key=key())
    finally:
        paying.join(30)
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAYMENT_NOT_REFUNDABLE",
    )
    assert error.metadata == {"payment_id": pending.payment_id, "status": "PENDING"}
    # A payee that is not the payment's is refused; the admin names none, or the right one.
    wrong = boss.error(
        "admin_refund", pending.payment_id, idempotency_key=key(), payee=AccountRef(*ALICE)
    )
    assert (wrong.code, wrong.metadata.get("field")) == (grpc.StatusCode.INVALID_ARGUMENT, "payee")
    done = boss.admin_refund(pending.payment_id, 200, idempotency_key="k", payee=AccountRef(*CAROL))
    assert (done.status, done.payer, done.payee, done.direction) == (
        COMMITTED,
        pending.payee,
        pending.payer,
        None,
    )
    carol = customer(cluster, certs, "carol")
    [seen] = carol.payment(pending.payment_id).refunds
    assert (seen.payment_id, seen.direction) == (done.payment_id, Direction.OUTGOING)
    # The admin's keys are the admin's own: the same key from carol is a refund of hers.
    mine = carol.refund(pending.payment_id, 300, idempotency_key="k")
    assert (mine.status, mine.replayed) == (COMMITTED, False)
    assert mine.payment_id != done.payment_id
    assert boss.admin_refund(pending.payment_id, 200, idempotency_key="k").replayed
    check_books(cluster, money)


# -- the command lines ----------------------------------------------------------------------------


class Cli:
    """The customer's and the admin's command lines, each with a home of its own (their
    main() in this process: tests/command_lines.py)."""

    def __init__(self, cluster: Cluster, certs: Path, home: Path) -> None:
        self.cluster, self.certs, self.home = cluster, certs, home

    def run(self, tool: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        cert = "admin" if tool == "admin" else "client-1"
        given = command_lines.variables(
            self.certs, self.cluster.gateway_address, self.home / tool, cert
        )
        return command_lines.run_here(tool, args, given, stdin)

    def ok(self, tool: str, *args: str) -> str:
        result = self.run(tool, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def json(self, tool: str, *args: str) -> Any:
        return json.loads(self.ok(tool, "--json", *args))


@pytest.mark.in_process
def test_refunds_from_the_command_lines(
    make_cluster: ClusterFactory, certs: Path, tmp_path: Path
) -> None:
    cluster = make_cluster()
    alice = customer(cluster, certs, "alice")
    customer(cluster, certs, "carol")  # registered once
    run = Cli(cluster, certs, tmp_path)
    login = ("login", "--username", "carol", "--password-stdin")
    assert run.run("client", *login, stdin=SEED_PASSWORDS["carol"] + "\n").returncode == 0
    admin_login = ("login", "--username", ADMIN[0], "--password-stdin")
    assert run.run("admin", *admin_login, stdin=ADMIN[1] + "\n").returncode == 0
    money = total_money(cluster)
    paid = alice.pay(*CAROL, 1_000).payment_id

    part = ("refund", paid, "--amount", "2.50", "--idempotency-key", "cli-1")
    text = run.ok("client", *part)
    assert re.fullmatch(
        rf"refund pay_[0-9a-f]{{32}} COMMITTED: 2\.50 USD to alpha/A-1001, refund of {paid}\n",
        text,
    ), text
    assert run.ok("client", *part).endswith("[replayed: this key was used before]\n")
    rest = run.json("client", "refund", paid)
    assert (rest["kind"], rest["refund_of"], rest["status"]) == ("refund", paid, "COMMITTED")
    assert (rest["amount"], rest["amount_minor_units"], rest["replayed"]) == ("7.50", 750, False)
    over = run.run("client", "refund", paid, "--amount", "0.01")
    assert over.returncode == 1, over.stderr
    assert over.stderr.startswith("error: FAILED_PRECONDITION (REFUND_EXCEEDS_PAYMENT): ")
    assert len(over.stderr.splitlines()) == 1

    shown = run.ok("client", "payment", paid).splitlines()
    assert shown[0] == f"payment {paid} COMMITTED: 10.00 USD from alpha/A-1001"
    assert "refunded 10.00 USD, refundable 0.00 USD" in shown
    assert [line.split()[1] for line in shown if line.startswith("  refund ")] == [
        text.split()[1],
        rest["payment_id"],
    ]
    found = run.json("client", "payment", paid)
    assert (found["refunded_minor_units"], found["refundable_minor_units"]) == (1_000, 0)
    assert [r["amount_minor_units"] for r in found["refunds"]] == [250, 750]
    history = run.json("client", "history", "--kind", "refund")
    assert [p["refund_of"] for p in history["payments"]] == [paid, paid]

    listed = run.json("admin", "payments", "--kind", "refund", "--bank", "beta")
    assert [p["payment_id"] for p in listed["payments"]] == [
        rest["payment_id"],
        text.split()[1],
    ]
    assert all(p["direction"] == "" for p in listed["payments"])
    assert paid in run.ok("admin", "payments", "--status", "committed", "--kind", "payment")
    assert run.ok("admin", "payment", paid).splitlines()[0] == (
        f"payment {paid} COMMITTED: 10.00 USD from alpha/A-1001 to beta/B-2001"
    )
    other = alice.pay(*CAROL, 300).payment_id
    by_admin = run.ok("admin", "refund", other, "--amount", "1.00")
    assert by_admin.startswith("refund pay_") and " COMMITTED: 1.00 USD from beta/B-2001 to " in (
        by_admin
    )
    nothing = run.run("admin", "payments", "--account", "B-2001")
    assert nothing.returncode == 2 and "--account needs --bank" in nothing.stderr
    check_books(cluster, money)
