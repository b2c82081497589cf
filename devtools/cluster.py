"""Starting a whole cluster (banks and the gateway) as real processes on loopback: what
``make up`` and ``make demo`` run, and what the tests and the benchmark start.

Each process is the real entry point (``python -m server.bank`` / ``python -m server.gateway``)
with its own database and log file in the data folder; readiness is the standard health check.
``python -m devtools.cluster`` (``make up``) keeps one running in the foreground, with the web
console (``ConsoleProcess``: ``python -m console``, its own process, a client of the gateway
like any other): it restarts a process that dies, and stops everything on Ctrl-C or SIGTERM,
starting up included. What it
writes in the data folder is its owner's alone (folders 0700, files 0600): the servers' output
names users.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from certificate.ca import CLIENTS_CA, SERVICES_CA
from devtools.scratch import LOOPBACK, port_in_use, server_url
from devtools.scratch import free_port as free_port  # tests written before devtools/scratch.py
from minipay.launch import die_interrupted
from minipay.service_names import GATEWAY_SERVER_NAME, bank_server_name
from server.common.errors import ConfigError
from server.common.settings import (
    DEV_CERTS,
    BankSettings,
    GatewaySettings,
    ProcessSettings,
    environment,
    from_namespace,
    parse_bank_map,
    variable,
)
from server.common.tls import TlsFiles, channel_credentials, channel_options

GATEWAY = "gateway"  # the first gateway replica's name


def gateway_name(number: int) -> str:
    """Replica NUMBER's name: "gateway", then "gateway-2", "gateway-3"..."""
    return GATEWAY if number == 1 else f"{GATEWAY}-{number}"


DEFAULT_BANK_NAMES = ("alpha", "beta", "gamma")
ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_PORTS = {
    GATEWAY: int(GatewaySettings().listen.rpartition(":")[2]),
    **{bank: int(a.rpartition(":")[2]) for bank, a in parse_bank_map(BankSettings().banks).items()},
}
DEFAULT_GATEWAY_PORT = _DEFAULT_PORTS[GATEWAY]
DEFAULT_BANK_PORT = _DEFAULT_PORTS[DEFAULT_BANK_NAMES[0]]
# What every settings variable starts with (server/common/settings.py makes the names).
SETTINGS_PREFIX = "MINIPAY_"
# The health probe asks every 0.1 s while a process starts. With the clients' reconnect
# backoff (doubling up to 2 s) its channel would try again only every 2 s by then, and see a
# server serving up to 2 s late: it tries every 0.1 s instead.
PROBE_BACKOFF = {"grpc.initial_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 100}
# make up on PostgreSQL: the databases are PREFIX_gateway, PREFIX_alpha...
DEFAULT_DATABASE_PREFIX = "minipay"
_DATABASE_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,40}")


class Stopped(Exception):
    """A stop was asked for (Ctrl-C, SIGTERM) while the cluster was starting."""


def private_folder(path: Path) -> None:
    """PATH as a folder only its owner can enter, whether it is new or not."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def private_append(path: Path) -> int:
    """A descriptor appending to PATH, a file only its owner can read, whether new or not."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def every_process(**values: Any) -> dict[str, str]:
    """The variables that give both the gateway and the banks these (shared) settings."""
    return {**environment(GatewaySettings, **values), **environment(BankSettings, **values)}


# -- the cluster -----------------------------------------------------------------------------


