"""The load: the seed customers, logging them in and topping them up, the random plan of
cross-bank payments, the concurrent clients that run it (for a number of payments, or for a
time while something is done to the cluster), learning afterwards the outcomes they did not
see, and the latency percentiles.

A client's call pays one payment (``Pay``) or, with ``Config.batch`` N above 1, N payments
of one payer in one ``PayBatch`` call, or with ``Config.split`` K one split payment to K
payees (``Pay`` with shares: a call's orders are then its shares, under one key); latencies
are per call either way."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import logging
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from certificate.ca import SERVICES_CA
from devtools.bench import event_watch
from devtools.bench.config import BenchError, Config
from devtools.bench.processes import cpu_snapshot
from devtools.cluster import Cluster
from devtools.customers import ADMIN, Customer
from minipay.client.api import ClientConfig, GatewayClient, RetryPolicy
from minipay.client.errors import ApiError
from minipay.client.results import BatchItem, BatchResult, Payment, PaymentStatus, SplitShare

CUSTOMER_CERT = "client-1"
ADMIN_CERT = "admin"
AMOUNT_RANGE = (1, 5_000)  # minor units: $0.01 to $50.00


Order = tuple[int, int, int]  # payer index, payee index, amount in minor units
Call = list[Order]  # the payments of one call: one Pay, or a PayBatch (one payer's)
Unsettled = tuple[Order, str]  # an order whose outcome the client did not learn, and its key


@dataclass
class Samples:
    """What the load phase saw, call by call."""

    latencies: list[float] = field(default_factory=list)  # seconds, every finished call
    committed: int = 0
    aborted: int = 0
    pending: int = 0
    abort_reasons: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    # Net effect of the committed payments on each (bank, account), in minor units.
    moved: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Seconds since the start of the load at which each payment committed / each call failed.
    committed_at: list[float] = field(default_factory=list)
    errors_at: list[float] = field(default_factory=list)
    unsettled: list[Unsettled] = field(default_factory=list)  # errors and PENDING answers


@dataclass
class Disruption:
    """Something done to the cluster while the clients pay (``--failover``): ACTION, in a
    thread so that the clients keep going, AT seconds into a load that lasts DURATION."""

    at: float
    duration: float
    action: Callable[[], None]
    happened_at: float | None = None  # seconds into the load, once done


class RetryCounter(logging.Handler):
    """Counts the client library's retries (and keeps its warnings off the screen)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        # A retried call logs its failure too; only the retry itself counts.
        if record.getMessage() == "retrying":
            self.count += 1


# -- the cluster's users ---------------------------------------------------------------------


def client_config(cluster: Cluster, cert: str) -> ClientConfig:
    """Every replica's address: the client library round-robins its calls over them."""
    return ClientConfig(
        gateway=cluster.gateway_addresses,
        ca=cluster.certs / SERVICES_CA,
        cert=cluster.certs / f"{cert}.pem",
        key=cluster.certs / f"{cert}-key.pem",
        home=cluster.data_dir / "home",
        timeout=30.0,
    )


def as_user(client: GatewayClient, token: str) -> GatewayClient:
    """The same client (same channel and stubs) acting for another logged-in customer."""
    view = copy.copy(client)
    view.token = token
    return view


async def top_up(
    cluster: Cluster, customers: Sequence[Customer], tokens: Sequence[str], needed: int
) -> None:
    """Deposits (as the admin) whatever each account lacks to hold ``needed`` minor units."""
    async with (
        GatewayClient(client_config(cluster, CUSTOMER_CERT)) as client,
        GatewayClient(client_config(cluster, ADMIN_CERT)) as admin,
    ):
        await admin.login(*ADMIN)
        for customer, token in zip(customers, tokens, strict=True):
            balance = await as_user(client, token).balance()
            if balance.available_minor_units < needed:
                await admin.deposit(
                    customer.bank,
                    customer.account,
                    needed - balance.available_minor_units,
                    balance.currency or "USD",
                )


