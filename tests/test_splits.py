"""Split payments end to end on real clusters: one payment to several payees at several banks,
all or nothing. Three payees at three banks commit everywhere, seen by the payer whole and by
each payee as their own share (history, the payment, its trace with a lane per bank, the event
stream); a payee's bank voting no (a disabled account, an account that does not exist) or the
payer short of funds moves nothing anywhere; two payees at one bank, one of them the payer's;
kill -9 of the gateway and of a payee's bank mid-split leaves it committed everywhere or
nowhere, its key replaying the outcome; each payee refunds their own share (an admin names
the payee); every bad request is refused with its field and records nothing, asked as Pay
with shares and as an atomic PayBatch (which the library's ``pay_split`` sends); the command
line's ``pay-batch --atomic``.

After each test the books balance: every payment has all its entries or none, and no
payment or share is refunded beyond its amount."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
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
    PaymentStatus,
    SplitShare,
)
from minipay.v1 import common_pb2, gateway_pb2
from server.gateway.models import PaymentPayee
from tests.conftest import ClusterFactory
from tests.helpers import (
    ABORTED,
    COMMITTED,
    SEED_ACCOUNTS,
    SEED_PASSWORDS,
    Client,
    admin,
    assert_atomic,
    assert_reconciled,
    assert_refunds_within_payments,
    balances,
    customer,
    gateway_payments,
    gateway_url,
    ledger_entries,
    moved,
    refund_counts,
    settle,
    total_money,
)
from tests.test_refunds import Cli

ALICE, BOB, AMIR = SEED_ACCOUNTS["alice"], SEED_ACCOUNTS["bob"], SEED_ACCOUNTS["amir"]
CAROL, ERIN = SEED_ACCOUNTS["carol"], SEED_ACCOUNTS["erin"]
# alice (alpha) pays bob (alpha), carol (beta) and erin (gamma).
THREE = [SplitShare(*BOB, 1_000), SplitShare(*CAROL, 2_000), SplitShare(*ERIN, 3_000)]


def key() -> str:
    return f"split-{uuid.uuid4()}"


def raw_pay_error(client: Client, request: gateway_pb2.PayRequest) -> ApiError:
    """The error Pay answers REQUEST with: a request the library never sends."""

    async def send(gateway: GatewayClient) -> Any:
        return await gateway._call(gateway.payments.Pay, request)

    try:
        client.run(send)
    except ApiError as error:
        return error
    raise AssertionError("Pay accepted it")


def check_books(cluster: Cluster, money_before: int) -> None:
    assert_atomic(cluster, money_before)
    assert_refunds_within_payments(cluster)
    assert_shares_within_amounts(cluster)


def share_rows(cluster: Cluster) -> list[Any]:
    engine = create_engine(gateway_url(cluster))
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(PaymentPayee)))
    finally:
        engine.dispose()


def assert_shares_within_amounts(cluster: Cluster) -> None:
    """Each share refunded within its amount, and a split payment's counters their sum."""
    totals: dict[str, list[int]] = {}
    for row in share_rows(cluster):
        assert 0 <= row.refunded <= row.refund_reserved <= row.amount, row
        total = totals.setdefault(row.payment_id, [0, 0, 0])
        for index, value in enumerate((row.amount, row.refund_reserved, row.refunded)):
            total[index] += value
    counts = refund_counts(cluster)
    for payment_id, total in totals.items():
        assert tuple(total) == counts[payment_id], payment_id


# -- committed everywhere, and what each side sees ---------------------------------------------


