"""One configuration from start to stop: a fresh cluster, the customers' set-up, warm-up,
the measured run, the books before and after, and the ``Result``; the cluster is always
stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from devtools.bench import books
from devtools.bench.config import BACKEND, BenchError, Config, Result
from devtools.bench.load import (
    ADMIN_CERT,
    AMOUNT_RANGE,
    CUSTOMER_CERT,
    Customer,
    RetryCounter,
    Samples,
    load,
    log_in_everyone,
    percentiles,
    top_up,
)
from devtools.bench.processes import cpu_per_payment, cpu_snapshot, cpu_used, log_sizes
from devtools.bench.report import progress
from devtools.cluster import GATEWAY, Cluster
from server.common.settings import DEV_CERTS

IDLE_TIMEOUT = 60.0


def ensure_certificates(certs: Path = DEV_CERTS) -> None:
    needed = ["ca", GATEWAY, ADMIN_CERT, CUSTOMER_CERT, "alpha", "beta", "gamma"]
    if all((certs / f"{name}.pem").exists() for name in needed):
        return
    from certificate.ca import ensure_dev_pki  # what ``python -m certificate init`` does

    print(f"creating the development certificates in {certs}", file=sys.stderr)
    ensure_dev_pki(certs)


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
            before = books.wait_idle(cluster, IDLE_TIMEOUT)
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
            after = books.wait_idle(cluster, max(IDLE_TIMEOUT, 3 * config.effective_txn_timeout))
            logs = log_sizes(cluster)
        finally:
            cluster.stop()
            client_log.removeHandler(retries)
    cpu = cpu_used(cluster, cpu_start["at"], cpu_end)
    return summarize(config, samples, warm, elapsed, before, after, cpu, logs, retries, pids)


def summarize(
    config: Config,
    samples: Samples,
    warm: Samples,
    elapsed: float,
    before: books.Books,
    after: books.Books,
    cpu: dict[str, float],
    logs: dict[str, float],
    retries: RetryCounter,
    pids: dict[str, int],
) -> Result:
    unknown = sum(s.pending + sum(s.errors.values()) for s in (warm, samples))
    checks = books.check(before, after, [warm.moved, samples.moved], unknown)
    done = samples.committed + samples.aborted + samples.pending
    return Result(
        concurrency=config.concurrency,
        channels=math.ceil(config.concurrency / config.per_channel),
        batch_max=config.effective_batch_max,
        txn_timeout=config.effective_txn_timeout,
        log_level=config.effective_log_level,
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
        conserved=checks.conserved,
        idle=after.idle,
        balances_match=checks.balances_match,
        unknown_outcomes=unknown,
        problems=checks.problems,
        cpu_s=cpu,
        cpu_ms_per_payment=cpu_per_payment(cpu, done),
        log_mb=logs,
        pids=pids,
    )