# -- the load --------------------------------------------------------------------------------


def _elsewhere(customers: Sequence[Customer]) -> list[list[int]]:
    """For each customer, the customers at other banks."""
    return [
        [i for i, other in enumerate(customers) if other.bank != customer.bank]
        for customer in customers
    ]


def random_orders(customers: Sequence[Customer], rng: random.Random) -> Iterator[Order]:
    """Endless random cross-bank payments: payer and payee always at different banks."""
    elsewhere = _elsewhere(customers)
    while True:
        payer = rng.randrange(len(customers))
        yield payer, rng.choice(elsewhere[payer]), rng.randint(*AMOUNT_RANGE)


def random_calls(
    customers: Sequence[Customer], rng: random.Random, size: int, split: int = 0
) -> Iterator[Call]:
    """Endless calls of SIZE random cross-bank payments each, every call one payer's; or
    (SPLIT K) of one split payment to K different payees, at other banks first."""
    orders = random_orders(customers, rng)
    elsewhere = _elsewhere(customers)
    while split:
        payer = rng.randrange(len(customers))
        others = [i for i in range(len(customers)) if i != payer]
        away = elsewhere[payer]
        near = [i for i in others if i not in away]
        if split > len(others):
            raise BenchError(f"--split {split}: the seed has {len(others) + 1} customers")
        payees = rng.sample(away, min(split, len(away)))
        payees += rng.sample(near, split - len(payees))
        yield [(payer, payee, rng.randint(*AMOUNT_RANGE)) for payee in payees]
    while True:
        payer, payee, amount = next(orders)
        call = [(payer, payee, amount)]
        for _ in range(size - 1):
            call.append((payer, rng.choice(elsewhere[payer]), rng.randint(*AMOUNT_RANGE)))
        yield call


def make_plan(
    customers: Sequence[Customer], count: int, rng: random.Random, size: int = 1, split: int = 0
) -> list[Call]:
    """Calls of SIZE payments, COUNT payments in all (the last call may have fewer); with
    SPLIT, COUNT calls of one split payment each."""
    if split:
        return list(itertools.islice(random_calls(customers, rng, 1, split), count))
    calls = list(itertools.islice(random_calls(customers, rng, size), math.ceil(count / size)))
    if calls and count % size:
        calls[-1] = calls[-1][: count % size]
    return calls


def record_move(
    moved: Counter[tuple[str, str]], payer: Customer, payee: Customer, amount: int
) -> None:
    moved[(payer.bank, payer.account)] -= amount
    moved[(payee.bank, payee.account)] += amount