@pytest.mark.in_process
def test_a_split_of_three_payees_at_three_banks_commits_everywhere(
    make_cluster: ClusterFactory, certs: Path, backend: str
) -> None:
    cluster = make_cluster(backend)
    alice, carol = customer(cluster, certs, "alice"), customer(cluster, certs, "carol")
    erin = customer(cluster, certs, "erin", cert="client-2")
    boss = admin(cluster, certs)
    money = total_money(cluster)
    before = balances(cluster)
    split_key = key()
    paid = alice.pay_split(THREE, idempotency_key=split_key)
    assert (paid.status, paid.amount_minor_units, paid.replayed) == (COMMITTED, 6_000, False)
    assert paid.direction is Direction.OUTGOING
    assert [(s.payee, s.amount_minor_units) for s in paid.shares] == [
        (AccountRef(*BOB), 1_000),
        (AccountRef(*CAROL), 2_000),
        (AccountRef(*ERIN), 3_000),
    ]
    settle(cluster)
    assert moved(before, balances(cluster)) == {
        ALICE: -6_000,
        BOB: 1_000,
        CAROL: 2_000,
        ERIN: 3_000,
    }
    # One payment id, one debit of the total, one credit per payee.
    assert ledger_entries(cluster, paid.payment_id) == {
        ("alpha", ALICE[1], -6_000),
        ("alpha", BOB[1], 1_000),
        ("beta", CAROL[1], 2_000),
        ("gamma", ERIN[1], 3_000),
    }
    # The key replays it.
    again = alice.pay_split(THREE, idempotency_key=split_key)
    assert (again.payment_id, again.status, again.replayed) == (paid.payment_id, COMMITTED, True)

    # The payer sees every share; each payee their own, as a payment of that share to them.
    mine = alice.payment(paid.payment_id)
    assert len(mine.shares) == 3 and mine.amount_minor_units == 6_000
    assert all(s.refundable_minor_units == 0 for s in mine.shares), "only payees see that"
    for who, account, amount in ((carol, CAROL, 2_000), (erin, ERIN, 3_000)):
        theirs = who.payment(paid.payment_id)
        assert theirs.direction is Direction.INCOMING
        assert (theirs.payee, theirs.amount_minor_units) == (AccountRef(*account), amount)
        assert [(s.payee, s.amount_minor_units) for s in theirs.shares] == [
            (AccountRef(*account), amount)
        ]
        assert theirs.refundable_minor_units == amount
        listed = who.history().payments
        assert [(p.payment_id, p.amount_minor_units) for p in listed] == [(paid.payment_id, amount)]
        incoming = who.history(direction=Direction.INCOMING).payments
        assert [p.payment_id for p in incoming] == [paid.payment_id]
        # The event stream: one event, read by the payer and by every payee.
        events = [e for e in who.events().events if e.payment is not None]
        assert [(e.type, e.payment.amount_minor_units) for e in events] == [
            ("payment.committed", amount)
        ]
        # Their trace: their own bank's vote, not the others'.
        story = who.payment_trace(paid.payment_id)
        voters = {s.bank for s in story.steps if s.kind == "VOTED"}
        assert voters == {account[0]}, voters
    assert [e.payment.amount_minor_units for e in alice.events().events if e.payment] == [6_000]
    # The payer's trace: a vote from every bank, an acknowledgement from every bank.
    story = alice.payment_trace(paid.payment_id)
    assert {s.bank for s in story.steps if s.kind == "VOTED"} == {"alpha", "beta", "gamma"}
    assert {s.bank for s in story.steps if s.kind == "ACKNOWLEDGED"} == {"alpha", "beta", "gamma"}
    assert len(story.shares) == 3
    # An admin sees it whole, and finds it by any payee's bank or account.
    seen = boss.admin_payment(paid.payment_id)
    assert len(seen.shares) == 3 and seen.amount_minor_units == 6_000
    by_account = boss.list_payments(bank="gamma", account=ERIN[1]).payments
    assert [p.payment_id for p in by_account] == [paid.payment_id]
    by_bank = boss.list_payments(bank="beta").payments
    assert paid.payment_id in [p.payment_id for p in by_bank]
    check_books(cluster, money)
    assert_reconciled(cluster, certs)  # the banks' books agree with the gateway's


