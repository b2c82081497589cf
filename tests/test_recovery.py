"""Crash recovery: kill -9 at every named step of a payment, restart, and check the payment
ended atomically; then a randomized "bank" workload (after Jepsen) with a nemesis killing
and restarting banks and the gateway while clients pay and refund."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from devtools.cluster import GATEWAY, Cluster
from minipay.admin.books import report_lines
from minipay.client.api import (
    ApiError,
    BatchItem,
    ClientConfig,
    GatewayClient,
    Payment,
    PaymentStatus,
    RetryPolicy,
    SplitShare,
)
from minipay.v1 import gateway_pb2, gateway_pb2_grpc
from server.common.settings import GatewaySettings, environment
from tests.conftest import ClusterFactory
from tests.helpers import (
    ABORTED,
    COMMITTED,
    SEED_ACCOUNTS,
    aio_channel,
    assert_atomic,
    assert_reconciled,
    assert_refunds_within_payments,
    balances,
    bank_state,
    client_config,
    customer,
    gateway_payments,
    ledger_counts,
    ledger_entries,
    log_in_everyone,
    moved,
    postgres_available,
    refund_counts,
    server_env,
    total_money,
    wait_until,
)

# (process to crash, fault, outcome the client's retry must see)
CRASHES = [
    (GATEWAY, "crash_after_record", ABORTED),
    (GATEWAY, "crash_after_decision", COMMITTED),
    (GATEWAY, "crash_after_first_commit_ack", COMMITTED),
    ("alpha", "crash_after_vote_yes", ABORTED),
    ("alpha", "crash_after_commit_applied", COMMITTED),
]


@pytest.mark.parametrize(("victim", "fault", "outcome"), CRASHES, ids=[c[1] for c in CRASHES])
def test_crash_point(
    shared_cluster: ClusterFactory,
    certs: Path,
    victim: str,
    fault: str,
    outcome: PaymentStatus,
) -> None:
    cluster = shared_cluster()  # the crash points take turns on one cluster
    alice = customer(cluster, certs, "alice", register=False)
    cluster.restart(victim, faults=fault)
    before = total_money(cluster)
    paying, paid = SEED_ACCOUNTS["alice"], ("beta", "B-2001")
    balance_before = {
        bank: bank_state(cluster, bank)["accounts"][account][0] for bank, account in (paying, paid)
    }
    key = str(uuid.uuid4())
    first: dict[str, Any] = {}

    def pay_once() -> None:
        try:
            first["answer"] = alice.pay("beta", "B-2001", 2500, idempotency_key=key)
        except ApiError as error:
            first["error"] = error.code

    payer = threading.Thread(target=pay_once)
    payer.start()
    assert cluster.wait_exit(victim, timeout=30) == 97  # died at the injection point
    cluster.start_process(victim)
    cluster.wait_ready(victim)
    payer.join(60)
    assert not payer.is_alive()
    # The payer heard the outcome, or that the gateway was unavailable, never anything else.
    if "error" in first:
        assert first["error"] == grpc.StatusCode.UNAVAILABLE
    else:
        assert first["answer"].status == outcome, first["answer"]
    # The client's retry with the same key returns the final outcome.
    retry = alice.pay("beta", "B-2001", 2500, idempotency_key=key)
    assert retry.status == outcome, retry
    if "answer" in first:
        assert first["answer"].payment_id == retry.payment_id
    assert_atomic(cluster, before)
    assert_reconciled(cluster, certs)
    moved = 2500 if outcome == COMMITTED else 0
    assert bank_state(cluster, "alpha")["accounts"]["A-1001"][0] == balance_before["alpha"] - moved
    assert bank_state(cluster, "beta")["accounts"]["B-2001"][0] == balance_before["beta"] + moved


def test_lost_commit_acknowledgement_is_resent(make_cluster: ClusterFactory, certs: Path) -> None:
    cluster = make_cluster(faults={"beta": "drop_commit_ack=1"})
    alice = customer(cluster, certs, "alice")
    before = total_money(cluster)
    answer = alice.pay("beta", "B-2001", 1000)
    assert answer.status == COMMITTED
    assert_atomic(cluster, before)
    assert ledger_counts(cluster)[answer.payment_id] == 2  # applied once, acknowledged later


@pytest.mark.in_process
def test_presumed_abort_for_unknown_payment(cluster: Cluster, certs: Path) -> None:
    async def ask() -> gateway_pb2.GetDecisionResponse:
        async with aio_channel(cluster, certs, GATEWAY, "alpha") as channel:
            stub = gateway_pb2_grpc.CoordinatorStub(channel)
            answer: gateway_pb2.GetDecisionResponse = await stub.GetDecision(
                gateway_pb2.GetDecisionRequest(payment_ids=["pay_never_seen"]), timeout=10
            )
            return answer

    answer = asyncio.run(ask())
    assert answer.decisions[0].decision == gateway_pb2.DECISION_ABORT


def test_bank_asks_coordinator_after_outage(make_cluster: ClusterFactory, certs: Path) -> None:
    """Gateway dies after deciding; the banks hold their yes votes until it is back."""
    cluster = make_cluster(env=server_env(txn_timeout=1))
    alice = customer(cluster, certs, "alice")
    before = total_money(cluster)
    cluster.restart(GATEWAY, faults="crash_after_decision")
    with pytest.raises(ApiError):
        alice.pay("gamma", "G-3001", 700)
    cluster.wait_exit(GATEWAY)
    time.sleep(1.5)  # past the timeout: the banks are asking, and nobody answers yet
    assert any(
        str(state) == "PREPARED"
        for bank in ("alpha", "gamma")
        for state in bank_state(cluster, bank)["payments"].values()
    )
    cluster.start_process(GATEWAY)
    cluster.wait_ready(GATEWAY)
    assert_atomic(cluster, before)
    assert total_money(cluster) == before


def test_bank_in_doubt_learns_the_decision_by_asking(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    """The gateway is up and decided, but its Commits never arrive: the banks must ask."""
    cluster = make_cluster(env=server_env(txn_timeout=1), faults={GATEWAY: "withhold_decisions"})
    alice = customer(cluster, certs, "alice")
    before = balances(cluster)
    answer = alice.pay("gamma", "G-3001", 700)
    assert answer.status == COMMITTED

    def applied_at_both() -> bool:
        return ledger_entries(cluster, answer.payment_id) == {
            ("alpha", "A-1001", -700),
            ("gamma", "G-3001", 700),
        }

    wait_until(applied_at_both, 20, "both banks to ask and commit")
    assert moved(before, balances(cluster)) == {
        ("alpha", "A-1001"): -700,
        ("gamma", "G-3001"): 700,
    }
    for bank in ("alpha", "gamma"):
        asked = [
            line
            for line in cluster.log_file(bank).read_text().splitlines()
            if "recovered_commit" in line and answer.payment_id in line
        ]
        assert asked, f"{bank} did not learn the decision by asking"


# -- the randomized bank test ---------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One request of the workload: WHO pays PAYEE, or (SHARES set) pays each of several
    payees their amount in one split payment, or (REFUND_OF set) refunds that payment they
    received (their share of it); AMOUNT None refunds all that is left."""

    who: str
    amount: int | None
    payee: tuple[str, str] = ("", "")
    refund_of: str = ""
    shares: tuple[tuple[str, int], ...] = ()  # (payee's name, amount)

    @property
    def legs(self) -> int:
        """Ledger entries the request makes once committed: a debit and each credit."""
        return 1 + (len(self.shares) or 1)


