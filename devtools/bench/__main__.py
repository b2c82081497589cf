"""The benchmark's command line: arguments and the one-line errors when they do not fit
together, the echo baseline first, one ``Config`` per configuration, concurrency and repeat
(or the failover run), the summary, the plot, and the exit code (see the package's docstring
for what a run does)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import grpc

from devtools.bench import echo
from devtools.bench.config import SWEEP, WITHOUT, BenchError, Config, Setup, parse_setups
from devtools.bench.costs import costs
from devtools.bench.failover import run_failover
from devtools.bench.progress import progress
from devtools.bench.report import Report, render_all, render_json
from devtools.bench.run import ensure_certificates, run_config
from devtools.bench.summary import summarize
from devtools.customers import seed_customers
from minipay.client.api import MAX_BATCH_ITEMS
from minipay.client.errors import ApiError
from server.common.errors import ConfigError
from server.common.settings import GatewaySettings, variable

DEFAULT_PLOT = Path("docs/bench-sweep.png")


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


def batch_size(text: str) -> int:
    value = positive_int(text)
    if value > MAX_BATCH_ITEMS:
        raise argparse.ArgumentTypeError(f"at most {MAX_BATCH_ITEMS} (PayBatch's limit)")
    return value


def split_size(text: str) -> int:
    value = positive_int(text)
    if not 2 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a split payment has 2 to 100 payees, not {value}")
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
        description="Measure an echo baseline, then start a fresh cluster per configuration "
        "and measure concurrent cross-bank payments; every throughput is also given as a "
        "ratio to the echo.",
    )
    parser.add_argument(
        "--payments",
        type=positive_int,
        default=None,
        help="measured payments per run (default: 2000, or with --batch N enough for 20 calls "
        "per client: 20 x concurrency x N)",
    )
    parser.add_argument(
        "--batch",
        type=batch_size,
        default=1,
        metavar="N",
        help="payments per call: 1 pays with one Pay call each; 2-1000, with PayBatch calls "
        "of N payments of one payer (latencies are then per call) (default: %(default)s)",
    )
    parser.add_argument(
        "--split",
        type=split_size,
        default=0,
        metavar="K",
        help="split payments of K payees (2-8 with the seed's 9 customers): one Pay call with "
        "K shares each, one payment per call (default: plain payments)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=32,
        help="concurrent client coroutines, for the run and the echo (default: %(default)s)",
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
        default=None,
        help="unmeasured payments first (default: 100, or with --batch N one call per "
        "client: concurrency x N)",
    )
    parser.add_argument(
        "--per-channel",
        type=positive_int,
        default=8,
        help="workers sharing one gRPC channel (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help=f"{variable(GatewaySettings, 'log_level')} for every process, to measure what "
        f"logging costs [default: {defaults.log_level}]",
    )
    parser.add_argument(
        "--gateways",
        type=positive_int,
        default=None,
        help="gateway replicas, sharing one PostgreSQL database; more than one needs "
        "--database-url; clients spread their calls over all of them (default: 1)",
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="a PostgreSQL server (postgresql+psycopg://USER@HOST:PORT): each run creates "
        "fresh databases there (minipay_bench_<random>_gateway, ..._alpha...) and drops them "
        "after (default: SQLite files in the run's folder)",
    )
    parser.add_argument(
        "--configs",
        default="",
        metavar="BACKEND:GATEWAYS,...",
        help="the configurations to run, e.g. sqlite:1,postgres:1,postgres:2 (postgres needs "
        "--database-url) [default: sqlite:1, or postgres:GATEWAYS with --database-url]",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help=f"run {', '.join(map(str, SWEEP))} clients (instead of --concurrency) for each "
        "configuration, each on a fresh cluster, and draw the plot (see --plot)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help=f"write the PNG of throughput and p50/p99 latency against clients here "
        f"[default with --sweep: {DEFAULT_PLOT}; without: no plot]",
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=1,
        help="run each configuration this many times (a fresh cluster and echo each time) "
        "and report every figure as median [min-max] (default: %(default)s)",
    )
    parser.add_argument(
        "--preload",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="before measuring, write N finished payments straight into the databases (a "
        "day of traffic), then time history pages and idempotent replays too (default: 0)",
    )
    parser.add_argument(
        "--probes",
        type=positive_int,
        default=300,
        help="after a preload: history pages, and replays, timed one at a time "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--reconcile",
        action="store_true",
        help="after the run, time one admin reconcile of every payment stored (with "
        "--preload: of the day preloaded too) and the gateway's peak memory around it",
    )
    parser.add_argument(
        "--failover",
        action="store_true",
        help="instead of the throughput run: two gateway replicas on PostgreSQL (needs "
        "--database-url), load for --failover-seconds, kill -9 of the first at --kill-at; "
        "prints committed payments per second, the dip, and when the payments it left in "
        "doubt were finished",
    )
    parser.add_argument(
        "--failover-seconds",
        type=positive_float,
        default=25.0,
        help="how long the failover load lasts (default: %(default)s)",
    )
    parser.add_argument(
        "--kill-at",
        type=positive_float,
        default=10.0,
        help="seconds into the failover load when the first replica is killed "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--echo-seconds",
        type=positive_float,
        default=3.0,
        help="how long the echo baseline runs at each concurrency (default: %(default)s)",
    )
    parser.add_argument(
        "--costs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run each configuration again without the trace (MINIPAY_TRACE=off), without "
        "the rate limit (MINIPAY_PAY_RATE=inf) and without the journal (MINIPAY_JOURNAL=off), "
        "at --concurrency, and print what each costs "
        "[default: on, off with --sweep, --failover or --preload]",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep each cluster's databases and logs under this folder (default: a temporary "
        "folder, removed afterwards)",
    )
    args = parser.parse_args(argv)
    if args.split and args.batch > 1:
        parser.error("--split and --batch go apart: a split payment is one Pay call")
    return args


def setups(args: argparse.Namespace) -> list[Setup]:
    """The configurations to run; a BenchError when the arguments do not fit together."""
    url = args.database_url
    if args.failover:
        if not url:
            raise BenchError("--failover needs --database-url: the replicas share PostgreSQL")
        if args.configs or args.sweep:
            raise BenchError("--failover runs postgres:2 alone: leave out --configs and --sweep")
        if args.gateways == 1:
            raise BenchError("--failover needs two gateway replicas or more")
        if args.kill_at >= args.failover_seconds:
            raise BenchError("--kill-at must come before the end of --failover-seconds")
        return [Setup("postgres", args.gateways or 2)]
    if args.configs:
        if args.gateways is not None:
            raise BenchError("give --configs or --gateways, not both")
        chosen = parse_setups(args.configs)
    else:
        gateways = args.gateways or 1
        if gateways > 1 and not url:
            raise BenchError(
                f"--gateways {gateways} needs --database-url: gateway replicas share one "
                "PostgreSQL database"
            )
        chosen = [Setup("postgres" if url else "sqlite", gateways)]
    if any(setup.backend == "postgres" for setup in chosen) and not url:
        raise BenchError("the postgres configurations need --database-url")
    return chosen


def config_for(
    args: argparse.Namespace, setup: Setup, concurrency: int, round_: int, without: str = ""
) -> Config:
    batched = args.batch > 1
    payments = args.payments or (20 * concurrency * args.batch if batched else 2000)
    warmup = (
        args.warmup if args.warmup is not None else concurrency * args.batch if batched else 100
    )
    return Config(
        payments=payments,
        batch=args.batch,
        split=args.split,
        concurrency=concurrency,
        batch_max=args.batch_max,
        txn_timeout=args.txn_timeout,
        seed=args.seed,
        warmup=warmup,
        per_channel=args.per_channel,
        log_level=args.log_level,
        setup=setup,
        database_url=args.database_url,
        preload=args.preload,
        probes=args.probes,
        reconcile=args.reconcile,
        round=round_,
        without=without,
    )


def measure(args: argparse.Namespace, chosen: list[Setup], report: Report) -> None:
    """Every run, into REPORT as it goes (so that an error keeps what was measured)."""
    levels = SWEEP if args.sweep else (args.concurrency,)
    customers = seed_customers()
    for round_ in range(1, args.repeat + 1):
        baselines = {}
        for level in levels:  # first, before any cluster runs
            progress(f"echo baseline: {level} clients for {args.echo_seconds:g} s")
            baselines[level] = echo.measure(args.echo_seconds, level, args.per_channel)
            progress(f"  {echo.describe(baselines[level])}")
            report.echoes.append(baselines[level])
        for setup in chosen:
            for without in _order(args, round_):
                if without:  # the same configuration without a feature, to see its cost
                    config = config_for(args, setup, args.concurrency, round_, without)
                    baseline = baselines.get(args.concurrency) or next(iter(baselines.values()))
                    report.variants.append(run_config(config, customers, baseline, args.data_dir))
                    continue
                for level in levels:
                    config = config_for(args, setup, level, round_)
                    if args.failover:
                        report.failovers.append(
                            run_failover(
                                config,
                                customers,
                                baselines[level],
                                args.data_dir,
                                args.failover_seconds,
                                args.kill_at,
                            )
                        )
                    else:
                        report.runs.append(
                            run_config(config, customers, baselines[level], args.data_dir)
                        )


def _order(args: argparse.Namespace, round_: int) -> list[str]:
    """The runs of a round, "" for the one as built: with --costs, also one without each
    feature, in an order that turns round by round (so that no run always comes first)."""
    if not measure_costs(args):
        return [""]
    runs = ["", *WITHOUT]
    turn = (round_ - 1) % len(runs)
    return runs[turn:] + runs[:turn]


def measure_costs(args: argparse.Namespace) -> bool:
    if args.costs is not None:
        return bool(args.costs)
    return not (args.sweep or args.failover or args.preload)


def draw(args: argparse.Namespace, report: Report) -> None:
    path = args.plot or (DEFAULT_PLOT if args.sweep else None)
    if path is None or not report.summaries:
        return
    from devtools.bench.plot import plot

    first = report.runs[0]
    runs = "-".join(sorted({str(s.runs) for s in report.summaries}))
    backends = "; ".join(dict.fromkeys(f"{r.config}: {r.backend}" for r in report.runs))
    title = (
        f"minipay bench: {first.payments} payments per run, batch max {first.batch_max}, "
        f"log {first.log_level}, preloaded {first.preloaded}, median and min-max of "
        f"{runs} run(s) each\n{backends}"
    )
    report.plot = str(plot(report.summaries, path, title))


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        chosen = setups(args)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)  # so that ``finally`` stops the cluster
    report = Report()
    status = 0
    try:
        ensure_certificates()
        measure(args, chosen, report)
    except KeyboardInterrupt:
        progress("interrupted; cluster stopped")
        return 130
    except (
        BenchError,
        ConfigError,
        RuntimeError,
        TimeoutError,
        OSError,
        ApiError,
        grpc.aio.AioRpcError,
    ) as error:
        message = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
        progress(f"error: {message}")
        status = 1
    report.summaries = summarize(report.runs)
    report.costs = costs(report.runs, report.variants)
    draw(args, report)
    if report.runs or report.failovers:
        print(render_json(report) if args.json else render_all(report))
    problems = [r.problems for r in [*report.runs, *report.variants]]
    problems += [f.problems for f in report.failovers]
    return status or (0 if not any(problems) else 1)


if __name__ == "__main__":
    sys.exit(main())
