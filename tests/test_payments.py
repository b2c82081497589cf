"""Payments end to end on real clusters: commits within and across banks, aborts (no funds,
a slow bank, a bank that is down), bad input, idempotency keys, money conservation under
concurrent load on both database backends, and the client's retries across a gateway restart.

Most tests share one cluster (module scope) and compare balances before and after; tests that
need faults, other settings or a process killed start their own."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from devtools.cluster import GATEWAY, Cluster
from minipay.client.api import (
    AccountRef,
    ApiError,
    ClientConfig,
    Direction,
    GatewayClient,
    HistoryPage,
    Payment,
    RetryPolicy,
)
from minipay.v1 import bank_pb2, bank_pb2_grpc, common_pb2, gateway_pb2, gateway_pb2_grpc
from server.bank.models import ParticipantState as BankState
from server.common.settings import GatewaySettings, environment
from server.gateway.payment_state import CoordinatorState
from tests.conftest import TEST_ENV, ClusterFactory
from tests.helpers import (
    ABORTED,
    COMMITTED,
    SEED_ACCOUNTS,
    Client,
    admin,
    aio_channel,
    assert_books_balance,
    balances,
    bank_state,
    client_config,
    customer,
    gateway_payments,
    ledger_entries,
    log_in_everyone,
    moved,
    server_env,
    settle,
    settled,
    total_money,
    wait_until,
)
from tests.inprocess import in_process_cluster

# -- helpers ----------------------------------------------------------------------------------


def history_entry(client: Client, payment_id: str) -> Payment:
    page: HistoryPage = client.history(page_size=200)
    entries = [e for e in page.payments if e.payment_id == payment_id]
    assert len(entries) == 1, f"{payment_id} appears {len(entries)} times in the history"
    return entries[0]


# -- the shared cluster -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[Cluster]:
    """In this process (tests/inprocess.py): payments between real banks over real TLS."""
    with in_process_cluster(tmp_path_factory.mktemp("payments"), certs, TEST_ENV) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def people(shared: Cluster, certs: Path) -> dict[str, Client]:
    """Every seed customer, registered once and logged in."""
    return {name: customer(shared, certs, name) for name in SEED_ACCOUNTS}


# -- payments that commit ---------------------------------------------------------------------


def test_cross_bank_payment_commits(shared: Cluster, people: dict[str, Client]) -> None:
    alice, carol = people["alice"], people["carol"]
    before = balances(shared)
    answer = alice.pay("beta", "B-2001", 1234)
    assert answer.status == COMMITTED, answer
    assert answer.payment_id.startswith("pay_")
    assert (answer.reason_code, answer.replayed) == ("", False)
    settle(shared)  # the client may hear the outcome before every bank applied it
    after = balances(shared)
    assert moved(before, after) == {("alpha", "A-1001"): -1234, ("beta", "B-2001"): 1234}
    assert ledger_entries(shared, answer.payment_id) == {
        ("alpha", "A-1001", -1234),
        ("beta", "B-2001", 1234),
    }
    mine = alice.balance()
    assert (mine.bank, mine.account, mine.currency) == ("alpha", "A-1001", "USD")
    assert mine.balance_minor_units == after["alpha", "A-1001"]
    assert mine.available_minor_units == after["alpha", "A-1001"]
    assert mine.held_minor_units == 0
    assert carol.balance().balance_minor_units == after["beta", "B-2001"]

    alices = AccountRef("alpha", "A-1001")
    sent = history_entry(alice, answer.payment_id)
    assert sent.direction is Direction.OUTGOING
    assert sent.counterparty == AccountRef("beta", "B-2001")
    received = history_entry(carol, answer.payment_id)
    assert received.direction is Direction.INCOMING
    assert received.counterparty == alices
    for entry in (sent, received, carol.payment(answer.payment_id)):
        assert (entry.payer, entry.payee) == (alices, AccountRef("beta", "B-2001"))
        assert (entry.amount_minor_units, entry.currency) == (1234, "USD")
        assert entry.status == COMMITTED
        assert entry.created_at == answer.created_at
        assert abs(entry.created_at.timestamp() - time.time()) < 3600  # a real time
        assert entry.decided_at is not None and entry.decided_at >= entry.created_at


def test_same_bank_payment_commits(shared: Cluster, people: dict[str, Client]) -> None:
    alice, bob = people["alice"], people["bob"]
    before = balances(shared)
    answer = alice.pay("alpha", "A-1002", 500)
    assert answer.status == COMMITTED, answer
    settle(shared)
    assert moved(before, balances(shared)) == {("alpha", "A-1001"): -500, ("alpha", "A-1002"): 500}
    assert ledger_entries(shared, answer.payment_id) == {
        ("alpha", "A-1001", -500),
        ("alpha", "A-1002", 500),
    }
    assert history_entry(alice, answer.payment_id).direction is Direction.OUTGOING
    received = history_entry(bob, answer.payment_id)
    assert received.direction is Direction.INCOMING
    assert received.counterparty == AccountRef("alpha", "A-1001")


# -- payments that abort ----------------------------------------------------------------------


def test_insufficient_funds_aborts(shared: Cluster, people: dict[str, Client]) -> None:
    amir = people["amir"]
    before = balances(shared)
    total = total_money(shared)
    answer = amir.pay("gamma", "G-3001", before["alpha", "A-1003"] + 1)
    assert answer.status == ABORTED, answer
    assert answer.reason_code == "INSUFFICIENT_FUNDS"
    assert "insufficient funds" in answer.reason
    settle(shared)
    assert balances(shared) == before
    assert total_money(shared) == total
    assert ledger_entries(shared, answer.payment_id) == set()
    assert amir.balance().available_minor_units == before["alpha", "A-1003"]
    assert history_entry(amir, answer.payment_id).status == ABORTED
    looked_up = amir.payment(answer.payment_id)
    assert (looked_up.status, looked_up.reason_code) == (ABORTED, "INSUFFICIENT_FUNDS")


def test_the_payee_never_learns_why_a_payment_failed(
    shared: Cluster, people: dict[str, Client]
) -> None:
    amir, carol = people["amir"], people["carol"]
    answer = amir.pay("beta", "B-2001", balances(shared)["alpha", "A-1003"] + 1)
    assert answer.status == ABORTED
    assert "insufficient funds" in history_entry(amir, answer.payment_id).reason
    # A payee sees only payments that committed to it, and never a reason about the payer.
    seen = {e.payment_id: e for e in carol.history(page_size=200).payments}
    assert answer.payment_id not in seen
    assert all(not e.reason for e in seen.values() if e.direction is Direction.INCOMING)
    # Nor can it look the payment up: it is answered like one that does not exist.
    error = carol.error("payment", answer.payment_id)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND")


def test_customers_of_one_bank_see_only_their_own_history(
    shared: Cluster, people: dict[str, Client]
) -> None:
    alice, bob = people["alice"], people["bob"]
    paid = alice.pay("gamma", "G-3003", 111)
    assert paid.status == COMMITTED
    assert paid.payment_id not in {e.payment_id for e in bob.history(page_size=200).payments}
    assert bob.error("payment", paid.payment_id).reason == "PAYMENT_NOT_FOUND"


def test_idempotency_keys_belong_to_one_customer(
    shared: Cluster, people: dict[str, Client]
) -> None:
    key = f"shared-key-{uuid.uuid4()}"
    alices = people["alice"].pay("gamma", "G-3002", 100, idempotency_key=key)
    bobs = people["bob"].pay("gamma", "G-3002", 100, idempotency_key=key)
    assert not bobs.replayed
    assert bobs.payment_id != alices.payment_id
    settle(shared)
    assert ledger_entries(shared, bobs.payment_id) == {
        ("alpha", "A-1002", -100),
        ("gamma", "G-3002", 100),
    }


@pytest.mark.in_process
def test_payments_in_separate_rounds_cannot_spend_one_balance_twice(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    # One round per payment: the second payment's Prepare meets the first one's hold.
    cluster = make_cluster(env=environment(GatewaySettings, batch_max=1))
    alice = customer(cluster, certs, "alice")
    have = balances(cluster)["alpha", "A-1001"]
    share = have * 6 // 10

    async def both(client: GatewayClient) -> list[Payment]:
        return list(
            await asyncio.gather(
                client.pay("beta", "B-2001", share), client.pay("gamma", "G-3001", share)
            )
        )

    answers = alice.run(both)
    assert sorted(a.status for a in answers) == [ABORTED, COMMITTED], answers
    [refused] = [a for a in answers if a.status == ABORTED]
    assert refused.reason_code == "INSUFFICIENT_FUNDS"
    settle(cluster)
    assert balances(cluster)["alpha", "A-1001"] == have - share


def late_prepare(
    cluster: Cluster, certs: Path, payment_id: str, account: str, amount: int
) -> bank_pb2.PrepareResponse:
    """Sends beta a Prepare for a payment's credit leg, as the gateway would."""

    async def send() -> bank_pb2.PrepareResponse:
        async with aio_channel(cluster, certs, "beta", "gateway") as channel:
            leg = bank_pb2.Leg(
                payment_id=payment_id,
                side=bank_pb2.LEG_SIDE_CREDIT,
                account=account,
                amount=common_pb2.Money(minor_units=amount, currency="USD"),
            )
            stub = bank_pb2_grpc.ParticipantStub(channel)
            answer: bank_pb2.PrepareResponse = await stub.Prepare(
                bank_pb2.PrepareRequest(legs=[leg]), timeout=30
            )
            return answer

    return asyncio.run(send())