async def drive(
    clients: Sequence[Sequence[GatewayClient]],
    customers: Sequence[Customer],
    calls: Iterator[Call],
    concurrency: int,
    per_channel: int,
    until: float | None = None,
    split: bool = False,
) -> tuple[Samples, float]:
    """Runs ``calls`` with ``concurrency`` workers, until they run out or the clock
    (``time.perf_counter``) reaches UNTIL; returns what the workers saw and the wall time.
    SPLIT: each call is one split payment, its orders its shares."""
    samples = Samples()
    clock = time.perf_counter
    begun = clock()

    async def worker(sessions: Sequence[GatewayClient]) -> None:
        for call in calls:  # shared: each worker takes the next call
            session = sessions[call[0][0]]
            # Our keys, so that an unknown outcome can be asked again (a split's: one).
            keys = [str(uuid.uuid4()) for _ in call]
            if split:
                keys = [keys[0]] * len(call)
            started = clock()
            try:
                if split:
                    answers: list[Payment | BatchResult] = [
                        await _pay_split(session, customers, call, keys[0])
                    ]
                else:
                    answers = await _pay(session, customers, call, keys)
            except ApiError as error:
                samples.errors[error.code.name] += 1 if split else len(call)
                samples.errors_at.append(clock() - begun)
                samples.unsettled.extend(zip(call, keys, strict=True))
            else:
                finished = clock()
                samples.latencies.append(finished - started)
                if split:
                    _count_split(samples, customers, call, keys[0], answers[0], finished - begun)
                    continue
                for order, key, answer in zip(call, keys, answers, strict=True):
                    _count(samples, customers, order, key, answer, finished - begun)
            if until is not None and clock() >= until:
                return

    await asyncio.gather(*(worker(clients[i // per_channel]) for i in range(concurrency)))
    return samples, clock() - begun


async def _pay(
    session: GatewayClient, customers: Sequence[Customer], call: Call, keys: list[str]
) -> list[Payment | BatchResult]:
    """One Pay for one order, one PayBatch for several."""
    if len(call) == 1:
        [(_, payee_index, amount)], [key] = call, keys
        payee = customers[payee_index]
        return [await session.pay(payee.bank, payee.account, amount, idempotency_key=key)]
    items = [
        BatchItem(customers[payee].bank, customers[payee].account, amount, idempotency_key=key)
        for (_, payee, amount), key in zip(call, keys, strict=True)
    ]
    return list(await session.pay_batch(items))


async def _pay_split(
    session: GatewayClient, customers: Sequence[Customer], call: Call, key: str
) -> Payment:
    """One split payment: the call's orders are its shares."""
    shares = [
        SplitShare(customers[payee].bank, customers[payee].account, amount)
        for _, payee, amount in call
    ]
    return await session.pay_split(shares, idempotency_key=key)


def _count_split(
    samples: Samples,
    customers: Sequence[Customer],
    call: Call,
    key: str,
    answer: Payment | BatchResult,
    at: float,
) -> None:
    """One split payment's answer into SAMPLES: one payment, a move per share."""
    assert isinstance(answer, Payment)
    if answer.status is PaymentStatus.COMMITTED:
        samples.committed += 1
        samples.committed_at.append(at)
        for payer, payee, amount in call:
            record_move(samples.moved, customers[payer], customers[payee], amount)
    elif answer.status is PaymentStatus.ABORTED:
        samples.aborted += 1
        samples.abort_reasons[answer.reason_code or "unknown"] += 1
    else:
        samples.pending += 1
        samples.unsettled.extend((order, key) for order in call)


def _count(
    samples: Samples,
    customers: Sequence[Customer],
    order: Order,
    key: str,
    answer: Payment | BatchResult,
    at: float,
) -> None:
    """One payment's answer into SAMPLES (an item the gateway refused is an error)."""
    if isinstance(answer, BatchResult):
        if answer.payment is None:
            assert answer.error is not None
            samples.errors[answer.error.reason or answer.error.code] += 1
            samples.errors_at.append(at)
            samples.unsettled.append((order, key))
            return
        answer = answer.payment
    payer_index, payee_index, amount = order
    if answer.status is PaymentStatus.COMMITTED:
        samples.committed += 1
        samples.committed_at.append(at)
        record_move(samples.moved, customers[payer_index], customers[payee_index], amount)
    elif answer.status is PaymentStatus.ABORTED:
        samples.aborted += 1
        samples.abort_reasons[answer.reason_code or "unknown"] += 1
    else:
        samples.pending += 1
        samples.unsettled.append((order, key))


async def _disrupt(disruption: Disruption, begun: float) -> None:
    await asyncio.sleep(max(0.0, begun + disruption.at - time.perf_counter()))
    await asyncio.to_thread(disruption.action)
    disruption.happened_at = time.perf_counter() - begun


def percentiles(latencies: Sequence[float]) -> dict[str, float]:
    if not latencies:  # no call finished
        return dict.fromkeys(("p50", "p95", "p99", "mean", "max"), math.nan)
    ordered = sorted(latencies)

    def rank(p: float) -> float:  # nearest rank
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

    return {
        "p50": round(rank(50), 2),
        "p95": round(rank(95), 2),
        "p99": round(rank(99), 2),
        "mean": round(sum(ordered) / len(ordered) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


async def load(
    cluster: Cluster,
    config: Config,
    customers: Sequence[Customer],
    tokens: Sequence[str],
    cpu_before: dict[str, dict[str, float]],
    disruption: Disruption | None = None,
    delays: event_watch.EventDelays | None = None,
) -> tuple[Samples, Samples, float]:
    """Warm-up, then the measured run: ``config.payments`` payments, or DISRUPTION's
    duration with its action done meanwhile; ``cpu_before`` gets the CPU clocks at its start.
    DELAYS, if given, gets how late a watcher saw each payment's event (``event_watch``)."""
    rng = random.Random(config.seed)
    warmup_plan = make_plan(customers, config.warmup, rng, config.batch, config.split)
    calls = random_calls(customers, rng, config.batch, config.split)
    if disruption is None:
        calls = iter(make_plan(customers, config.payments, rng, config.batch, config.split))
    channels = math.ceil(config.concurrency / config.per_channel)
    bases = [
        GatewayClient(client_config(cluster, CUSTOMER_CERT), retry=RetryPolicy())
        for _ in range(channels)
    ]
    try:
        clients = [[as_user(base, token) for token in tokens] for base in bases]
        await asyncio.gather(*(base._channel.channel_ready() for base in bases))
        warm, _ = await drive(
            clients,
            customers,
            iter(warmup_plan),
            config.concurrency,
            config.per_channel,
            split=bool(config.split),
        )
        cpu_before["at"] = cpu_snapshot(cluster)
        if disruption is None:
            watching = None
            if delays is not None:
                ready = asyncio.Event()
                admin = client_config(cluster, ADMIN_CERT)
                watching = asyncio.create_task(event_watch.watch(admin, ADMIN, delays, ready))
                await asyncio.wait_for(ready.wait(), 30)
            samples, elapsed = await drive(
                clients,
                customers,
                calls,
                config.concurrency,
                config.per_channel,
                split=bool(config.split),
            )
            if watching is not None:
                await asyncio.sleep(2.0)  # the last decisions' events arrive
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
        else:
            begun = time.perf_counter()
            disrupting = asyncio.create_task(_disrupt(disruption, begun))
            samples, elapsed = await drive(
                clients,
                customers,
                calls,
                config.concurrency,
                config.per_channel,
                until=begun + disruption.duration,
                split=bool(config.split),
            )
            await disrupting
    finally:
        await asyncio.gather(*(base.close() for base in bases))
    return warm, samples, elapsed


async def settle(
    cluster: Cluster,
    customers: Sequence[Customer],
    tokens: Sequence[str],
    unsettled: Sequence[Unsettled],
) -> tuple[Counter[tuple[str, str]], int]:
    """Asks again, with the same key, for every payment whose outcome the load did not learn
    (an error, or PENDING): the gateway answers with the recorded outcome, or makes the
    payment now if the first request never reached it. Returns the moves of those that
    committed and how many outcomes stay unknown. The shares of a split payment have one key:
    they are asked again together, as that split payment."""
    moved: Counter[tuple[str, str]] = Counter()
    unknown = 0
    by_key: dict[str, Call] = {}
    for order, key in unsettled:
        by_key.setdefault(key, []).append(order)
    async with GatewayClient(client_config(cluster, CUSTOMER_CERT), retry=RetryPolicy()) as client:
        for key, call in by_key.items():
            session = as_user(client, tokens[call[0][0]])
            try:
                if len(call) > 1:
                    answer = await _pay_split(session, customers, call, key)
                else:
                    [(_, payee_index, amount)] = call
                    payee = customers[payee_index]
                    answer = await session.pay(
                        payee.bank, payee.account, amount, idempotency_key=key
                    )
            except ApiError:
                unknown += 1
                continue
            if answer.status is PaymentStatus.COMMITTED:
                for payer_index, payee_index, amount in call:
                    record_move(moved, customers[payer_index], customers[payee_index], amount)
            elif answer.status is not PaymentStatus.ABORTED:
                unknown += 1
    return moved, unknown