@pytest.mark.in_process
def test_two_payees_at_one_bank_and_one_at_the_payer_s(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = make_cluster()
    carol = customer(cluster, certs, "carol")
    money = total_money(cluster)
    before = balances(cluster)
    # carol (beta) pays two accounts of alpha and one of her own bank.
    shares = [SplitShare(*ALICE, 500), SplitShare(*BOB, 700), SplitShare("beta", "B-2002", 11)]
    paid = carol.pay_split(shares, idempotency_key=key())
    assert paid.status == COMMITTED, paid
    settle(cluster)
    assert moved(before, balances(cluster)) == {
        CAROL: -1_211,
        ALICE: 500,
        BOB: 700,
        ("beta", "B-2002"): 11,
    }
    check_books(cluster, money)


# -- any no: nothing moves anywhere ------------------------------------------------------------


@pytest.mark.in_process
def test_any_bank_s_no_moves_nothing_anywhere(make_cluster: ClusterFactory, certs: Path) -> None:
    cluster = make_cluster()
    alice, bob = customer(cluster, certs, "alice"), customer(cluster, certs, "bob")
    boss = admin(cluster, certs)
    money = total_money(cluster)
    before = balances(cluster)
    boss.set_disabled("gamma", "erin", True)
    try:
        disabled = alice.pay_split(THREE, idempotency_key=key())
    finally:
        boss.set_disabled("gamma", "erin", False)
    assert (disabled.status, disabled.reason_code) == (ABORTED, "ACCOUNT_DISABLED"), disabled
    missing = alice.pay_split(
        [SplitShare(*BOB, 1), SplitShare("beta", "B-9999", 1)], idempotency_key=key()
    )
    assert (missing.status, missing.reason_code) == (ABORTED, "ACCOUNT_NOT_FOUND"), missing
    # bob has 50000: the payer's bank votes no, the payees' banks yes; nothing moves.
    short = bob.pay_split(
        [SplitShare(*CAROL, 40_000), SplitShare(*ERIN, 10_001)], idempotency_key=key()
    )
    assert (short.status, short.reason_code) == (ABORTED, "INSUFFICIENT_FUNDS"), short
    settle(cluster)
    assert moved(before, balances(cluster)) == {}
    for payment in (disabled, missing, short):
        assert ledger_entries(cluster, payment.payment_id) == set()
    # A payee never sees an aborted split, nor hears of it.
    erin = customer(cluster, certs, "erin")
    assert erin.history().payments == ()
    assert [e for e in erin.events().events if e.payment is not None] == []
    assert erin.error("payment", disabled.payment_id).code == grpc.StatusCode.NOT_FOUND
    check_books(cluster, money)


# -- kill -9 mid-split -------------------------------------------------------------------------

# (process to crash, fault, outcome the split's key must replay). alpha holds alice's debit
# and bob's credit; gamma erin's credit.
CRASHES = [
    (GATEWAY, "crash_after_record", ABORTED),
    (GATEWAY, "crash_after_decision", COMMITTED),
    (GATEWAY, "crash_after_first_commit_ack", COMMITTED),
    ("gamma", "crash_after_vote_yes", ABORTED),
    ("gamma", "crash_after_commit_applied", COMMITTED),
]


@pytest.mark.parametrize(
    ("victim", "fault", "outcome"), CRASHES, ids=[f"{c[0]}-{c[1]}" for c in CRASHES]
)
def test_kill_9_mid_split(
    shared_cluster: ClusterFactory, certs: Path, victim: str, fault: str, outcome: PaymentStatus
) -> None:
    cluster = shared_cluster()  # the crash points take turns on one cluster
    money = total_money(cluster)
    cluster.restart(victim, faults=fault)
    alice = customer(cluster, certs, "alice", register=False)
    before = balances(cluster)
    split_key = key()
    first: dict[str, Any] = {}

    def pay_once() -> None:
        try:
            first["answer"] = alice.pay_split(THREE, idempotency_key=split_key)
        except ApiError as error:
            first["error"] = error.code

    paying = threading.Thread(target=pay_once)
    paying.start()
    assert cluster.wait_exit(victim, timeout=30) == 97  # died at the injection point
    cluster.start_process(victim)
    cluster.wait_ready(victim)
    paying.join(60)
    assert not paying.is_alive()
    if "error" in first:
        assert first["error"] == grpc.StatusCode.UNAVAILABLE, first
    else:
        assert first["answer"].status == outcome, first["answer"]
    again = alice.pay_split(THREE, idempotency_key=split_key)
    assert (again.status, again.replayed) == (outcome, True), again
    settle(cluster)
    expected = (
        {ALICE: -6_000, BOB: 1_000, CAROL: 2_000, ERIN: 3_000} if outcome == COMMITTED else {}
    )
    assert moved(before, balances(cluster)) == expected
    check_books(cluster, money)
    assert_reconciled(cluster, certs)  # the banks' books agree with the gateway's


# -- per-share refunds -------------------------------------------------------------------------


@pytest.mark.in_process
def test_each_payee_refunds_their_own_share(make_cluster: ClusterFactory, certs: Path) -> None:
    cluster = make_cluster()
    alice, bob = customer(cluster, certs, "alice"), customer(cluster, certs, "bob")
    carol = customer(cluster, certs, "carol", cert="client-2")
    boss = admin(cluster, certs)
    money = total_money(cluster)
    paid = alice.pay_split(THREE, idempotency_key=key())
    pid = paid.payment_id
    settle(cluster)
    before = balances(cluster)

    part = bob.refund(pid, 400, idempotency_key=key())
    assert (part.status, part.amount_minor_units, part.refund_of) == (COMMITTED, 400, pid)
    assert (part.payer, part.payee) == (AccountRef(*BOB), AccountRef(*ALICE))
    rest = bob.refund(pid, idempotency_key=key())  # all that is left of his share
    assert (rest.status, rest.amount_minor_units) == (COMMITTED, 600)
    over = bob.error("refund", pid, 1, idempotency_key=key())
    assert (over.code, over.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REFUND_EXCEEDS_PAYMENT",
    )
    assert over.metadata["refundable_minor_units"] == "0"
    # carol's share is hers alone: more than it is refused, even with bob's left over.
    too_much = carol.error("refund", pid, 2_001, idempotency_key=key())
    assert too_much.reason == "REFUND_EXCEEDS_PAYMENT"
    assert too_much.metadata["refundable_minor_units"] == "2000"
    # The payer cannot refund it; an admin must name the payee.
    assert alice.error("refund", pid, 1, idempotency_key=key()).reason == "REFUND_NOT_ALLOWED"
    unnamed = boss.error("admin_refund", pid, 1, idempotency_key=key())
    assert (unnamed.code, unnamed.metadata.get("field")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "payee",
    )
    for_erin = boss.admin_refund(pid, 1_000, idempotency_key=key(), payee=AccountRef(*ERIN))
    assert (for_erin.status, for_erin.payer) == (COMMITTED, AccountRef(*ERIN))
    settle(cluster)
    assert moved(before, balances(cluster)) == {ALICE: 2_000, BOB: -1_000, ERIN: -1_000}
    # The payer sees the total refunded and every share's; each payee what is left of theirs.
    seen = alice.payment(pid)
    assert seen.refunded_minor_units == 2_000
    assert [s.refunded_minor_units for s in seen.shares] == [1_000, 0, 1_000]
    assert carol.payment(pid).refundable_minor_units == 2_000
    assert bob.payment(pid).refundable_minor_units == 0
    assert {r.payment_id for r in alice.payment(pid).refunds} == {
        part.payment_id,
        rest.payment_id,
        for_erin.payment_id,
    }
    check_books(cluster, money)
    assert_reconciled(cluster, certs)  # the banks' books agree with the gateway's


# -- bad input ---------------------------------------------------------------------------------


# A split payment is asked for either way: Pay with shares, or an atomic PayBatch (what the
# library's pay_split sends). The same checks, each naming its own way's fields.
VIA = ["Pay", "PayBatch"]


def wire_share(
    to: tuple[str, str] | None, minor_units: int | None = None, currency: str = "USD"
) -> gateway_pb2.Share:
    """A share as the wire carries it, with its payee or amount left out when None."""
    share = gateway_pb2.Share()
    if to is not None:
        share.payee.CopyFrom(common_pb2.AccountRef(bank=to[0], account=to[1]))
    if minor_units is not None:
        share.amount.CopyFrom(common_pb2.Money(minor_units=minor_units, currency=currency))
    return share


def split_request(
    via: str, shares: Sequence[gateway_pb2.Share], idempotency_key: str
) -> gateway_pb2.PayRequest | gateway_pb2.PayBatchRequest:
    if via == "Pay":
        return gateway_pb2.PayRequest(shares=shares, idempotency_key=idempotency_key)
    items = [
        gateway_pb2.PayBatchItem(
            to=share.payee if share.HasField("payee") else None,
            amount=share.amount if share.HasField("amount") else None,
        )
        for share in shares
    ]
    return gateway_pb2.PayBatchRequest(items=items, atomic=True, idempotency_key=idempotency_key)


def field_of(via: str, field: str) -> str:
    """A share's field as VIA names it: Pay's shares[1].payee is PayBatch's items[1].to."""
    return field if via == "Pay" else field.replace("shares", "items").replace(".payee", ".to")


def raw_split(
    client: Client, via: str, shares: Sequence[gateway_pb2.Share], idempotency_key: str
) -> tuple[gateway_pb2.Payment, bool]:
    """The split payment VIA answers with, and whether it replayed: every result of an atomic
    batch names it, the same."""

    async def send(gateway: GatewayClient) -> Any:
        method = gateway.payments.Pay if via == "Pay" else gateway.payments.PayBatch
        message, _ = await gateway._call(method, split_request(via, shares, idempotency_key))
        return message

    message = client.run(send)
    if via == "Pay":
        return message.payment, message.replayed
    assert len(message.results) == len(shares), message
    assert all(result == message.results[0] for result in message.results), message
    return message.results[0].payment, message.results[0].replayed


def raw_split_error(
    client: Client, via: str, shares: Sequence[gateway_pb2.Share], idempotency_key: str
) -> ApiError:
    try:
        raw_split(client, via, shares, idempotency_key)
    except ApiError as error:
        return error
    raise AssertionError(f"{via} accepted it")


@pytest.mark.in_process
@pytest.mark.parametrize("via", VIA)
def test_every_bad_split_is_refused_with_its_field_and_records_nothing(
    make_cluster: ClusterFactory, certs: Path, via: str
) -> None:
    cluster = make_cluster()
    alice = customer(cluster, certs, "alice")
    split_key = key()
    three = [wire_share((s.to_bank, s.to_account), s.amount_minor_units) for s in THREE]
    paid, replayed = raw_split(alice, via, three, split_key)
    assert (paid.status, replayed) == (gateway_pb2.PAYMENT_STATUS_COMMITTED, False)
    settle(cluster)
    books = gateway_payments(cluster), len(share_rows(cluster)), balances(cluster)
    big = 10**15
    cases = {
        "one payee": ([wire_share(BOB, 1)], "shares"),
        "101 payees": ([wire_share(("beta", f"X-{n}"), 1) for n in range(101)], "shares"),
        "the payer among them": ([wire_share(BOB, 1), wire_share(ALICE, 1)], "shares[1].payee"),
        "a payee twice": (
            [wire_share(BOB, 1), wire_share(CAROL, 1), wire_share(BOB, 2)],
            "shares[2].payee",
        ),
        "a total past the largest amount": (
            [wire_share(BOB, big), wire_share(CAROL, big)],
            "shares",
        ),
        "a share of nothing": (
            [wire_share(BOB, 1), wire_share(CAROL, 0)],
            "shares[1].amount.minor_units",
        ),
        "a negative share": (
            [wire_share(BOB, -5), wire_share(CAROL, 10)],
            "shares[0].amount.minor_units",
        ),
        "no account": ([wire_share(BOB, 1), wire_share(("beta", ""), 1)], "shares[1].payee"),
        "a bad account": (
            [wire_share(BOB, 1), wire_share(("beta", "no spaces"), 1)],
            "shares[1].payee.account",
        ),
        "mixed currencies": (
            [wire_share(BOB, 5), wire_share(CAROL, 5, "EUR")],
            "shares[1].amount.currency",
        ),
        "no payee": ([wire_share(BOB, 5), wire_share(None, 5)], "shares[1].payee"),
        "no amount": ([wire_share(BOB, 5), wire_share(CAROL)], "shares[1].amount"),
        "no key": ([wire_share(BOB, 5), wire_share(CAROL, 5)], "idempotency_key"),
    }
    for what, (shares, field) in cases.items():
        error = raw_split_error(alice, via, shares, "" if what == "no key" else key())
        assert (error.code, error.reason, error.metadata.get("field")) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            field_of(via, field),
        ), (what, error)
        assert error.message, what
    unknown = raw_split_error(
        alice, via, [wire_share(BOB, 1), wire_share(("nowhere", "N-1"), 1)], key()
    )
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "BANK_NOT_FOUND")
    assert unknown.metadata["field"] == field_of(via, "shares[1].payee.bank")
    if via == "Pay":  # a split with to (or amount) too
        with_to = gateway_pb2.PayRequest(
            to=common_pb2.AccountRef(bank="beta", account=CAROL[1]),
            shares=three[:2],
            idempotency_key=key(),
        )
        error = raw_pay_error(alice, with_to)
        assert (error.code, error.metadata.get("field")) == (grpc.StatusCode.INVALID_ARGUMENT, "to")

    # The same key with other payees (or another amount, or order): refused, not replayed.
    for other in (
        three[:2],
        [three[0], three[1], wire_share(ERIN, 3_001)],
        [three[1], three[0], three[2]],
    ):
        reused = raw_split_error(alice, via, other, split_key)
        assert (reused.code, reused.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "IDEMPOTENCY_KEY_REUSED",
        )
    # ... and a plain payment with the split's key too.
    plain = alice.error("pay", *BOB, 1_000, idempotency_key=split_key)
    assert plain.reason == "IDEMPOTENCY_KEY_REUSED"
    # The same shares and key replay it, either way: one payment however it was asked for.
    for again in VIA:
        replay, replayed = raw_split(alice, again, three, split_key)
        assert (replay.payment_id, replayed) == (paid.payment_id, True), again
    assert alice.pay_split(THREE, idempotency_key=split_key).payment_id == paid.payment_id
    assert (gateway_payments(cluster), len(share_rows(cluster)), balances(cluster)) == books