@pytest.mark.in_process
def test_slow_bank_times_out(make_cluster: ClusterFactory, certs: Path) -> None:
    cluster = make_cluster(env=server_env(txn_timeout=1), faults={"beta": "delay_prepare=3"})
    alice = customer(cluster, certs, "alice")
    before = balances(cluster)
    answer = alice.pay("beta", "B-2001", 2000)
    assert answer.status == ABORTED, answer
    assert answer.reason_code == "TIMEOUT"

    def refused_everywhere() -> bool:
        # Alpha released its hold; the Abort left beta a tombstone for the payment.
        return all(
            bank_state(cluster, bank)["payments"].get(answer.payment_id) == BankState.ABORTED
            for bank in ("alpha", "beta")
        ) and settled(cluster)

    wait_until(refused_everywhere, 10, "the abort at both banks")
    # The delayed Prepare is cancelled at its deadline or, arriving late, meets the
    # tombstone; send beta one after the abort to check it is refused.
    late = late_prepare(cluster, certs, answer.payment_id, "B-2001", 2000)
    assert [vote.value for vote in late.votes] == [bank_pb2.VOTE_VALUE_NO], late
    settle(cluster, 10)
    assert bank_state(cluster, "beta")["payments"][answer.payment_id] == BankState.ABORTED
    assert balances(cluster) == before
    assert ledger_entries(cluster, answer.payment_id) == set()