@dataclass
class Cluster:
    data_dir: Path
    bank_names: Sequence[str] = DEFAULT_BANK_NAMES
    ports: dict[str, int] = field(default_factory=dict)  # missing: a free port
    database_urls: dict[str, str] = field(default_factory=dict)  # missing: SQLite in data_dir
    env: dict[str, str] = field(default_factory=dict)  # MINIPAY_* for every process
    certs: Path = DEV_CERTS
    metrics_ports: dict[str, int] = field(default_factory=dict)  # Prometheus, per process
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    gateways: int = 1  # replicas: "gateway", "gateway-2", ... (they need PostgreSQL)
    # Where each process's NAME.out stood when it was last started: what it wrote since.
    _out_offsets: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        private_folder(self.data_dir)
        for name in [*self.gateway_names, *self.bank_names]:
            self.ports.setdefault(name, free_port())

    @property
    def gateway_names(self) -> list[str]:
        return [gateway_name(number) for number in range(1, self.gateways + 1)]

    def is_gateway(self, name: str) -> bool:
        return name in self.gateway_names

    @property
    def names(self) -> list[str]:
        return [*self.bank_names, *self.gateway_names]

    def address(self, name: str) -> str:
        return f"{LOOPBACK}:{self.ports[name]}"

    @property
    def gateway_address(self) -> str:
        """The first replica's address."""
        return self.address(GATEWAY)

    @property
    def gateway_addresses(self) -> str:
        """Every replica's address, comma separated (what clients and banks are given)."""
        return ",".join(self.address(name) for name in self.gateway_names)

    @property
    def banks_setting(self) -> str:
        return ",".join(f"{bank}={self.address(bank)}" for bank in self.bank_names)

    def settings_class(self, name: str) -> type[GatewaySettings] | type[BankSettings]:
        return GatewaySettings if self.is_gateway(name) else BankSettings

    def command(self, name: str) -> list[str]:
        if self.is_gateway(name):
            return [sys.executable, "-m", "server.gateway"]
        return [sys.executable, "-m", "server.bank", "--name", name]

    def fixed_environment(self, name: str, faults: str = "") -> dict[str, str]:
        """The settings the cluster always gives process NAME, whatever ``env`` says."""
        kind = self.settings_class(name)
        cert = GATEWAY if self.is_gateway(name) else name
        env = environment(
            kind,
            data_dir=self.data_dir,
            banks=self.banks_setting,
            ca=self.certs / SERVICES_CA,
            cert=self.certs / f"{cert}.pem",
            key=self.certs / f"{cert}-key.pem",
            faults=faults,
        )
        if self.is_gateway(name):
            env.update(
                environment(
                    GatewaySettings,
                    name=name,
                    listen=self.address(name),
                    client_ca=self.certs / CLIENTS_CA,
                )
            )
        else:
            env.update(environment(BankSettings, name=name, gateway=self.gateway_addresses))
        if name in self.metrics_ports:
            env.update(environment(kind, metrics_port=self.metrics_ports[name]))
        database = GATEWAY if self.is_gateway(name) else name  # the replicas share one
        if database in self.database_urls:
            env.update(environment(kind, database_url=self.database_urls[database]))
        return env

    def environment(self, name: str, faults: str = "") -> dict[str, str]:
        """The whole environment of process NAME: this one's without its settings variables,
        then ``env``, then the cluster's own settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIX)}
        # Standard error goes to NAME.out beside the full log file: warnings are enough.
        env.update(environment(self.settings_class(name), stderr_log_level="WARNING"))
        env.update(self.env)
        env.update(self.fixed_environment(name, faults))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def settings(self, name: str) -> ProcessSettings:
        """The settings process NAME starts with (flags aside), read from its environment."""
        return from_namespace(self.settings_class(name), env=self.environment(name))

    def log_path(self, name: str) -> Path:
        """The process's standard output and error (warnings, and start-up errors)."""
        return self.data_dir / f"{name}.out"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def log_file(self, name: str) -> Path:
        """The process's full structured log."""
        return self.log_dir / f"{self.settings(name).process_name}.log"

    def start_process(self, name: str, faults: str = "") -> None:
        with os.fdopen(private_append(self.log_path(name)), "ab") as out:
            self._out_offsets[name] = out.tell()
            self.processes[name] = subprocess.Popen(
                self.command(name),
                env=self.environment(name, faults),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def start(
        self,
        faults: dict[str, str] | None = None,
        timeout: float = 60.0,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        """Starts every process and waits until each serves; raises Stopped as soon as
        STOPPING() says so (the processes started so far keep running: ``stop`` ends them)."""
        for name in self.names:
            if stopping():
                raise Stopped
            self.start_process(name, (faults or {}).get(name, ""))
        for name in self.names:
            self.wait_ready(name, timeout, stopping)

    def _health_channel(self, name: str) -> grpc.Channel:
        # As the gateway: the one certificate every server here accepts.
        files = TlsFiles(
            self.certs / SERVICES_CA, self.certs / "gateway.pem", self.certs / "gateway-key.pem"
        )
        server_name = GATEWAY_SERVER_NAME if self.is_gateway(name) else bank_server_name(name)
        options = [o for o in channel_options(server_name) if o[0] not in PROBE_BACKOFF]
        options += PROBE_BACKOFF.items()
        return grpc.secure_channel(self.address(name), channel_credentials(files), options)

    def healthy(self, name: str, timeout: float = 1.0) -> bool:
        """One health check of process NAME: does it answer SERVING now?"""
        with self._health_channel(name) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout
                )
            except grpc.RpcError:
                return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_ready(
        self, name: str, timeout: float = 60.0, stopping: Callable[[], bool] = lambda: False
    ) -> None:
        """Waits until the process answers its health check; fails if it exits, and raises
        Stopped as soon as STOPPING() says so."""
        deadline = time.monotonic() + timeout
        with self._health_channel(name) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if stopping():
                    raise Stopped
                process = self.processes.get(name)
                if process is not None and process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {process.returncode}: {self.tail(name)}"
                    )
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    time.sleep(0.1)
        raise TimeoutError(f"{name} did not become healthy: {self.tail(name)}")

    def tail(self, name: str, lines: int = 5) -> str:
        """The last LINES lines the process wrote since its last start (not an earlier run's)."""
        try:
            with self.log_path(name).open("rb") as out:
                out.seek(self._out_offsets.get(name, 0))
                text = out.read().decode(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:])

    def kill(self, name: str) -> None:
        """kill -9: no clean-up, exactly like a crash."""
        process = self.processes.pop(name, None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, name: str, faults: str = "", timeout: float = 60.0) -> None:
        self.kill(name)
        self.start_process(name, faults)
        self.wait_ready(name, timeout)

    def wait_exit(self, name: str, timeout: float = 30.0) -> int:
        """Waits for a process that is expected to die (e.g. at a crash point)."""
        process = self.processes[name]
        code = process.wait(timeout)
        del self.processes[name]
        return code

    def stop(self) -> None:
        """SIGTERM for a clean stop; whatever is still running after a while is killed."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


# -- the web console ------------------------------------------------------------------------

DEFAULT_CONSOLE_PORT = 8080
CONSOLE_CERT = "console"  # the console's own client certificate (make setup issues it)


@dataclass
class ConsoleProcess:
    """The web console for CLUSTER: ``python -m console`` on loopback PORT, talking to every
    gateway replica with its own certificate; its output goes to DATA/console.out."""

    cluster: Cluster
    port: int
    process: subprocess.Popen[bytes] | None = None
    # PORT was any free port (not the user's): if taken by the time the console starts,
    # another free one is taken instead.
    any_free_port: bool = False

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.cluster.data_dir / "console.out"

    def command(self) -> list[str]:
        certs = self.cluster.certs
        return [
            sys.executable,
            "-m",
            "console",
            "--listen",
            f"{LOOPBACK}:{self.port}",
            "--gateway",
            self.cluster.gateway_addresses,
            "--ca",
            str(certs / SERVICES_CA),
            "--cert",
            str(certs / f"{CONSOLE_CERT}.pem"),
            "--key",
            str(certs / f"{CONSOLE_CERT}-key.pem"),
        ]

    def start(self) -> None:
        if self.any_free_port and port_in_use(self.port):
            # Taken since it was chosen (a free port is one of the ephemeral ones, which an
            # outgoing connection may take meanwhile): another, chosen now.
            self.port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with os.fdopen(private_append(self.log_path), "ab") as out:
            self.process = subprocess.Popen(
                self.command(), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )

    def healthy(self, timeout: float = 1.0) -> bool:
        """Does it answer its sign-in page now?"""
        try:
            with urllib.request.urlopen(f"{self.url}/login", timeout=timeout) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def wait_ready(
        self, timeout: float = 30.0, stopping: Callable[[], bool] = lambda: False
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stopping():
                raise Stopped
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"the console exited with {self.process.returncode}: {self.tail()}"
                )
            if self.healthy():
                return
            time.sleep(0.1)
        raise TimeoutError(f"the console did not serve: {self.tail()}")

    def tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


# -- the launcher (``make up``) --------------------------------------------------------------

FIRST_BACKOFF = 0.5  # seconds before restarting a process that died
MAX_BACKOFF = 5.0  # the most it waits, after repeated quick deaths
QUICK_DEATH = 10.0  # a process that dies sooner than this after its start died quickly
POLL = 0.2


def backoff(quick_deaths: int) -> float:
    """Seconds to wait before a restart, after this many quick deaths in a row."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2.0**quick_deaths)


def exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class EventLog:
    """The launcher's events: one line each, on standard output (or error for warnings) and
    in DATA/logs/cluster.log with the time."""

    def __init__(self, path: Path) -> None:
        private_folder(path.parent)
        self.path = path
        self._file: TextIO = os.fdopen(private_append(path), "a", encoding="utf-8", buffering=1)

    def __call__(self, message: str) -> None:
        """An event: on standard output with the time of day."""
        moment = self._write(message)
        print(f"{moment:%H:%M:%S} {message}", flush=True)

    def problem(self, message: str) -> None:
        """An ``error:`` or ``warning:`` line: on standard error as it is."""
        self._write(message)
        print(message, file=sys.stderr, flush=True)

    def _write(self, message: str) -> datetime:
        moment = datetime.now(UTC)
        stamp = f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"  # as the servers
        self._file.write(f"{stamp} {message}\n")
        return moment

    def close(self) -> None:
        self._file.close()


@dataclass
class Watched:
    """What the launcher knows about one process it keeps running."""

    started: float
    quick_deaths: int = 0
    restart_at: float | None = None  # set while waiting to restart it
    ready: bool = True


def supervise(
    cluster: Cluster,
    events: EventLog,
    stopping: Callable[[], bool],
    console: ConsoleProcess | None = None,
) -> None:
    """Restarts every process that dies (after a backoff) until ``stopping()``."""
    watched = {name: Watched(time.monotonic()) for name in cluster.names}
    console_state = Watched(time.monotonic())
    while not stopping():
        now = time.monotonic()
        if console is not None:
            _supervise_console(console, console_state, events, now)
        for name, state in watched.items():
            if stopping():
                return
            process = cluster.processes[name]
            if state.restart_at is None and process.poll() is not None:
                lived = now - state.started
                state.quick_deaths = state.quick_deaths + 1 if lived < QUICK_DEATH else 0
                delay = backoff(state.quick_deaths)
                state.restart_at = now + delay
                events(
                    f"{name} (pid {process.pid}) exited with {exit_reason(process.returncode)} "
                    f"after {lived:.1f} s; restarting it in {delay:g} s"
                )
            elif state.restart_at is not None and now >= state.restart_at:
                cluster.start_process(name)
                watched[name] = Watched(now, state.quick_deaths, ready=False)
                events(f"{name} restarted: pid {cluster.processes[name].pid}")
            elif not state.ready and process.poll() is None and cluster.healthy(name, POLL):
                state.ready = True
                events(f"{name} (pid {process.pid}) is serving again")
        time.sleep(POLL)


