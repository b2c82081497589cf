"""``python -m client.bench``: a load test of cross-bank payments against a real cluster.

Each configuration starts a fresh cluster (three banks and the gateway, SQLite with durable
synchronous commits, mutual TLS with the certificates in ``certificate/dev``) in a temporary
folder, registers and logs in every seed customer, tops their balances up through the admin
``Deposit`` call so that payments do not run out of money, and then drives ``--concurrency``
client coroutines that issue ``--payments`` payments in total, each between two different
banks. It reports throughput, latency percentiles, outcomes, the CPU each process used, and
whether money was conserved: the sum of every balance, read straight from the banks'
databases once the cluster is idle, must be the same before and after, with no hold left and
every balance moved by exactly the payments reported committed.

The load generator runs in this process on asyncio, one channel per ``--per-channel``
workers; every customer's session shares the channel (the tokens are bound to the shared
``client-1`` certificate), so a call costs one ``GatewayClient.pay`` and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import logging
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import yaml
from sqlalchemy import create_engine, func, select

from client.api import ClientConfig, GatewayClient, RetryPolicy
from protofiles.minipay.v1 import gateway_pb2
from server.bank.models import Account, BankPayment
from server.bank.models import PaymentState as BankState
from server.cluster import GATEWAY, Cluster
from server.common.settings import DEFAULT_SEED, DEV_CERTS, GatewaySettings
from server.gateway.models import Payment
from server.gateway.models import PaymentState as GatewayState

ADMIN = ("admin", "admin-dev-pass")
CUSTOMER_CERT = "client-1"
ADMIN_CERT = "admin"
SWEEP = (32, 8)  # the two reference configurations
AMOUNT_RANGE = (1, 5_000)  # minor units: $0.01 to $50.00
TARGET_THROUGHPUT = (32, 300.0)  # committed payments per second at 32 concurrent clients
TARGET_P99 = (8, 50.0)  # p99 latency in ms at 8 concurrent clients
IDLE_TIMEOUT = 60.0
BACKEND = "sqlite (WAL, synchronous=FULL)"
_OPEN_STATES = (GatewayState.PREPARING, GatewayState.COMMITTING, GatewayState.ABORTING)


class BenchError(Exception):
    """The benchmark could not run (set-up failed); one line for the user."""


# -- settings and results --------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    payments: int
    concurrency: int
    batch_max: int | None  # None: the gateway's default
    txn_timeout: float | None  # None: the default of every process
    seed: int
    warmup: int
    per_channel: int
    log_level: str | None = None  # None: the processes' default (INFO)

    def cluster_env(self) -> dict[str, str]:
        env = {"MINIPAY_BCRYPT_ROUNDS": "4"}
        if self.batch_max is not None:
            env["MINIPAY_BATCH_MAX"] = str(self.batch_max)
        if self.txn_timeout is not None:
            env["MINIPAY_TXN_TIMEOUT"] = str(self.txn_timeout)
        if self.log_level is not None:
            env["MINIPAY_LOG_LEVEL"] = self.log_level
        return env

    @property
    def effective_batch_max(self) -> int:
        return self.batch_max if self.batch_max is not None else GatewaySettings().batch_max

    @property
    def effective_txn_timeout(self) -> float:
        return self.txn_timeout if self.txn_timeout is not None else GatewaySettings().txn_timeout


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


@dataclass
class Books:
    balances: dict[tuple[str, str], int]
    held: int
    in_doubt: int  # bank records still PREPARED
    open_payments: int  # gateway payments not yet finished

    @property
    def total(self) -> int:
        return sum(self.balances.values())

    @property
    def idle(self) -> bool:
        return self.held == 0 and self.in_doubt == 0 and self.open_payments == 0


@dataclass
class Result:
    concurrency: int
    channels: int
    batch_max: int
    txn_timeout: float
    log_level: str
    backend: str
    payments: int
    warmup: int
    seed: int
    elapsed_s: float
    payments_per_s: float
    committed_per_s: float
    latency_ms: dict[str, float]
    committed: int
    aborted: int
    pending: int
    abort_reasons: dict[str, int]
    errors: dict[str, int]
    client_retries: int
    money_before: int
    money_after: int
    conserved: bool
    idle: bool
    balances_match: bool
    unknown_outcomes: int  # errors and pending answers: their effect is not known here
    problems: list[str]
    cpu_s: dict[str, float]
    cpu_ms_per_payment: dict[str, float]  # CPU of the cluster's processes per measured payment
    log_mb: dict[str, float]
    pids: dict[str, int]


# -- reading the banks' books ----------------------------------------------------------------


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def read_books(cluster: Cluster) -> Books:
    """Balances, holds and open 2PC records, straight from every database."""
    balances: dict[tuple[str, str], int] = {}
    held = in_doubt = 0
    for bank in cluster.bank_names:
        url = cluster.database_urls.get(bank) or _sqlite_url(cluster.data_dir / f"bank-{bank}.db")
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                for number, balance, hold in connection.execute(
                    select(Account.number, Account.balance, Account.held)
                ):
                    balances[(bank, number)] = int(balance)
                    held += int(hold)
                in_doubt += int(
                    connection.scalar(
                        select(func.count())
                        .select_from(BankPayment)
                        .where(BankPayment.state == BankState.PREPARED)
                    )
                    or 0
                )
        finally:
            engine.dispose()
    url = cluster.database_urls.get(GATEWAY) or _sqlite_url(cluster.data_dir / "gateway.db")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            open_payments = int(
                connection.scalar(
                    select(func.count()).select_from(Payment).where(Payment.state.in_(_OPEN_STATES))
                )
                or 0
            )
    finally:
        engine.dispose()
    return Books(balances, held, in_doubt, open_payments)


def wait_idle(cluster: Cluster, timeout: float) -> Books:
    """The books once no payment is open anywhere (or as they are when ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while True:
        books = read_books(cluster)
        if books.idle or time.monotonic() > deadline:
            return books
        time.sleep(0.2)


# -- process accounting ----------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds of one process (0 when /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_cpu() -> float:
    """CPU seconds every process on the machine has used (busy time of all cores)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _TICK


def cpu_snapshot(cluster: Cluster) -> dict[str, float]:
    snapshot = {name: process_cpu(process.pid) for name, process in cluster.processes.items()}
    snapshot["bench"] = time.process_time()
    snapshot["machine"] = machine_cpu()
    return snapshot


def log_sizes(cluster: Cluster) -> dict[str, float]:
    """Megabytes of log each process wrote: its log file plus its captured standard error."""
    sizes: Counter[str] = Counter()
    for path in cluster.data_dir.rglob("*"):
        if path.suffix in {".log", ".out"} and path.is_file():
            sizes[path.stem.removeprefix("bank-")] += path.stat().st_size
    return {name: round(size / 1e6, 2) for name, size in sorted(sizes.items())}


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


def ensure_certificates(certs: Path = DEV_CERTS) -> None:
    needed = ["ca", GATEWAY, ADMIN_CERT, CUSTOMER_CERT, "alpha", "beta", "gamma"]
    if all((certs / f"{name}.pem").exists() for name in needed):
        return
    from certificate.ca import ensure_dev_pki  # what ``python -m certificate init`` does

    print(f"creating the development certificates in {certs}", file=sys.stderr)
    ensure_dev_pki(certs)


def client_config(cluster: Cluster, cert: str) -> ClientConfig:
    return ClientConfig(
        gateway=cluster.gateway_address,
        ca=cluster.certs / "ca.pem",
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


# -- one configuration -----------------------------------------------------------------------


def run_config(
    config: Config, customers: Sequence[Customer], data_dir: Path | None = None
) -> Result:
    """A fresh cluster, set-up, warm-up, the measured run and the checks; always stopped."""
    retries = RetryCounter()
    client_log = logging.getLogger("minipay.client")
    client_log.addHandler(retries)
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="minipay-bench-"))
        else:  # kept afterwards, for reading the logs; a fresh folder per configuration
            folder = str(data_dir / f"c{config.concurrency}-b{config.effective_batch_max}")
            if Path(folder).exists():
                raise BenchError(f"{folder} exists already; give a new --data-dir")
        cluster = Cluster(Path(folder), env=config.cluster_env())
        try:
            progress(f"c={config.concurrency}: starting three banks and the gateway in {folder}")
            cluster.start()
            pids = {name: process.pid for name, process in cluster.processes.items()}
            progress("  pids " + " ".join(f"{name}={pid}" for name, pid in pids.items()))
            tokens = asyncio.run(log_in_everyone(cluster, customers))
            needed = (config.payments + config.warmup) * AMOUNT_RANGE[1]
            asyncio.run(top_up(cluster, customers, tokens, needed))
            before = wait_idle(cluster, IDLE_TIMEOUT)
            progress(
                f"  {len(customers)} customers logged in; warm-up {config.warmup}, "
                f"then {config.payments} payments"
            )
            cpu_start: dict[str, dict[str, float]] = {}
            warm, samples, elapsed = asyncio.run(
                load(cluster, config, customers, tokens, cpu_start)
            )
            cpu_end = cpu_snapshot(cluster)
            progress(f"  done in {elapsed:.2f} s; waiting for the cluster to be idle")
            after = wait_idle(cluster, max(IDLE_TIMEOUT, 3 * config.effective_txn_timeout))
            logs = log_sizes(cluster)
        finally:
            cluster.stop()
            client_log.removeHandler(retries)
    cpu = {
        name: round(cpu_end.get(name, 0.0) - cpu_start["at"].get(name, 0.0), 2)
        for name in [*cluster.bank_names, GATEWAY, "bench", "machine"]
    }
    # Whatever else ran on this machine meanwhile (other test runs share the cores).
    cpu["others"] = round(max(0.0, cpu.pop("machine") - sum(cpu.values())), 2)
    return summarize(config, samples, warm, elapsed, before, after, cpu, logs, retries, pids)


def summarize(
    config: Config,
    samples: Samples,
    warm: Samples,
    elapsed: float,
    before: Books,
    after: Books,
    cpu: dict[str, float],
    logs: dict[str, float],
    retries: RetryCounter,
    pids: dict[str, int],
) -> Result:
    problems = []
    if not after.idle:
        problems.append(
            f"cluster not idle: {after.held} held, {after.in_doubt} in doubt at banks, "
            f"{after.open_payments} open at the gateway"
        )
    conserved = before.total == after.total
    if not conserved:
        problems.append(f"money not conserved: {before.total} before, {after.total} after")
    unknown = sum(s.pending + sum(s.errors.values()) for s in (warm, samples))
    expected = Counter(before.balances)
    expected.update(warm.moved)
    expected.update(samples.moved)
    mismatched = [key for key in after.balances if after.balances[key] != expected.get(key, 0)]
    balances_match = not mismatched
    if mismatched and not unknown:  # with unknown outcomes, a mismatch proves nothing
        problems.append(
            f"{len(mismatched)} balance(s) differ from the committed payments: "
            + ", ".join(f"{bank}/{account}" for bank, account in mismatched[:5])
        )
    done = samples.committed + samples.aborted + samples.pending
    return Result(
        concurrency=config.concurrency,
        channels=math.ceil(config.concurrency / config.per_channel),
        batch_max=config.effective_batch_max,
        txn_timeout=config.effective_txn_timeout,
        log_level=config.log_level or GatewaySettings().log_level,
        backend=BACKEND,
        payments=config.payments,
        warmup=config.warmup,
        seed=config.seed,
        elapsed_s=round(elapsed, 3),
        payments_per_s=round(done / elapsed, 1) if elapsed else 0.0,
        committed_per_s=round(samples.committed / elapsed, 1) if elapsed else 0.0,
        latency_ms=percentiles(samples.latencies),
        committed=samples.committed,
        aborted=samples.aborted,
        pending=samples.pending,
        abort_reasons=dict(samples.abort_reasons),
        errors=dict(samples.errors),
        client_retries=retries.count,
        money_before=before.total,
        money_after=after.total,
        conserved=conserved,
        idle=after.idle,
        balances_match=balances_match,
        unknown_outcomes=unknown,
        problems=problems,
        cpu_s=cpu,
        cpu_ms_per_payment=cpu_per_payment(cpu, done),
        log_mb=logs,
        pids=pids,
    )


def cpu_per_payment(cpu: dict[str, float], payments: int) -> dict[str, float]:
    if not payments:
        return {}
    banks = sum(s for name, s in cpu.items() if name not in {GATEWAY, "bench", "others"})
    shares = {"cluster": banks + cpu.get(GATEWAY, 0.0), GATEWAY: cpu.get(GATEWAY, 0.0)}
    shares |= {"banks": banks, "bench": cpu.get("bench", 0.0)}
    return {name: round(seconds * 1000 / payments, 2) for name, seconds in shares.items()}


# -- reporting -------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def targets(results: Sequence[Result]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for result in results:
        if result.concurrency == TARGET_THROUGHPUT[0]:
            checks.append(
                {
                    "target": f">= {TARGET_THROUGHPUT[1]:g} committed/s at "
                    f"{TARGET_THROUGHPUT[0]} clients",
                    "batch_max": result.batch_max,
                    "measured": result.committed_per_s,
                    "met": result.committed_per_s >= TARGET_THROUGHPUT[1],
                }
            )
        if result.concurrency == TARGET_P99[0]:
            checks.append(
                {
                    "target": f"p99 < {TARGET_P99[1]:g} ms at {TARGET_P99[0]} clients",
                    "batch_max": result.batch_max,
                    "measured": result.latency_ms["p99"],
                    "met": result.latency_ms["p99"] < TARGET_P99[1],
                }
            )
    return checks


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items()))


def render(result: Result) -> str:
    lat = result.latency_ms
    aborted = f"aborted {result.aborted}"
    if result.abort_reasons:
        aborted += f" ({_counts(result.abort_reasons)})"
    errors = f"errors {sum(result.errors.values())}"
    if result.errors:
        errors += f" ({_counts(result.errors)})"
    cpu = {
        name: f"{name} {seconds:.1f} ({seconds / result.elapsed_s:.0%})"
        for name, seconds in result.cpu_s.items()
    }
    elsewhere = [cpu.pop(name) for name in ("bench", "others") if name in cpu]
    per_payment = "  ".join(f"{name} {ms:.1f}" for name, ms in result.cpu_ms_per_payment.items())
    match = "yes" if result.balances_match else "NO"
    if not result.balances_match and result.unknown_outcomes:
        match = f"not checked ({result.unknown_outcomes} outcomes unknown)"
    yes = {True: "yes", False: "NO"}
    lines = [
        f"== {result.concurrency} clients on {result.channels} channel(s) | batch max "
        f"{result.batch_max} | txn timeout {result.txn_timeout:g} s | log {result.log_level}",
        f"   {result.payments} cross-bank payments after {result.warmup} warm-up, seed "
        f"{result.seed}, {result.elapsed_s:.2f} s; {result.backend}",
        f"   throughput    {result.payments_per_s:.1f} payments/s   "
        f"{result.committed_per_s:.1f} committed/s",
        f"   latency ms    p50 {lat['p50']:.1f}   p95 {lat['p95']:.1f}   p99 {lat['p99']:.1f}"
        f"   (mean {lat['mean']:.1f}, max {lat['max']:.1f})",
        f"   outcomes      committed {result.committed}   {aborted}   pending {result.pending}"
        f"   {errors}   retries {result.client_retries}",
        f"   money         conserved {yes[result.conserved]}: {result.money_before} before, "
        f"{result.money_after} after (minor units)",
        f"                 cluster idle after {yes[result.idle]}; balances match the "
        f"committed payments {match}",
        "   cpu s (%core) " + "  ".join(cpu.values()),
        "                 " + "  ".join(elsewhere) + f" on this {os.cpu_count() or 1}-core machine",
        f"   cpu ms/pay    {per_payment}",
        "   logs MB       " + "  ".join(f"{name} {mb:.1f}" for name, mb in result.log_mb.items()),
    ]
    lines += [f"   !! {problem}" for problem in result.problems]
    return "\n".join(lines)


def render_all(results: Sequence[Result]) -> str:
    parts = [render(result) for result in results]
    if len(results) > 1:
        rows = [
            f"   {r.concurrency:>7} {r.batch_max:>9} {r.committed_per_s:>12.1f} "
            f"{r.latency_ms['p50']:>8.1f} {r.latency_ms['p95']:>8.1f} {r.latency_ms['p99']:>8.1f}"
            f" {r.committed:>9} {r.aborted:>7} {'yes' if r.conserved else 'NO':>9}"
            for r in results
        ]
        header = (
            "   clients batch-max  committed/s  p50 ms   p95 ms   p99 ms  committed aborted"
            " conserved"
        )
        parts.append("== summary\n" + "\n".join([header, *rows]))
    checks = targets(results)
    if checks:
        parts.append(
            "== targets\n"
            + "\n".join(
                f"   {check['target']:<36} measured {check['measured']:>7.1f}  "
                f"{'MET' if check['met'] else 'MISSED'}"
                for check in checks
            )
        )
    return "\n\n".join(parts)


# -- command line ----------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than zero, not {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m client.bench",
        description="Start a fresh cluster and measure concurrent cross-bank payments.",
    )
    parser.add_argument(
        "--payments",
        type=positive_int,
        default=2000,
        help="measured payments (default: %(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=32,
        help="concurrent client coroutines (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-max",
        type=positive_int,
        default=None,
        help="MINIPAY_BATCH_MAX for the gateway (1: unbatched) [default: the gateway's, "
        f"{GatewaySettings().batch_max}]",
    )
    parser.add_argument(
        "--txn-timeout",
        type=positive_float,
        default=None,
        help=f"MINIPAY_TXN_TIMEOUT seconds [default: {GatewaySettings().txn_timeout:g}]",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=100,
        help="unmeasured payments first (default: %(default)s)",
    )
    parser.add_argument(
        "--per-channel",
        type=positive_int,
        default=8,
        help="workers sharing one gRPC channel (default: %(default)s)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help=f"run the reference configurations, {' and '.join(map(str, SWEEP))} clients, each "
        "on a fresh cluster (instead of --concurrency)",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="MINIPAY_LOG_LEVEL for every process, to measure what logging costs "
        f"[default: {GatewaySettings().log_level}]",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep each cluster's databases and logs under this folder (default: a temporary "
        "folder, removed afterwards)",
    )
    return parser.parse_args(argv)


def _finite(value: Any) -> Any:
    """NaN (no call finished) becomes null, so the output stays strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # so that ``finally`` stops the cluster
    levels = SWEEP if args.sweep else (args.concurrency,)
    configs = [
        Config(
            payments=args.payments,
            concurrency=level,
            batch_max=args.batch_max,
            txn_timeout=args.txn_timeout,
            seed=args.seed,
            warmup=args.warmup,
            per_channel=args.per_channel,
            log_level=args.log_level,
        )
        for level in levels
    ]
    results: list[Result] = []
    try:
        ensure_certificates()
        customers = seed_customers()
        for config in configs:
            results.append(run_config(config, customers, args.data_dir))
    except KeyboardInterrupt:
        progress("interrupted; cluster stopped")
        return 130
    except (BenchError, RuntimeError, TimeoutError, OSError, grpc.aio.AioRpcError) as error:
        message = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
        progress(f"error: {message}")
        return 1
    if args.json:
        report = {"runs": [asdict(r) for r in results], "targets": targets(results)}
        print(json.dumps(_finite(report)))
    else:
        print(render_all(results))
    return 0 if all(not r.problems for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
