"""What each process of a benchmark run cost: CPU seconds (read from /proc) for the
cluster's processes, the load generator and the whole machine, and megabytes of log."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from devtools.cluster import Cluster

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds of one process (0 when /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def postgres_cpu() -> float:
    """CPU seconds of the PostgreSQL server on this machine: every ``postgres`` process, and
    what its exited children used (the postmaster reaps the backends of closed connections)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            command, fields = stat.read_text().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, IndexError, ValueError):
            continue
        if command == "postgres":
            values = fields.split()
            total += sum(int(value) for value in values[11:15])  # utime stime cutime cstime
    return total / _TICK


def machine_cpu() -> float:
    """CPU seconds every process on the machine has used (busy time of all cores)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _TICK


def cpu_snapshot(cluster: Cluster) -> dict[str, float]:
    """CPU seconds so far of every process of the cluster, this one and the machine."""
    snapshot = {name: process_cpu(process.pid) for name, process in cluster.processes.items()}
    if cluster.database_urls:  # the databases are on a PostgreSQL server (on this machine)
        snapshot["postgres"] = postgres_cpu()
    snapshot["bench"] = time.process_time()
    snapshot["machine"] = machine_cpu()
    return snapshot


def cpu_used(cluster: Cluster, start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
    """CPU seconds between two snapshots per process, plus ``bench`` (this process) and
    ``others`` (whatever else ran on the machine meanwhile)."""
    names = [*cluster.names, *(["postgres"] if "postgres" in end else []), "bench", "machine"]
    cpu = {name: round(end.get(name, 0.0) - start.get(name, 0.0), 2) for name in names}
    # Whatever else ran on this machine meanwhile (other test runs share the cores).
    cpu["others"] = round(max(0.0, cpu.pop("machine") - sum(cpu.values())), 2)
    return cpu


def cpu_per_payment(cluster: Cluster, cpu: dict[str, float], payments: int) -> dict[str, float]:
    """Milliseconds of CPU per payment (PAYMENTS: those it is shared by): the whole cluster,
    the gateway replicas together and each one, the banks together and each one, and the
    load generator."""
    if not payments:
        return {}
    gateways = sum(cpu.get(name, 0.0) for name in cluster.gateway_names)
    banks = sum(cpu.get(name, 0.0) for name in cluster.bank_names)
    shares = {"cluster": gateways + banks, "gateways": gateways}
    shares |= {name: cpu.get(name, 0.0) for name in cluster.gateway_names}
    shares["banks"] = banks
    shares |= {name: cpu.get(name, 0.0) for name in cluster.bank_names}
    if "postgres" in cpu:
        shares["postgres"] = cpu["postgres"]
    shares["bench"] = cpu.get("bench", 0.0)
    return {name: round(seconds * 1000 / payments, 2) for name, seconds in shares.items()}


def log_sizes(cluster: Cluster) -> dict[str, float]:
    """Megabytes of log each process wrote: its log file plus its captured standard error."""
    sizes: Counter[str] = Counter()
    for path in cluster.data_dir.rglob("*"):
        if path.suffix in {".log", ".out"} and path.is_file():
            sizes[path.stem.removeprefix("bank-")] += path.stat().st_size
    return {name: round(size / 1e6, 2) for name, size in sorted(sizes.items())}