def _supervise_console(
    console: ConsoleProcess, state: Watched, events: EventLog, now: float
) -> None:
    process = console.process
    if state.restart_at is None and process is not None and process.poll() is not None:
        lived = now - state.started
        state.quick_deaths = state.quick_deaths + 1 if lived < QUICK_DEATH else 0
        state.restart_at = now + backoff(state.quick_deaths)
        events(
            f"console (pid {process.pid}) exited with {exit_reason(process.returncode)} after "
            f"{lived:.1f} s; restarting it in {backoff(state.quick_deaths):g} s"
        )
    elif state.restart_at is not None and now >= state.restart_at:
        console.start()
        state.started, state.restart_at = now, None
        assert console.process is not None
        events(f"console restarted: pid {console.process.pid}")


def launcher_environment(
    environ: Mapping[str, str], banks: Sequence[str], gateways: Sequence[str]
) -> tuple[dict[str, str], dict[str, int], list[str]]:
    """The user's settings variables for every process, the metrics ports (one each, counting
    up from the banks' and the gateways' metrics variables), and warnings about the variables
    that cannot go to several processes at once."""
    env = {k: v for k, v in environ.items() if k.startswith(SETTINGS_PREFIX)}
    warnings = []
    metrics_ports: dict[str, int] = {}
    for kind, names in ((BankSettings, banks), (GatewaySettings, gateways)):
        key = variable(kind, "metrics_port")
        if key not in env:
            continue
        raw = env.pop(key) if len(names) > 1 or kind is BankSettings else env[key]
        try:
            first = int(raw or 0)
        except ValueError:
            raise ConfigError(f"{key} {raw!r}: expected a whole number") from None
        if first:  # one port each, counting up
            metrics_ports.update({name: first + i for i, name in enumerate(names)})
    for kind, what in ((BankSettings, "every bank"), (GatewaySettings, "every replica")):
        for name in ("name", "listen", "database_url"):
            key = variable(kind, name)
            if key in env:
                del env[key]
                warnings.append(f"{key} is not passed on: {what} needs its own")
    return env, metrics_ports, warnings


