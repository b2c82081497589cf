"""``--failover``: what a client sees when a gateway replica dies under load. Two replicas
on PostgreSQL take payments from the run's concurrent clients for about 25 s; at t = 10 s the
first replica is killed with SIGKILL and not restarted. The clients go on paying (the client
library retries on another replica with the same idempotency key), and every committed
answer and every error is counted by the second it came in; errors and PENDING answers are
unknown outcomes, asked again with the same key once the load is over.

Reported: committed payments per second, how long the dip lasted (seconds after the kill
below half the median rate before it), how many payments the killed replica left in doubt
(open in the gateway's database and owned by it) and when the last of them was finished
(polling the database), and the books check once the cluster is idle."""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, select

from devtools import books
from devtools.bench import backends
from devtools.bench.config import Config
from devtools.bench.echo import EchoResult
from devtools.bench.load import (
    AMOUNT_RANGE,
    Disruption,
    RetryCounter,
    Samples,
    load,
    percentiles,
    settle,
    top_up,
)
from devtools.bench.progress import progress
from devtools.bench.run import IDLE_TIMEOUT, fill, log_in, new_cluster, ratio, start
from devtools.cluster import GATEWAY, Cluster
from devtools.customers import Customer
from server.gateway.models import Payment, Replica
from server.gateway.payment_state import OPEN_STATES

POLL = 0.1  # seconds between looks at the payments left in doubt
GUESSED_RATE = 4000  # payments per second, at most: what each account is topped up for


@dataclass
class InDoubt:
    """The payments the killed replica left open, and when the last one was finished."""

    killed_at: float = math.nan  # seconds since the load started
    count: int = 0
    cleared_after: float | None = None  # seconds after the kill; None: not within the wait


@dataclass
class FailoverResult:
    config: str
    backend: str
    gateways: int
    concurrency: int
    batch_max: int
    txn_timeout: float
    log_level: str
    preloaded: int
    echo_rpc_per_s: float
    duration_s: float
    kill_at_s: float
    killed: str
    timeline: list[dict[str, int]]  # per second of the load: committed answers, errors
    median_before: float  # committed per second, over the full seconds before the kill
    median_before_x_echo: float
    dip_seconds: int  # seconds from the kill on with fewer than half that committed
    dip_range: list[int]  # the first and the last of them
    in_doubt: int
    in_doubt_cleared_after_s: float | None
    committed: int
    aborted: int
    pending: int
    errors: dict[str, int]
    client_retries: int
    latency_ms: dict[str, float]
    money_before: int
    money_after: int
    conserved: bool
    idle: bool
    balances_match: bool
    ledgers_match: bool
    unknown_outcomes: int  # errors and PENDING answers seen by the clients
    still_unknown: int  # of those, the ones whose outcome asking again did not tell
    problems: list[str]


def replica_token(engine: Engine, name: str) -> int | None:
    with engine.connect() as connection:
        token = connection.scalar(select(Replica.token).where(Replica.name == name))
    return int(token) if token is not None else None


def open_payments(engine: Engine, owner: int | None, ids: Sequence[str] = ()) -> list[str]:
    """Open payments owned by OWNER, or (OWNER None) the open ones among IDS."""
    query = select(Payment.id).where(Payment.state.in_(OPEN_STATES))
    if owner is None:
        query = query.where(Payment.id.in_(list(ids)))
    else:
        query = query.where(Payment.owner_token == owner)
    with engine.connect() as connection:
        return list(connection.scalars(query))


class Kill:
    """The disruption: kill -9 of the first replica (not restarted), then, in a thread of
    its own, the payments it owned and left open, polled until none is."""

    def __init__(self, cluster: Cluster, engine: Engine, watch: float) -> None:
        self.cluster = cluster
        self.engine = engine
        self.watch = watch
        self.in_doubt = InDoubt()
        self._watcher: threading.Thread | None = None

    def __call__(self) -> None:
        token = replica_token(self.engine, GATEWAY)
        self.cluster.kill(GATEWAY)
        killed = time.perf_counter()
        self._watcher = threading.Thread(target=self._poll, args=(token, killed), daemon=True)
        self._watcher.start()

    def _poll(self, token: int | None, killed: float) -> None:
        left = open_payments(self.engine, token)
        self.in_doubt.count = len(left)
        while left and time.perf_counter() - killed < self.watch:
            time.sleep(POLL)
            left = open_payments(self.engine, None, left)
        if not left:
            self.in_doubt.cleared_after = round(time.perf_counter() - killed, 2)

    def wait(self) -> InDoubt:
        if self._watcher is not None:
            self._watcher.join(self.watch + 5)
        return self.in_doubt


