"""The load: the seed customers, logging them in and topping them up, the random plan of
cross-bank payments, the concurrent clients that run it, and the latency percentiles."""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml

from certificate.ca import SERVICES_CA
from client.api import ClientConfig, GatewayClient, RetryPolicy
from devtools.bench.config import BenchError, Config
from devtools.bench.processes import cpu_snapshot
from devtools.cluster import Cluster
from minipay.v1 import gateway_pb2
from server.common.settings import DEFAULT_SEED

ADMIN = ("admin", "admin-dev-pass")
CUSTOMER_CERT = "client-1"
ADMIN_CERT = "admin"
AMOUNT_RANGE = (1, 5_000)  # minor units: $0.01 to $50.00


@dataclass(frozen=True)
class Customer:
    username: str
    password: str
    bank: str
    account: str


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


class RetryCounter(logging.Handler):
    """Counts the client library's retry warnings (and keeps them off the screen)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


# -- the cluster's users ---------------------------------------------------------------------


def seed_customers(path: Path = DEFAULT_SEED) -> list[Customer]:
    data = yaml.safe_load(path.read_text()) or {}
    customers = [
        Customer(str(row["username"]), str(row["password"]), str(row["bank"]), str(row["account"]))
        for row in data.get("customers") or []
    ]
    if len({customer.bank for customer in customers}) < 2:
        raise BenchError(f"{path} needs customers at two banks or more for cross-bank payments")
    return customers


def client_config(cluster: Cluster, cert: str) -> ClientConfig:
    return ClientConfig(
        gateway=cluster.gateway_address,
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


async def log_in_everyone(cluster: Cluster, customers: Sequence[Customer]) -> list[str]:
    """Registers and logs in every customer; returns their tokens, in order."""
    async with GatewayClient(client_config(cluster, CUSTOMER_CERT)) as client:
        for customer in customers:
            await client.register(
                customer.username, customer.password, customer.bank, customer.account
            )
        tokens = []
        for customer in customers:
            tokens.append((await client.login(customer.username, customer.password)).token)
    return tokens


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
            balance = (await as_user(client, token).balance()).available
            if balance.minor_units < needed:
                await admin.deposit(
                    customer.bank,
                    customer.account,
                    needed - balance.minor_units,
                    balance.currency or "USD",
                )


# -- the load --------------------------------------------------------------------------------

Order = tuple[int, int, int]  # payer index, payee index, amount in minor units


def make_plan(customers: Sequence[Customer], count: int, rng: random.Random) -> list[Order]:
    """Random cross-bank payments: payer and payee always at different banks."""
    elsewhere = [
        [i for i, other in enumerate(customers) if other.bank != customer.bank]
        for customer in customers
    ]
    plan = []
    for _ in range(count):
        payer = rng.randrange(len(customers))
        plan.append((payer, rng.choice(elsewhere[payer]), rng.randint(*AMOUNT_RANGE)))
    return plan


async def drive(
    clients: Sequence[Sequence[GatewayClient]],
    customers: Sequence[Customer],
    plan: Sequence[Order],
    concurrency: int,
    per_channel: int,
) -> tuple[Samples, float]:
    """Runs ``plan`` with ``concurrency`` workers; returns what they saw and the wall time."""
    samples = Samples()
    orders: Iterator[Order] = iter(plan)  # shared: each worker takes the next order
    clock = time.perf_counter
    committed = gateway_pb2.PAYMENT_STATUS_COMMITTED
    aborted = gateway_pb2.PAYMENT_STATUS_ABORTED

    async def worker(sessions: Sequence[GatewayClient]) -> None:
        for payer_index, payee_index, amount in orders:
            payer, payee = customers[payer_index], customers[payee_index]
            started = clock()
            try:
                answer = await sessions[payer_index].pay(payee.bank, payee.account, amount)
            except grpc.aio.AioRpcError as error:
                samples.errors[error.code().name] += 1
                continue
            samples.latencies.append(clock() - started)
            if answer.status == committed:
                samples.committed += 1
                samples.moved[(payer.bank, payer.account)] -= amount
                samples.moved[(payee.bank, payee.account)] += amount
            elif answer.status == aborted:
                samples.aborted += 1
                samples.abort_reasons[answer.reason_code or "unknown"] += 1
            else:
                samples.pending += 1

    started = clock()
    await asyncio.gather(*(worker(clients[i // per_channel]) for i in range(concurrency)))
    return samples, clock() - started


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
) -> tuple[Samples, Samples, float]:
    """Warm-up, then the measured run; ``cpu_before`` gets the CPU clocks at its start."""
    rng = random.Random(config.seed)
    warmup_plan = make_plan(customers, config.warmup, rng)
    plan = make_plan(customers, config.payments, rng)
    channels = math.ceil(config.concurrency / config.per_channel)
    bases = [
        GatewayClient(client_config(cluster, CUSTOMER_CERT), retry=RetryPolicy())
        for _ in range(channels)
    ]
    try:
        clients = [[as_user(base, token) for token in tokens] for base in bases]
        await asyncio.gather(*(base._channel.channel_ready() for base in bases))
        warm, _ = await drive(
            clients, customers, warmup_plan, config.concurrency, config.per_channel
        )
        cpu_before["at"] = cpu_snapshot(cluster)
        samples, elapsed = await drive(
            clients, customers, plan, config.concurrency, config.per_channel
        )
    finally:
        await asyncio.gather(*(base.close() for base in bases))
    return warm, samples, elapsed