def postgres_server(url: str, prefix: str) -> str:
    """URL checked as ``make up`` takes it: a PostgreSQL server, with no database named (each
    process gets its own, PREFIX_NAME); ConfigError saying what is wrong."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not _DATABASE_PREFIX.fullmatch(prefix):
        raise ConfigError(
            f"database prefix {prefix!r}: expected lower-case letters, digits and _, "
            "starting with a letter or _, at most 41"
        )
    example = "postgresql+psycopg://USER@HOST:PORT"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"--database-url {url!r} is not a URL like {example}") from None
    if parsed.drivername not in ("postgresql", "postgresql+psycopg"):
        raise ConfigError(f"--database-url must be a PostgreSQL server, like {example}")
    if parsed.database:
        raise ConfigError(
            f"--database-url names a database ({parsed.database!r}): give the server alone, "
            f"like {example}; each process gets a database of its own there, "
            f"{prefix}_gateway, {prefix}_alpha... (the prefix: --database-prefix, "
            "make up DATABASE_PREFIX=...)"
        )
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def postgres_databases(
    url: str, names: Sequence[str], prefix: str = DEFAULT_DATABASE_PREFIX
) -> dict[str, str]:
    """A database per process on the PostgreSQL server at URL (``PREFIX_gateway``, shared by
    the replicas, and ``PREFIX_BANK``), created if missing; their URLs."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    base = postgres_server(url, prefix)
    engine = create_engine(server_url(base, "postgres"), isolation_level="AUTOCOMMIT")
    urls = {}
    try:
        with engine.connect() as connection:
            for name in names:
                database = f"{prefix}_{name}".replace("-", "_")
                exists = connection.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database}
                ).first()
                if exists is None:
                    connection.execute(text(f'CREATE DATABASE "{database}"'))
                urls[name] = server_url(base, database)
    except DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        shown = make_url(base).render_as_string(hide_password=True)
        raise ConfigError(f"cannot use the PostgreSQL server {shown}: {reason}") from None
    finally:
        engine.dispose()
    return urls