def test_bank_down_aborts_and_recovers(make_cluster: ClusterFactory, certs: Path) -> None:
    cluster = make_cluster()
    alice = customer(cluster, certs, "alice")
    before = balances(cluster)
    cluster.kill("beta")
    answer = alice.pay("beta", "B-2001", 3000)
    assert answer.status == ABORTED, answer
    assert answer.reason_code == "BANK_UNAVAILABLE"
    assert "beta" in answer.reason
    cluster.restart("beta")
    # The gateway goes on sending Abort until beta acknowledges (a tombstone there).
    wait_until(
        lambda: gateway_payments(cluster)[answer.payment_id][0] == CoordinatorState.ABORTED,
        30,
        "beta to acknowledge the abort",
    )
    assert bank_state(cluster, "beta")["payments"][answer.payment_id] == BankState.ABORTED
    settle(cluster)
    assert balances(cluster) == before
    assert ledger_entries(cluster, answer.payment_id) == set()


@pytest.mark.in_process
def test_a_balance_read_right_after_an_abort_shows_nothing_held(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    """The gateway withholds its decisions here (as if every Commit and Abort were lost), so
    only the balance read itself can bring them to the bank: right after an ABORTED answer
    the payer's money is available again, and right after a COMMITTED one it is gone."""
    cluster = make_cluster(faults={GATEWAY: "withhold_decisions"})
    alice = customer(cluster, certs, "alice")
    start = alice.balance().balance_minor_units
    aborted = alice.pay("beta", "B-9999", 2500)  # alpha holds the money; beta votes no
    assert (aborted.status, aborted.reason_code) == (ABORTED, "ACCOUNT_NOT_FOUND"), aborted
    mine = alice.balance()
    assert (mine.balance_minor_units, mine.held_minor_units) == (start, 0)
    assert mine.available_minor_units == start
    paid = alice.pay("beta", "B-2001", 1500)
    assert paid.status == COMMITTED, paid
    mine = alice.balance()
    assert (mine.balance_minor_units, mine.held_minor_units) == (start - 1500, 0)


# -- one customer cannot harm another's payments --------------------------------------------

# Request ids the gateway accepts (its log takes up to 2048 characters) but that a bank's
# 8 KiB metadata limit cannot carry four of at once.
LONG_REQUEST_IDS = 12


async def pay_with_long_request_ids(
    cluster: Cluster, certs: Path, token: str, count: int
) -> list[str]:
    """COUNT payments at once from the owner of TOKEN, each with a 2 KB x-request-id; their
    statuses' names."""
    async with aio_channel(cluster, certs, GATEWAY, "client-1") as channel:
        stub = gateway_pb2_grpc.PaymentsStub(channel)

        async def pay(number: int) -> str:
            request = gateway_pb2.PayRequest(
                to=common_pb2.AccountRef(bank="beta", account="B-2001"),
                amount=common_pb2.Money(minor_units=100, currency="USD"),
                idempotency_key=f"long-request-id-{number}",
            )
            metadata = (
                ("authorization", f"Bearer {token}"),
                ("x-request-id", f"{number:02d}-" + "r" * 2000),
            )
            answer = await stub.Pay(request, metadata=metadata, timeout=30)
            return str(gateway_pb2.PaymentStatus.Name(answer.payment.status))

        return list(await asyncio.gather(*(pay(number) for number in range(count))))


@pytest.mark.in_process
def test_one_customer_s_request_ids_do_not_break_other_customers_payments(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    """What crosses to a bank is bounded per call, and no caller's metadata stays with the
    decisions: other customers' payments commit, and every decision reaches its banks."""
    cluster = make_cluster()
    tokens = asyncio.run(log_in_everyone(client_config(cluster, certs)))
    total = total_money(cluster)
    statuses = asyncio.run(
        pay_with_long_request_ids(cluster, certs, tokens["alice"], LONG_REQUEST_IDS)
    )
    for payer in ("bob", "amir", "erin"):
        others = Client(cluster, certs, token=tokens[payer])
        answer = others.pay("beta", "B-2002", 100)
        assert answer.status == COMMITTED, (payer, answer)
    settle(cluster, 15)  # nothing left undelivered
    # The ids too long to pass on were left out; the payments themselves went ahead.
    assert statuses == ["PAYMENT_STATUS_COMMITTED"] * LONG_REQUEST_IDS, statuses
    assert total_money(cluster) == total


# -- bad input --------------------------------------------------------------------------------

BAD_PAYMENTS = [
    # (id, to bank, to account, minor units, currency, the field at fault, words in the message)
    ("zero", "beta", "B-2001", 0, "USD", "amount.minor_units", "greater than zero"),
    ("negative", "beta", "B-2001", -100, "USD", "amount.minor_units", "greater than zero"),
    ("too-large", "beta", "B-2001", 10**15 + 1, "USD", "amount.minor_units", "largest"),
    ("lower-currency", "beta", "B-2001", 100, "usd", "amount.currency", "currency"),
    ("short-currency", "beta", "B-2001", 100, "US", "amount.currency", "currency"),
    ("own-account", "alpha", "A-1001", 100, "USD", "to", "your own account"),
    ("bad-account", "beta", "B 2001!", 100, "USD", "to.account", "to.account"),
]


def refused_before_recording(shared: Cluster, client: Client, *pay: Any) -> ApiError:
    """The error PAY gets; nothing was recorded and no money moved."""
    before = balances(shared)
    total = total_money(shared)
    recorded = set(gateway_payments(shared))
    error = client.error("pay", *pay)
    assert error.request_id, error
    settle(shared)
    assert set(gateway_payments(shared)) == recorded
    assert balances(shared) == before
    assert total_money(shared) == total
    return error


@pytest.mark.parametrize(
    ("bank", "account", "amount", "currency", "field", "words"),
    [case[1:] for case in BAD_PAYMENTS],
    ids=[case[0] for case in BAD_PAYMENTS],
)
def test_bad_payment_is_refused(
    shared: Cluster,
    people: dict[str, Client],
    bank: str,
    account: str,
    amount: int,
    currency: str,
    field: str,
    words: str,
) -> None:
    error = refused_before_recording(shared, people["alice"], bank, account, amount, currency)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert words in error.message, error
    assert [name for name, _ in error.field_violations] == [field], error.field_violations
    assert error.metadata == {"field": field}


def test_unknown_bank_is_refused(shared: Cluster, people: dict[str, Client]) -> None:
    error = refused_before_recording(shared, people["alice"], "omega", "O-1", 100)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "BANK_NOT_FOUND"), error
    assert "unknown bank 'omega'" in error.message
    assert error.metadata == {"bank": "omega"}


@pytest.mark.parametrize(
    ("bank", "account", "currency", "reason"),
    [
        ("beta", "B-9999", "USD", "ACCOUNT_NOT_FOUND"),
        ("beta", "B-2001", "EUR", "CURRENCY_MISMATCH"),
    ],
    ids=["unknown-account", "currency-mismatch"],
)
def test_recorded_payment_that_cannot_be_made_is_aborted(
    shared: Cluster,
    people: dict[str, Client],
    bank: str,
    account: str,
    currency: str,
    reason: str,
) -> None:
    """The outcome rule: what the gateway recorded answers with the payment, never an error."""
    before = balances(shared)
    answer = people["alice"].pay(bank, account, 100, currency)
    assert (answer.status, answer.reason_code) == (ABORTED, reason), answer
    assert answer.reason and answer.payment_id.startswith("pay_")
    assert answer.decided_at is not None
    assert answer.payment_id in gateway_payments(shared)
    assert people["alice"].payment(answer.payment_id).reason_code == reason
    settle(shared)
    assert balances(shared) == before
    assert ledger_entries(shared, answer.payment_id) == set()


def test_disabled_payee_aborts(shared: Cluster, certs: Path, people: dict[str, Client]) -> None:
    before = balances(shared)
    boss = admin(shared, certs)
    boss.set_disabled("beta", "carol", True)
    try:
        answer = people["alice"].pay("beta", "B-2001", 100)
    finally:
        boss.set_disabled("beta", "carol", False)
    assert (answer.status, answer.reason_code) == (ABORTED, "ACCOUNT_DISABLED"), answer
    assert "disabled" in answer.reason
    settle(shared)
    assert balances(shared) == before
    # Enabled again, the same payee can be paid.
    assert people["alice"].pay("beta", "B-2001", 100).status == COMMITTED
    settle(shared)


# -- idempotency ------------------------------------------------------------------------------


def test_same_key_repeated_pays_once(shared: Cluster, people: dict[str, Client]) -> None:
    bob = people["bob"]
    before = balances(shared)
    key = f"repeat-{uuid.uuid4()}"
    answers = [bob.pay("gamma", "G-3003", 250, idempotency_key=key) for _ in range(10)]
    assert {a.payment_id for a in answers} == {answers[0].payment_id}
    assert all(a.status == COMMITTED for a in answers)
    assert [a.replayed for a in answers] == [False] + [True] * 9
    settle(shared)
    assert moved(before, balances(shared)) == {("alpha", "A-1002"): -250, ("gamma", "G-3003"): 250}
    assert len(ledger_entries(shared, answers[0].payment_id)) == 2

    for other in [("gamma", "G-3003", 251), ("gamma", "G-3002", 250)]:
        error = bob.error("pay", *other, idempotency_key=key)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
        assert error.reason == "IDEMPOTENCY_KEY_REUSED", error
        assert "idempotency key" in error.message
    assert moved(before, balances(shared)) == {("alpha", "A-1002"): -250, ("gamma", "G-3003"): 250}


def test_same_key_concurrently_pays_once(shared: Cluster, people: dict[str, Client]) -> None:
    dave = people["dave"]
    before = balances(shared)
    key = f"concurrent-{uuid.uuid4()}"

    async def eight(client: GatewayClient) -> list[Payment]:
        return list(
            await asyncio.gather(
                *(client.pay("alpha", "A-1003", 333, idempotency_key=key) for _ in range(8))
            )
        )

    answers = dave.run(eight)
    assert len({a.payment_id for a in answers}) == 1
    assert all(a.status == COMMITTED for a in answers), answers
    assert sum(not a.replayed for a in answers) == 1
    settle(shared)
    assert moved(before, balances(shared)) == {("beta", "B-2002"): -333, ("alpha", "A-1003"): 333}
    assert len(ledger_entries(shared, answers[0].payment_id)) == 2
    keys = [k for _, k in gateway_payments(shared).values()]
    assert keys.count(key) == 1


# -- conservation under concurrent load -------------------------------------------------------

PAYMENTS = 200
CLIENTS = 20


async def pay_all(
    cfg: ClientConfig, tokens: dict[str, str], plan: list[tuple[str, str, int, str]]
) -> dict[str, Payment]:
    """Every planned payment, spread over CLIENTS concurrent clients."""
    answers: dict[str, Payment] = {}

    async def worker(share: list[tuple[str, str, int, str]]) -> None:
        retry = RetryPolicy(max_attempts=4, initial_backoff=0.2, max_backoff=1.0)
        async with GatewayClient(cfg, retry=retry) as client:
            for payer, payee, amount, key in share:
                client.token = tokens[payer]
                answers[key] = await client.pay(*SEED_ACCOUNTS[payee], amount, idempotency_key=key)

    await asyncio.gather(*(worker(plan[i::CLIENTS]) for i in range(CLIENTS)))
    return answers


@pytest.mark.in_process
def test_money_is_conserved(make_cluster: ClusterFactory, certs: Path, backend: str) -> None:
    cluster = make_cluster(backend)
    rng = random.Random(20_240_601)
    names = list(SEED_ACCOUNTS)
    plan = []
    for number in range(PAYMENTS):
        payer = rng.choice(names)
        payee = rng.choice([name for name in names if name != payer])
        plan.append((payer, payee, rng.randint(1, 30_000), f"conserve-{number}"))
    cfg = client_config(cluster, certs)
    tokens = asyncio.run(log_in_everyone(cfg))
    before = balances(cluster)
    total = total_money(cluster)

    answers = asyncio.run(pay_all(cfg, tokens, plan))

    settle(cluster, 30)
    assert total_money(cluster) == total
    statuses = Counter(answer.status for answer in answers.values())
    assert set(statuses) <= {COMMITTED, ABORTED}, statuses
    assert statuses[COMMITTED] > 0, statuses
    reasons = Counter(a.reason_code for a in answers.values() if a.status == ABORTED)
    print(f"{backend}: {statuses[COMMITTED]} committed, aborted {dict(reasons)}")
    expected = dict(before)
    entries: dict[str, list[tuple[str, str, int]]] = {}
    for bank in cluster.bank_names:
        for payment_id, account, amount in bank_state(cluster, bank)["entries"]:
            entries.setdefault(payment_id, []).append((bank, account, amount))
    for payer, payee, amount, key in plan:
        answer = answers[key]
        made = sorted(entries.pop(answer.payment_id, []))
        if answer.status == COMMITTED:
            debit = (*SEED_ACCOUNTS[payer], -amount)
            credit = (*SEED_ACCOUNTS[payee], amount)
            assert made == sorted([debit, credit]), (key, answer.payment_id, made)
            expected[SEED_ACCOUNTS[payer]] -= amount
            expected[SEED_ACCOUNTS[payee]] += amount
        else:
            assert answer.reason_code, answer
            assert made == [], (key, answer.payment_id, made)
    assert entries == {}, "ledger entries of payments nobody made"
    assert balances(cluster) == expected
    assert_books_balance(cluster)


# -- the client's retries ---------------------------------------------------------------------


def test_client_retries_across_gateway_restart(make_cluster: ClusterFactory, certs: Path) -> None:
    cluster = make_cluster()
    alice = customer(cluster, certs, "alice")
    before = balances(cluster)
    key = f"retry-{uuid.uuid4()}"
    first_failure = threading.Event()
    outcome: dict[str, Any] = {}

    async def sleep(delay: float) -> None:
        first_failure.set()
        # At least 1.5 s between attempts, so eight attempts outlast a gateway restart.
        await asyncio.sleep(max(delay, 1.5))

    async def pay() -> Payment:
        retry = RetryPolicy(max_attempts=8, sleep=sleep)
        async with GatewayClient(client_config(cluster, certs), alice.token, retry) as client:
            return await client.pay("gamma", "G-3002", 4321, idempotency_key=key)

    def payer() -> None:
        try:
            outcome["answer"] = asyncio.run(pay())
        except Exception as error:  # reported by the assertions below
            outcome["error"] = error

    cluster.kill(GATEWAY)
    thread = threading.Thread(target=payer)
    thread.start()
    try:
        assert first_failure.wait(30), "the first attempt never failed"
        time.sleep(1)
        cluster.start_process(GATEWAY)
        cluster.wait_ready(GATEWAY)
    finally:
        thread.join(60)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome
    answer = outcome["answer"]
    assert answer.status == COMMITTED, answer
    settle(cluster)
    assert moved(before, balances(cluster)) == {
        ("alpha", "A-1001"): -4321,
        ("gamma", "G-3002"): 4321,
    }
    assert len(ledger_entries(cluster, answer.payment_id)) == 2
    assert [k for _, k in gateway_payments(cluster).values()].count(key) == 1

    retried = []
    for line in cluster.log_file(GATEWAY).read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(record, dict)
            and record.get("event") == "call"
            and record.get("idempotency_key") == key
        ):
            retried.append(record)
    assert retried, "the gateway logged no call for this payment"
    assert all(int(record.get("attempt", 1)) > 1 for record in retried), retried
    assert retried[-1]["code"] == "OK", retried[-1]
    # The same key again is a replay of that payment, not a second one.
    again = alice.pay("gamma", "G-3002", 4321, idempotency_key=key)
    assert (again.payment_id, again.replayed) == (answer.payment_id, True)
