"""What a benchmark run is: the configurations a run may use (``sqlite:1``, ``postgres:2``:
a database backend and a number of gateway replicas), one run's ``Config`` (and the cluster
settings that follow from it), and the ``Result`` it measured."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from devtools.cluster import every_process
from server.common.settings import GatewaySettings, environment

SWEEP = (1, 2, 4, 8, 16, 32, 64)  # clients, for --sweep
BACKENDS = ("sqlite", "postgres")
BCRYPT_ROUNDS = 4  # logging in every customer fast; the bench measures payments
# The always-on features a run may leave out, to measure what they cost, and the gateway
# settings (a benchmark's switches) that leave each out.
WITHOUT = {
    "trace": environment(GatewaySettings, trace=False),
    "rate limit": environment(GatewaySettings, pay_rate=math.inf),
    "journal": environment(GatewaySettings, journal=False),
}


class BenchError(Exception):
    """The benchmark could not run (set-up failed, or arguments that do not fit together);
    one line for the user."""


@dataclass(frozen=True)
class Setup:
    """One configuration: where the databases are and how many gateway replicas share them."""

    backend: str  # "sqlite" or "postgres"
    gateways: int = 1

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.gateways}"


def parse_setups(text: str) -> list[Setup]:
    """``sqlite:1,postgres:1,postgres:2`` (BACKEND[:GATEWAYS], GATEWAYS 1 when left out)."""
    setups = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        backend, _, count = item.partition(":")
        if backend not in BACKENDS:
            raise BenchError(f"--configs {item!r}: the backend is one of {', '.join(BACKENDS)}")
        try:
            gateways = int(count) if count else 1
        except ValueError:
            raise BenchError(f"--configs {item!r}: the gateways are a whole number") from None
        if gateways < 1:
            raise BenchError(f"--configs {item!r}: at least one gateway")
        if backend == "sqlite" and gateways > 1:
            raise BenchError(
                f"--configs {item!r}: gateway replicas share one database: use postgres:N"
            )
        setups.append(Setup(backend, gateways))
    if not setups:
        raise BenchError("--configs names no configuration")
    return list(dict.fromkeys(setups))


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
    setup: Setup = Setup("sqlite")
    database_url: str = ""  # the PostgreSQL server, for setup.backend "postgres"
    preload: int = 0  # finished payments written straight into the databases first
    probes: int = 300  # history pages and replays timed after a preload
    reconcile: bool = False  # time an admin reconcile once the run is over
    round: int = 1  # which repetition of this configuration (--repeat)
    batch: int = 1  # payments per call: 1, one Pay each; more, PayBatch calls of that many
    split: int = 0  # payees per payment: 0, one each; 2 or more, split payments of that many
    without: str = ""  # a feature of WITHOUT left out, to measure its cost; "": as built

    def cluster_env(self) -> dict[str, str]:
        env = every_process(bcrypt_rounds=BCRYPT_ROUNDS)
        if self.without:
            env.update(WITHOUT[self.without])
        if self.batch_max is not None:
            env.update(environment(GatewaySettings, batch_max=self.batch_max))
        if self.txn_timeout is not None:
            env.update(every_process(txn_timeout=self.txn_timeout))
        if self.log_level is not None:
            env.update(every_process(log_level=self.log_level))
        return env

    @property
    def effective_batch_max(self) -> int:
        return self.batch_max if self.batch_max is not None else GatewaySettings().batch_max

    @property
    def effective_txn_timeout(self) -> float:
        return self.txn_timeout if self.txn_timeout is not None else GatewaySettings().txn_timeout

    @property
    def effective_log_level(self) -> str:
        return self.log_level or GatewaySettings().log_level


@dataclass
class Result:
    config: str  # the configuration's label, e.g. "postgres:2"
    round: int
    concurrency: int
    channels: int
    batch_max: int
    txn_timeout: float
    log_level: str
    backend: str  # the database and its durability, as measured (e.g. synchronous_commit)
    gateways: int
    preloaded: int  # finished payments in the databases before the run
    preload_s: float  # how long writing them took
    payments: int
    warmup: int
    seed: int
    elapsed_s: float
    payments_per_s: float
    committed_per_s: float
    echo_rpc_per_s: float  # the echo baseline at the same concurrency, in the same run
    payments_x_echo: float
    committed_x_echo: float
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
    ledgers_match: bool  # every balance equals the sum of its ledger entries
    unknown_outcomes: int  # errors and pending answers: their effect is not known here
    problems: list[str]
    cpu_s: dict[str, float]
    # CPU per measured payment: "cluster", "gateways" (every replica), each replica by name,
    # "banks", each bank by name, "bench".
    cpu_ms_per_payment: dict[str, float]
    log_mb: dict[str, float]
    pids: dict[str, int]
    probes: dict[str, Any] | None = None  # after a preload: history pages and replays
    reconcile: dict[str, Any] | None = None  # with --reconcile: its time, findings, memory
    batch: int = 1  # payments per call (PayBatch when more than 1); latencies are per call
    split: int = 0  # payees per split payment (0: one payee each)
    without: str = ""  # the feature left out (Config.without); "": as built