class StopRequests:
    """Ctrl-C and SIGTERM, noted rather than raised, so that a stop never interrupts the
    launcher halfway through starting or stopping a process: it looks at ``requested``."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        signal.signal(signal.SIGTERM, self._note)
        signal.signal(signal.SIGINT, self._note)

    def _note(self, signum: int, _frame: object) -> None:
        self.signal = self.signal or signal.Signals(signum)

    def requested(self) -> bool:
        return self.signal is not None


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.cluster",
        description="Run three banks and the gateway (or several replicas of it) on loopback "
        "until Ctrl-C or SIGTERM, restarting any that dies. Every settings variable in the "
        "environment is passed on to the processes, except those the cluster sets for each "
        "one (data folder, addresses, certificates).",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--gateway-port", type=int, default=DEFAULT_GATEWAY_PORT)
    parser.add_argument(
        "--bank-port", type=int, default=DEFAULT_BANK_PORT, help="first bank's port; then +1"
    )
    parser.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="gateway replicas, on consecutive ports from "
        "--gateway-port; more than one needs --database-url (default: %(default)s)",
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="a PostgreSQL server, without a database (postgresql+psycopg://USER@HOST:PORT): "
        "every process gets its own database there, created if missing (default: SQLite "
        "files in the data folder)",
    )
    parser.add_argument(
        "--database-prefix",
        default=DEFAULT_DATABASE_PREFIX,
        help="with --database-url: the databases are PREFIX_gateway, PREFIX_alpha...; give "
        "each checkout sharing a PostgreSQL server its own (default: %(default)s)",
    )
    parser.add_argument(
        "--console-port",
        type=int,
        default=DEFAULT_CONSOLE_PORT,
        help="serve the web console on this loopback port; 0: do not start it "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--certs",
        type=Path,
        default=DEV_CERTS,
        help="folder with services-ca.pem, clients-ca.pem and NAME.pem, NAME-key.pem for the "
        "gateway, each bank and the console "
        "(default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    stops = StopRequests()
    args = parse_arguments(argv)
    if args.gateways < 1 or (args.gateways > 1 and not args.database_url):
        print(
            "error: gateway replicas share one database: more than one needs --database-url "
            "(make up GATEWAYS=N DATABASE_URL=postgresql+psycopg://USER@HOST:PORT)",
            file=sys.stderr,
        )
        return 2
    gateways = [gateway_name(number) for number in range(1, args.gateways + 1)]
    ports = {name: args.gateway_port + i for i, name in enumerate(gateways)}
    ports.update({bank: args.bank_port + i for i, bank in enumerate(DEFAULT_BANK_NAMES)})
    if args.console_port:
        ports["console"] = args.console_port
    for name, port in ports.items():
        if port_in_use(port):
            print(f"error: port {port} for {name} is in use", file=sys.stderr)
            return 2
    try:
        env, metrics_ports, warnings = launcher_environment(
            os.environ, DEFAULT_BANK_NAMES, gateways
        )
        urls = (
            postgres_databases(
                args.database_url, [GATEWAY, *DEFAULT_BANK_NAMES], args.database_prefix
            )
            if args.database_url
            else {}
        )
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    console_port = ports.pop("console", 0)
    cluster = Cluster(
        args.data_dir,
        ports=ports,
        env=env,
        certs=args.certs,
        metrics_ports=metrics_ports,
        gateways=args.gateways,
        database_urls=urls,
    )
    console = ConsoleProcess(cluster, console_port) if console_port else None
    fixed = {key for name in cluster.names for key in cluster.fixed_environment(name)}
    warnings += [
        f"{key} is not passed on: the launcher sets it for each process"
        for key in sorted(env.keys() & fixed)
    ]
    with contextlib.closing(EventLog(cluster.log_dir / "cluster.log")) as events:
        for warning in warnings:
            events.problem(f"warning: {warning}")
        try:
            if not run_until_stopped(cluster, events, stops, console):
                return 1
            events(f"{stops.signal.name if stops.signal else 'stop'}: stopping every process")
        finally:
            if console is not None:
                console.stop()
            cluster.stop()
            events("cluster stopped")
    if stops.signal == signal.SIGINT:
        die_interrupted()  # as a shell expects of Ctrl-C: a script around make up stops too
    return 0


def run_until_stopped(
    cluster: Cluster, events: EventLog, stops: StopRequests, console: ConsoleProcess | None = None
) -> bool:
    """Starts the cluster (and the console), then keeps it running until a stop is
    requested; False when it could not start."""
    try:
        cluster.start(stopping=stops.requested)
        if console is not None:
            console.start()
            console.wait_ready(stopping=stops.requested)
    except Stopped:
        return True
    except (RuntimeError, TimeoutError, ConfigError) as error:
        if stops.requested():  # Ctrl-C reached the processes too, and they exited
            return True
        events.problem(f"error: {error}")
        return False
    for name in cluster.names:
        port = cluster.settings(name).metrics_port
        metrics = f"  metrics {LOOPBACK}:{port}" if port else ""
        events(
            f"{name:<8} {cluster.address(name)}  pid {cluster.processes[name].pid:<7} "
            f"log {cluster.log_file(name)}{metrics}"
        )
    if console is not None and console.process is not None:
        events(
            f"{'console':<8} {console.url}  pid {console.process.pid:<7} log {console.log_path}"
            "  (sign in as admin / admin-dev-pass)"
        )
    events("cluster up; a process that dies is restarted; Ctrl-C stops everything")
    supervise(cluster, events, stops.requested, console)
    return True


if __name__ == "__main__":
    sys.exit(main())