class Workload:
    """Clients paying random amounts between random seed accounts, and refunding, in full or
    in part, payments they received; remembering outcomes. One payment per call, or (one call
    in four) a batch of two to eight payments in one PayBatch, or (one in eight) a split
    payment to two to four payees. With several gateway replicas,
    a call goes round all of them, or to one, or (the same keys) to two at once."""

    def __init__(self, cluster: Cluster, certs: Path, rng: random.Random) -> None:
        self.cluster = cluster
        self.certs = certs
        self.rng = rng
        self.outcomes: dict[str, tuple[str, PaymentStatus]] = {}  # key -> (payment_id, status)
        self.unknown: dict[str, Ask] = {}  # key -> request whose outcome is not known yet
        self.received: dict[str, list[str]] = defaultdict(list)  # payee -> committed payments
        self.legs: dict[str, int] = {}  # key -> ledger entries once committed

    def config(self, gateway: str = "") -> ClientConfig:
        return client_config(
            self.cluster, self.certs, timeout=10, gateway=gateway or self.cluster.gateway_addresses
        )

    def targets(self) -> list[str]:
        """Where one call goes: every replica (round robin), one replica, or two."""
        replicas = [self.cluster.address(name) for name in self.cluster.gateway_names]
        if len(replicas) == 1:
            return [replicas[0]]
        draw = self.rng.random()
        if draw < 0.6:
            return [",".join(replicas)]
        if draw < 0.9:
            return [self.rng.choice(replicas)]
        return self.rng.sample(replicas, 2)

    def next_asks(self) -> dict[str, Ask]:
        """The requests of one call, by key: a payment, a batch of two to eight payments of
        one payer, or one time in four a refund of something the refunder received."""
        people = list(SEED_ACCOUNTS)
        who = self.rng.choice(people)
        if self.received[who] and self.rng.random() < 0.25:
            amount = None if self.rng.random() < 0.3 else self.rng.randint(1, 3000)
            return {
                str(uuid.uuid4()): Ask(who, amount, refund_of=self.rng.choice(self.received[who]))
            }
        if self.rng.random() < 0.125:
            payees = self.rng.sample([p for p in people if p != who], self.rng.randint(2, 4))
            shares = tuple((payee, self.rng.randint(1, 2000)) for payee in payees)
            return {str(uuid.uuid4()): Ask(who, None, shares=shares)}
        count = self.rng.randint(2, 8) if self.rng.random() < 0.25 else 1
        asks = {}
        for _ in range(count):
            payee = self.rng.choice([p for p in people if p != who])
            asks[str(uuid.uuid4())] = Ask(
                who, self.rng.randint(1, 5000), payee=SEED_ACCOUNTS[payee]
            )
        return asks

    async def worker(self, tokens: dict[str, str], stop: float) -> None:
        while time.monotonic() < stop:
            asks = self.next_asks()
            token = tokens[next(iter(asks.values())).who]
            answers = await asyncio.gather(
                *(self.call(target, token, asks) for target in self.targets())
            )
            for key, ask in asks.items():
                settled = [
                    a
                    for answer in answers
                    if (a := answer.get(key)) is not None and a.status in (COMMITTED, ABORTED)
                ]
                if settled:
                    assert len({(a.payment_id, a.status) for a in settled}) == 1, (key, settled)
                    self.remember(key, ask, settled[0])
                else:
                    self.unknown[key] = ask

    def remember(self, key: str, ask: Ask, answer: Payment) -> None:
        self.outcomes[key] = (answer.payment_id, answer.status)
        self.legs[key] = ask.legs
        if answer.status == COMMITTED and ask.shares:
            for payee, _ in ask.shares:  # each payee may refund their own share
                self.received[payee].append(answer.payment_id)
        elif answer.status == COMMITTED and not ask.refund_of:
            payee = next(name for name, account in SEED_ACCOUNTS.items() if account == ask.payee)
            self.received[payee].append(answer.payment_id)

    async def call(
        self, target: str, token: str, asks: dict[str, Ask]
    ) -> dict[str, Payment | None]:
        """Each key's answer, or None when its outcome is unknown (to be asked again later),
        or the request was refused before anything was recorded (a refund of more than is
        left, an item of a batch): Pay or Refund for one request, PayBatch for several."""
        retry = RetryPolicy(max_attempts=6, initial_backoff=0.2, max_backoff=1.0)
        unknown = (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.ABORTED,
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        async with GatewayClient(self.config(target), token, retry) as client:
            try:
                if len(asks) == 1:
                    [(key, ask)] = asks.items()
                    return {key: await self.send(client, key, ask)}
                items = [
                    BatchItem(*ask.payee, ask.amount or 0, idempotency_key=key)
                    for key, ask in asks.items()
                ]
                results = await client.pay_batch(items)
            except ApiError as error:
                if error.code not in unknown:
                    raise
                return dict.fromkeys(asks)
        assert [r.idempotency_key for r in results] == list(asks), "in the items' order"
        return {r.idempotency_key: r.payment for r in results}

    @staticmethod
    async def send(client: GatewayClient, key: str, ask: Ask) -> Payment:
        if ask.refund_of:
            return await client.refund(ask.refund_of, ask.amount, idempotency_key=key)
        if ask.shares:
            shares = [SplitShare(*SEED_ACCOUNTS[name], amount) for name, amount in ask.shares]
            return await client.pay_split(shares, idempotency_key=key)
        assert ask.amount is not None
        return await client.pay(*ask.payee, ask.amount, idempotency_key=key)

    async def resolve_unknown(self, tokens: dict[str, str]) -> None:
        """A client's retry with the same key, once the system is whole again. A refund that
        was never recorded may be refused now (nothing left to refund): it made nothing."""
        for key, ask in self.unknown.items():
            deadline = time.monotonic() + 30
            async with GatewayClient(self.config(), tokens[ask.who]) as client:
                while True:
                    try:
                        answer = await self.send(client, key, ask)
                    except ApiError as error:
                        assert ask.refund_of and error.reason == "REFUND_EXCEEDS_PAYMENT", error
                        break
                    if answer.status in (COMMITTED, ABORTED) or time.monotonic() > deadline:
                        assert answer.status in (COMMITTED, ABORTED), (key, answer)
                        self.remember(key, ask, answer)
                        break
                    await asyncio.sleep(0.2)


def nemesis(
    cluster: Cluster, rng: random.Random, stop: float, interval: float, pause: float = 0.0
) -> list[str]:
    """Kills a random process (-9) every INTERVAL or so and restarts it; with PAUSE, a gateway
    replica may instead be paused that long (SIGSTOP) and woken (SIGCONT)."""
    struck = []
    while time.monotonic() + interval < stop:
        time.sleep(interval * rng.uniform(0.5, 1.5))
        victim = rng.choice(cluster.names)
        if pause and cluster.is_gateway(victim) and rng.random() < 0.5:
            struck.append(f"{victim} paused")
            process = cluster.processes[victim]
            os.kill(process.pid, signal.SIGSTOP)
            time.sleep(pause)
            os.kill(process.pid, signal.SIGCONT)
            continue
        struck.append(victim)
        cluster.kill(victim)
        time.sleep(rng.uniform(0.1, 1.0))
        cluster.start_process(victim)
        cluster.wait_ready(victim)
    return struck


def check_the_books(cluster: Cluster, workload: Workload, before: int) -> None:
    """Money conserved, balances equal to ledgers, nothing in doubt, every payment (and
    refund) a client saw committed applied once at both banks, one payment per key, and no
    payment refunded beyond its amount."""
    assert_atomic(cluster, before)
    assert_refunds_within_payments(cluster)
    entries = ledger_counts(cluster)
    for key, (payment_id, status) in workload.outcomes.items():
        expected = workload.legs[key] if status == COMMITTED else 0
        assert entries[payment_id] == expected, (key, payment_id, status)
    keys = Counter(key for _, key in gateway_payments(cluster).values() if key)
    assert all(count == 1 for count in keys.values()), "a key made two payments"
    report = assert_reconciled(cluster, workload.certs)  # and admin reconcile proves the books
    print("\n".join(["admin reconcile:", *report_lines(report)]))  # what -s shows


def play_and_judge(
    cluster: Cluster, workload: Workload, seconds: float, strike: Callable[[float], list[str]]
) -> None:
    """Six clients pay for SECONDS while STRIKE(stop) runs a nemesis in a thread; then, with
    every process back up and every unknown outcome asked again, the books must balance."""
    tokens = asyncio.run(log_in_everyone(workload.config()))
    before = total_money(cluster)
    stop = time.monotonic() + seconds
    struck: list[str] = []
    chaos = threading.Thread(target=lambda: struck.extend(strike(stop)))
    chaos.start()

    async def clients() -> None:
        await asyncio.gather(*(workload.worker(tokens, stop) for _ in range(6)))

    asyncio.run(clients())
    chaos.join()
    for name in cluster.names:  # everyone back up before judging
        cluster.wait_ready(name)
    asyncio.run(workload.resolve_unknown(tokens))
    assert struck, "the nemesis never struck"
    assert workload.outcomes, "no payment was made"
    check_the_books(cluster, workload, before)
    committed = sum(1 for _, s in workload.outcomes.values() if s == COMMITTED)
    refunds = sum(1 for counts in refund_counts(cluster).values() if counts[1])
    print(
        f"{len(workload.outcomes)} payments, {committed} committed, {refunds} refunded, "
        f"{len(workload.unknown)} resolved by retry, nemesis struck {struck}"
    )


def test_randomized_bank(
    make_cluster: ClusterFactory, certs: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    seconds = float(request.config.getoption("--bank-test-seconds"))
    seed = int(request.config.getoption("--bank-test-seed")) or random.randrange(1, 10**6)
    print(f"randomized bank test: seed {seed}, {seconds} s, {backend}")
    rng = random.Random(seed)
    cluster = make_cluster(backend, env=server_env(txn_timeout=2))
    play_and_judge(
        cluster,
        Workload(cluster, certs, rng),
        seconds,
        lambda stop: nemesis(cluster, rng, stop, 3.0),
    )


@pytest.mark.skipif(not postgres_available(), reason="replicas need PostgreSQL")
def test_randomized_bank_across_replicas(
    make_cluster: ClusterFactory, certs: Path, request: pytest.FixtureRequest
) -> None:
    """Three gateway replicas and three banks; clients spread over the replicas (some send
    one key to two at once); a nemesis kills replicas and banks and pauses replicas."""
    seconds = float(request.config.getoption("--bank-test-seconds"))
    seed = int(request.config.getoption("--bank-test-seed")) or random.randrange(1, 10**6)
    print(f"randomized bank test across replicas: seed {seed}, {seconds} s")
    rng = random.Random(seed)
    lease = 1.5
    cluster = make_cluster(
        "postgres",
        env={**server_env(txn_timeout=2), **environment(GatewaySettings, lease=lease)},
        gateways=3,
    )
    play_and_judge(
        cluster,
        Workload(cluster, certs, rng),
        seconds,
        lambda stop: nemesis(cluster, rng, stop, 2.5, pause=lease + 1.0),
    )
