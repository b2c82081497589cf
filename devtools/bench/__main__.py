"""The benchmark's command line: arguments, one ``Config`` per run, and the exit code (see
the package's docstring for what a run does)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import grpc

from devtools.bench.config import SWEEP, BenchError, Config, Result
from devtools.bench.load import seed_customers
from devtools.bench.report import progress, render_all, render_json
from devtools.bench.run import ensure_certificates, run_config
from server.common.settings import GatewaySettings, variable


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
    defaults = GatewaySettings()
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench",
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
        help=f"{variable(GatewaySettings, 'batch_max')} for the gateway (1: unbatched) "
        f"[default: the gateway's, {defaults.batch_max}]",
    )
    parser.add_argument(
        "--txn-timeout",
        type=positive_float,
        default=None,
        help=f"{variable(GatewaySettings, 'txn_timeout')} seconds "
        f"[default: {defaults.txn_timeout:g}]",
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
        help=f"{variable(GatewaySettings, 'log_level')} for every process, to measure what "
        f"logging costs [default: {defaults.log_level}]",
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
    print(render_json(results) if args.json else render_all(results))
    return 0 if all(not r.problems for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
