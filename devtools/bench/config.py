"""What a benchmark run is: its configuration (and the cluster settings that follow from it),
and the result it measured."""

from __future__ import annotations

from dataclasses import dataclass

from devtools.cluster import every_process
from server.common.settings import GatewaySettings, environment

SWEEP = (32, 8)  # the two reference configurations
BACKEND = "sqlite (WAL, synchronous=FULL)"
BCRYPT_ROUNDS = 4  # logging in every customer fast; the bench measures payments


class BenchError(Exception):
    """The benchmark could not run (set-up failed); one line for the user."""


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
        env = every_process(bcrypt_rounds=BCRYPT_ROUNDS)
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