# -- the command line --------------------------------------------------------------------------


@pytest.mark.in_process
def test_pay_batch_atomic_pays_a_file_as_one_split_payment(
    make_cluster: ClusterFactory, certs: Path, tmp_path: Path
) -> None:
    cluster = make_cluster()
    customer(cluster, certs, "alice")  # registered once
    run = Cli(cluster, certs, tmp_path)
    login = ("login", "--username", "alice", "--password-stdin")
    assert run.run("client", *login, stdin=SEED_PASSWORDS["alice"] + "\n").returncode == 0
    money = total_money(cluster)
    before = balances(cluster)
    payroll = tmp_path / "split.csv"
    payroll.write_text(
        f"bank,account,amount\nalpha,{BOB[1]},10.00\nbeta,{CAROL[1]},20.00\ngamma,{ERIN[1]},30.50\n"
    )
    data = run.json("client", "pay-batch", str(payroll), "--atomic")
    assert (data["status"], data["committed"], data["rows"], data["calls"]) == (
        "COMMITTED",
        3,
        3,
        1,
    )
    results = (tmp_path / "split.results.csv").read_text().splitlines()
    assert len(results) == 4 and all(data["payment_id"] in line for line in results[1:])
    settle(cluster)
    assert moved(before, balances(cluster)) == {
        ALICE: -6_050,
        BOB: 1_000,
        CAROL: 2_000,
        ERIN: 3_050,
    }
    # The same file again replays it: nothing paid twice.
    again = run.json("client", "pay-batch", str(payroll), "--atomic")
    assert (again["payment_id"], again["replayed"]) == (data["payment_id"], 3)
    settle(cluster)
    assert moved(before, balances(cluster))[ALICE] == -6_050

    # A file that cannot be one split payment: its bad rows by line, nothing sent.
    bad = tmp_path / "bad.csv"
    bad.write_text(
        f"bank,account,amount,currency\nalpha,{BOB[1]},1.00,USD\nbeta,{CAROL[1]},1.00,EUR\n"
        f"alpha,{BOB[1]},2.00,USD\n"
    )
    refused = run.run("client", "pay-batch", str(bad), "--atomic")
    assert refused.returncode != 0
    assert "line 3" in refused.stderr and "line 4" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    alone = tmp_path / "alone.csv"
    alone.write_text(f"bank,account,amount\nalpha,{BOB[1]},1.00\n")
    one = run.run("client", "pay-batch", str(alone), "--atomic")
    assert one.returncode != 0 and "2 to 100 payees" in one.stderr, one.stderr
    # The gateway's refusal names the line: the payer among the payees.
    own = tmp_path / "own.csv"
    own.write_text(f"bank,account,amount\nalpha,{BOB[1]},1.00\nalpha,{ALICE[1]},1.00\n")
    mine = run.run("client", "pay-batch", str(own), "--atomic")
    assert mine.returncode != 0 and "line 3" in mine.stderr, mine.stderr
    settle(cluster)
    check_books(cluster, money)
