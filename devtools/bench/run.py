"""One configuration from start to stop: its databases, a fresh cluster, the preload (if
any), the customers' set-up, warm-up, the measured run, the probes, the books before and
after, and the ``Result``; the cluster is always stopped and fresh databases dropped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certificate.ca import CLIENTS_CA, SERVICES_CA
from devtools import books
from devtools.bench import backends
from devtools.bench.config import BenchError, Config, Result
from devtools.bench.echo import EchoResult
from devtools.bench.event_watch import EventDelays
from devtools.bench.load import (
    ADMIN_CERT,
    AMOUNT_RANGE,
    CUSTOMER_CERT,
    RetryCounter,
    Samples,
    client_config,
    load,
    percentiles,
    top_up,
)
from devtools.bench.preload import Preloaded, preload
from devtools.bench.probes import probe
from devtools.bench.processes import cpu_per_payment, cpu_snapshot, cpu_used, log_sizes
from devtools.bench.progress import progress
from devtools.cluster import DEFAULT_BANK_NAMES, GATEWAY, Cluster
from devtools.customers import ADMIN, Customer, log_in_everyone
from minipay.client.api import GatewayClient
from server.common.settings import DEV_CERTS

IDLE_TIMEOUT = 60.0


def ensure_certificates(certs: Path = DEV_CERTS) -> None:
    needed = [GATEWAY, ADMIN_CERT, CUSTOMER_CERT, *DEFAULT_BANK_NAMES]
    files = [SERVICES_CA, CLIENTS_CA, *(f"{name}.pem" for name in needed)]
    if all((certs / name).exists() for name in files):
        return
    from certificate.ca import ensure_dev_pki  # what ``python -m certificate init`` does

    print(f"creating the development certificates in {certs}", file=sys.stderr)
    ensure_dev_pki(certs)


@contextlib.contextmanager
def cluster_folder(data_dir: Path | None, name: str) -> Iterator[Path]:
    """A temporary folder (removed afterwards), or a new one under DATA_DIR (kept, for
    reading the logs)."""
    if data_dir is None:
        with tempfile.TemporaryDirectory(prefix="minipay-bench-") as temporary:
            yield Path(temporary)
        return
    kept = data_dir / name
    if kept.exists():
        raise BenchError(f"{kept} exists already; give a new --data-dir")
    yield kept


@contextlib.contextmanager
def new_cluster(config: Config, data_dir: Path | None, name: str) -> Iterator[Cluster]:
    """A cluster (not started) for CONFIG with its own folder and databases; on exit it is
    stopped, and fresh PostgreSQL databases are dropped."""
    with (
        cluster_folder(data_dir, name) as folder,
        backends.databases(config.setup, config.database_url, DEFAULT_BANK_NAMES) as urls,
    ):
        cluster = Cluster(
            folder, env=config.cluster_env(), gateways=config.setup.gateways, database_urls=urls
        )
        try:
            yield cluster
        finally:
            cluster.stop()


def start(cluster: Cluster, what: str) -> None:
    progress(
        f"{what}: starting {len(cluster.bank_names)} banks and {len(cluster.gateway_names)} "
        f"gateway replica(s) in {cluster.data_dir}"
    )
    cluster.start()
    pids = {name: process.pid for name, process in cluster.processes.items()}
    progress("  pids " + " ".join(f"{name}={pid}" for name, pid in pids.items()))


def log_in(cluster: Cluster, customers: Sequence[Customer]) -> list[str]:
    """Registers and logs in every customer; their tokens, in order."""
    config = client_config(cluster, CUSTOMER_CERT)
    return list(asyncio.run(log_in_everyone(config, customers)).values())


def fill(cluster: Cluster, config: Config, customers: Sequence[Customer]) -> Preloaded:
    """Stops the started CLUSTER, preloads its databases, starts it again."""
    cluster.stop()
    progress(f"  preloading {config.preload} finished payments into the databases")
    preloaded = preload(
        cluster,
        customers,
        config.preload,
        config.seed,
        config.effective_txn_timeout,
        sample=config.probes,
    )
    rows = sum(preloaded.rows.values())
    progress(f"  {rows} rows in {preloaded.seconds:.1f} s; starting the cluster again")
    cluster.start()
    return preloaded


@dataclass
class Measured:
    """What one run saw, before it becomes a ``Result``."""

    backend: str
    echo: EchoResult
    warm: Samples
    samples: Samples
    elapsed: float
    before: books.Books
    after: books.Books
    ledger_mismatched: list[str]
    cpu: dict[str, float]
    cpu_per_payment: dict[str, float]
    logs: dict[str, float]
    pids: dict[str, int]
    retries: int
    preloaded: Preloaded | None
    probes: dict[str, Any] | None
    reconcile: dict[str, Any] | None = None


def run_config(
    config: Config, customers: Sequence[Customer], echo: EchoResult, data_dir: Path | None = None
) -> Result:
    """Databases, a fresh cluster, preload, set-up, warm-up, the measured run, the probes
    and the checks; the cluster always stopped."""
    retries = RetryCounter()
    client_log = logging.getLogger("minipay.client")
    client_log.addHandler(retries)
    label = config.setup.label
    name = f"{label.replace(':', '-')}-c{config.concurrency}-b{config.effective_batch_max}"
    name += f"-n{config.batch}" if config.batch > 1 else ""
    name += f"-s{config.split}" if config.split else ""
    name += f"-r{config.round}" + (
        f"-without-{config.without.replace(' ', '-')}" if config.without else ""
    )
    backend = backends.describe(config.setup, config.database_url)
    try:
        with new_cluster(config, data_dir, name) as cluster:
            without = f" without the {config.without}" if config.without else ""
            start(cluster, f"{label} c={config.concurrency} round {config.round}{without}")
            preloaded = fill(cluster, config, customers) if config.preload else None
            pids = {name: process.pid for name, process in cluster.processes.items()}
            tokens = log_in(cluster, customers)
            needed = (config.payments + config.warmup) * AMOUNT_RANGE[1]
            asyncio.run(top_up(cluster, customers, tokens, needed))
            before = books.wait_idle(cluster, IDLE_TIMEOUT)
            calls = f" in PayBatch calls of {config.batch}" if config.batch > 1 else ""
            calls = f" split to {config.split} payees each" if config.split else calls
            progress(
                f"  {len(customers)} customers logged in; warm-up {config.warmup}, "
                f"then {config.payments} payments{calls}"
            )
            cpu_start: dict[str, dict[str, float]] = {}
            delays = EventDelays(cluster.gateway_names[-1])
            warm, samples, elapsed = asyncio.run(
                load(cluster, config, customers, tokens, cpu_start, delays=delays)
            )
            cpu_end = cpu_snapshot(cluster)
            progress(f"  done in {elapsed:.2f} s; {delays.summary()}")
            probes = None
            if preloaded is not None:
                progress(f"  timing {config.probes} history pages and replays, one at a time")
                probes = asyncio.run(probe(cluster, customers, tokens, preloaded, config.probes))
            progress("  waiting for the cluster to be idle")
            after = books.wait_idle(cluster, max(IDLE_TIMEOUT, 3 * config.effective_txn_timeout))
            reconciled = None
            if config.reconcile:
                progress("  reconciling every payment stored")
                reconciled = asyncio.run(time_reconcile(cluster))
                progress(
                    f"  reconciled {reconciled['payments_checked']} payments in "
                    f"{reconciled['seconds']:.1f} s: {reconciled['findings_total']} findings"
                )
            cpu = cpu_used(cluster, cpu_start["at"], cpu_end)
            done = samples.committed + samples.aborted + samples.pending
            measured = Measured(
                backend=backend,
                echo=echo,
                warm=warm,
                samples=samples,
                elapsed=elapsed,
                before=before,
                after=after,
                ledger_mismatched=books.ledger_mismatches(cluster),
                cpu=cpu,
                cpu_per_payment=cpu_per_payment(cluster, cpu, done),
                logs=log_sizes(cluster),
                pids=pids,
                retries=retries.count,
                preloaded=preloaded,
                probes=probes,
                reconcile=reconciled,
            )
    finally:
        client_log.removeHandler(retries)
    return summarize(config, measured)


def ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 3) if baseline else 0.0


def summarize(config: Config, m: Measured) -> Result:
    samples = m.samples
    unknown = sum(s.pending + sum(s.errors.values()) for s in (m.warm, samples))
    checks = books.check(
        m.before, m.after, [m.warm.moved, samples.moved], unknown, m.ledger_mismatched
    )
    done = samples.committed + samples.aborted + samples.pending
    payments_per_s = round(done / m.elapsed, 1) if m.elapsed else 0.0
    committed_per_s = round(samples.committed / m.elapsed, 1) if m.elapsed else 0.0
    problems = list(checks.problems)
    if m.probes is not None:
        problems += m.probes["problems"]
    if m.reconcile is not None and not m.reconcile["agreed"]:
        problems.append(f"reconcile found {m.reconcile['findings_total']}: {m.reconcile['codes']}")
    return Result(
        config=config.setup.label,
        round=config.round,
        concurrency=config.concurrency,
        channels=math.ceil(config.concurrency / config.per_channel),
        batch_max=config.effective_batch_max,
        txn_timeout=config.effective_txn_timeout,
        log_level=config.effective_log_level,
        backend=m.backend,
        gateways=config.setup.gateways,
        preloaded=m.preloaded.payments if m.preloaded else 0,
        preload_s=m.preloaded.seconds if m.preloaded else 0.0,
        payments=config.payments,
        warmup=config.warmup,
        seed=config.seed,
        elapsed_s=round(m.elapsed, 3),
        payments_per_s=payments_per_s,
        committed_per_s=committed_per_s,
        echo_rpc_per_s=m.echo.rpc_per_s,
        payments_x_echo=ratio(payments_per_s, m.echo.rpc_per_s),
        committed_x_echo=ratio(committed_per_s, m.echo.rpc_per_s),
        latency_ms=percentiles(samples.latencies),
        committed=samples.committed,
        aborted=samples.aborted,
        pending=samples.pending,
        abort_reasons=dict(samples.abort_reasons),
        errors=dict(samples.errors),
        client_retries=m.retries,
        money_before=m.before.total,
        money_after=m.after.total,
        conserved=checks.conserved,
        idle=m.after.idle,
        balances_match=checks.balances_match,
        ledgers_match=checks.ledgers_match,
        unknown_outcomes=unknown,
        problems=problems,
        cpu_s=m.cpu,
        cpu_ms_per_payment=m.cpu_per_payment,
        log_mb=m.logs,
        pids=m.pids,
        probes=m.probes,
        reconcile=m.reconcile,
        batch=config.batch,
        split=config.split,
        without=config.without,
    )


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def time_reconcile(cluster: Cluster) -> dict[str, Any]:
    """One admin reconcile through the first gateway: its time, what it checked and found,
    and the gateway's and the banks' peak memory before and after it."""
    pids = {name: process.pid for name, process in cluster.processes.items()}
    before = {name: _peak_rss_mb(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    async with GatewayClient(client_config(cluster, ADMIN_CERT)) as admin:
        await admin.login(*ADMIN)
        report = await admin.reconcile(60)
    seconds = time.perf_counter() - started
    after = {name: _peak_rss_mb(pid) for name, pid in pids.items()}
    return {
        "seconds": round(seconds, 2),
        "agreed": report.agreed,
        "payments_checked": report.payments_checked,
        "entries_checked": report.entries_checked,
        "deposits_checked": report.deposits_checked,
        "findings_total": report.findings_total,
        "codes": sorted({finding.code for finding in report.findings}),
        "peak_rss_mb_before": before,
        "peak_rss_mb_after": after,
    }