def run_failover(
    config: Config,
    customers: Sequence[Customer],
    echo: EchoResult,
    data_dir: Path | None = None,
    duration: float = 25.0,
    kill_at: float = 10.0,
) -> FailoverResult:
    retries = RetryCounter()
    client_log = logging.getLogger("minipay.client")
    client_log.addHandler(retries)
    backend = backends.describe(config.setup, config.database_url)
    try:
        with new_cluster(config, data_dir, f"failover-c{config.concurrency}") as cluster:
            start(cluster, f"failover {config.setup.label} c={config.concurrency}")
            if config.preload:
                fill(cluster, config, customers)
            tokens = log_in(cluster, customers)
            rate = GUESSED_RATE * AMOUNT_RANGE[1] // len(customers)
            needed = int((duration + 5) * rate) + config.warmup * AMOUNT_RANGE[1]
            asyncio.run(top_up(cluster, customers, tokens, needed))
            before = books.wait_idle(cluster, IDLE_TIMEOUT)
            progress(
                f"  warm-up {config.warmup}, then {duration:g} s of payments; "
                f"{GATEWAY} is killed at t={kill_at:g} s and not restarted"
            )
            engine = create_engine(books.database_url(cluster, GATEWAY))
            try:
                kill = Kill(cluster, engine, watch=IDLE_TIMEOUT)
                disruption = Disruption(kill_at, duration, kill)
                warm, samples, _ = asyncio.run(
                    load(cluster, config, customers, tokens, {}, disruption)
                )
                in_doubt = kill.wait()
            finally:
                engine.dispose()
            in_doubt.killed_at = disruption.happened_at or math.nan
            progress(
                f"  killed {GATEWAY} at t={in_doubt.killed_at:.1f} s; it had "
                f"{in_doubt.count} payment(s) open; waiting for the cluster to be idle"
            )
            after = books.wait_idle(cluster, max(IDLE_TIMEOUT, 3 * config.effective_txn_timeout))
            # What the clients did not learn (errors, PENDING), asked again with the same key.
            unsettled = warm.unsettled + samples.unsettled
            settled, unknown = asyncio.run(settle(cluster, customers, tokens, unsettled))
            after = books.wait_idle(cluster, IDLE_TIMEOUT)
            ledgers = books.ledger_mismatches(cluster)
    finally:
        client_log.removeHandler(retries)
    return summarize(
        Run(config, backend, echo, duration, warm, samples, settled, unknown, in_doubt),
        retries.count,
        (before, after, ledgers),
    )


@dataclass
class Run:
    """What the failover run saw."""

    config: Config
    backend: str
    echo: EchoResult
    duration: float
    warm: Samples
    samples: Samples
    settled: Counter[tuple[str, str]]  # moves of the unknown outcomes that were commits
    unknown: int  # outcomes still unknown after asking again
    in_doubt: InDoubt


def per_second(moments: Sequence[float], seconds: int) -> list[int]:
    counts = [0] * seconds
    for moment in moments:
        counts[min(int(moment), seconds - 1)] += 1
    return counts


def dip(per_second: Sequence[int], kill_at: float, duration: float) -> tuple[float, list[int]]:
    """The median committed per second over the full seconds before the kill (the first
    one left out: clients starting), and the seconds from the kill on below half of it."""
    first_after = int(kill_at)
    before = list(per_second[1:first_after]) or list(per_second[:first_after])
    median = float(statistics.median(before)) if before else 0.0
    last_full = min(len(per_second), int(duration))
    below = [s for s in range(first_after, last_full) if per_second[s] < median / 2]
    return median, below


def summarize(
    run: Run, retries: int, books_around: tuple[books.Books, books.Books, list[str]]
) -> FailoverResult:
    before, after, ledgers = books_around
    config, samples, in_doubt = run.config, run.samples, run.in_doubt
    checks = books.check(
        before, after, [run.warm.moved, samples.moved, run.settled], run.unknown, ledgers
    )
    seconds = max(1, math.ceil(max([run.duration, *samples.committed_at, *samples.errors_at])))
    committed = per_second(samples.committed_at, seconds)
    errors = per_second(samples.errors_at, seconds)
    median, below = dip(committed, in_doubt.killed_at, run.duration)
    problems = list(checks.problems)
    if in_doubt.cleared_after is None:
        problems.append(f"{in_doubt.count} payment(s) of {GATEWAY} still open after the wait")
    return FailoverResult(
        config=config.setup.label,
        backend=run.backend,
        gateways=config.setup.gateways,
        concurrency=config.concurrency,
        batch_max=config.effective_batch_max,
        txn_timeout=config.effective_txn_timeout,
        log_level=config.effective_log_level,
        preloaded=config.preload,
        echo_rpc_per_s=run.echo.rpc_per_s,
        duration_s=run.duration,
        kill_at_s=round(in_doubt.killed_at, 2),
        killed=GATEWAY,
        timeline=[
            {"second": second, "committed": committed[second], "errors": errors[second]}
            for second in range(seconds)
        ],
        median_before=median,
        median_before_x_echo=ratio(median, run.echo.rpc_per_s),
        dip_seconds=len(below),
        dip_range=[below[0], below[-1]] if below else [],
        in_doubt=in_doubt.count,
        in_doubt_cleared_after_s=in_doubt.cleared_after,
        committed=samples.committed,
        aborted=samples.aborted,
        pending=samples.pending,
        errors=dict(samples.errors),
        client_retries=retries,
        latency_ms=percentiles(samples.latencies),
        money_before=before.total,
        money_after=after.total,
        conserved=checks.conserved,
        idle=after.idle,
        balances_match=checks.balances_match,
        ledgers_match=checks.ledgers_match,
        unknown_outcomes=len(run.warm.unsettled) + len(samples.unsettled),
        still_unknown=run.unknown,
        problems=problems,
    )
