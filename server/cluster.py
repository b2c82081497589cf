"""Starting a whole cluster (banks and the gateway) as real processes on loopback: what
``make up`` and ``make demo`` run, and what the tests and the benchmark start.

Each process is the real entry point (``python -m server.bank`` / ``python -m server.gateway``)
with its own database and log file in the data folder; readiness is the standard health check.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.common.settings import DEV_CERTS
from server.common.tls import TlsFiles, channel_credentials

GATEWAY = "gateway"
DEFAULT_BANK_NAMES = ("alpha", "beta", "gamma")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name in [GATEWAY, *self.bank_names]:
            self.ports.setdefault(name, free_port())

    @property
    def names(self) -> list[str]:
        return [*self.bank_names, GATEWAY]

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    @property
    def gateway_address(self) -> str:
        return self.address(GATEWAY)

    @property
    def banks_setting(self) -> str:
        return ",".join(f"{bank}={self.address(bank)}" for bank in self.bank_names)

    def command(self, name: str) -> list[str]:
        if name == GATEWAY:
            return [sys.executable, "-m", "server.gateway"]
        return [sys.executable, "-m", "server.bank", "--name", name]

    def environment(self, name: str, faults: str = "") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")}
        # Standard error goes to NAME.out beside the full log file: warnings are enough.
        env["MINIPAY_STDERR_LOG_LEVEL"] = "WARNING"
        env.update(self.env)
        env.update(
            {
                "MINIPAY_DATA_DIR": str(self.data_dir),
                "MINIPAY_BANKS": self.banks_setting,
                "MINIPAY_GATEWAY": self.gateway_address,
                "MINIPAY_GATEWAY_LISTEN": self.gateway_address,
                "MINIPAY_CA": str(self.certs / "ca.pem"),
                "MINIPAY_FAULTS": faults,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if name in self.metrics_ports:
            kind = "GATEWAY" if name == GATEWAY else "BANK"
            env[f"MINIPAY_{kind}_METRICS_PORT"] = str(self.metrics_ports[name])
        if name == GATEWAY:
            env["MINIPAY_CERT"] = str(self.certs / "gateway.pem")
            env["MINIPAY_KEY"] = str(self.certs / "gateway-key.pem")
            if GATEWAY in self.database_urls:
                env["MINIPAY_GATEWAY_DATABASE_URL"] = self.database_urls[GATEWAY]
        else:
            env["MINIPAY_CERT"] = str(self.certs / f"{name}.pem")
            env["MINIPAY_KEY"] = str(self.certs / f"{name}-key.pem")
            if name in self.database_urls:
                env["MINIPAY_BANK_DATABASE_URL"] = self.database_urls[name]
        return env

    def log_path(self, name: str) -> Path:
        """The process's standard output and error (warnings, and start-up errors)."""
        return self.data_dir / f"{name}.out"

    def log_file(self, name: str) -> Path:
        """The process's full structured log."""
        component = GATEWAY if name == GATEWAY else f"bank-{name}"
        return self.data_dir / "logs" / f"{component}.log"

    def start_process(self, name: str, faults: str = "") -> None:
        with self.log_path(name).open("ab") as out:
            self.processes[name] = subprocess.Popen(
                self.command(name),
                env=self.environment(name, faults),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[1],
            )

    def start(self, faults: dict[str, str] | None = None, timeout: float = 60.0) -> None:
        for name in self.names:
            self.start_process(name, (faults or {}).get(name, ""))
        for name in self.names:
            self.wait_ready(name, timeout)

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        """Waits until the process answers its health check; fails if it exits."""
        files = TlsFiles(
            self.certs / "ca.pem", self.certs / "gateway.pem", self.certs / "gateway-key.pem"
        )
        deadline = time.monotonic() + timeout
        with grpc.secure_channel(self.address(name), channel_credentials(files)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
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
        try:
            return " | ".join(self.log_path(name).read_text().splitlines()[-lines:])
        except OSError:
            return ""

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server.cluster",
        description="Run three banks and the gateway on loopback until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--gateway-port", type=int, default=50051)
    parser.add_argument("--bank-port", type=int, default=50061, help="first bank's port")
    args = parser.parse_args(argv)
    ports = {GATEWAY: args.gateway_port}
    ports.update({bank: args.bank_port + i for i, bank in enumerate(DEFAULT_BANK_NAMES)})
    for name, port in ports.items():
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                print(f"error: port {port} for {name} is in use", file=sys.stderr)
                return 2
    cluster = Cluster(args.data_dir, ports=ports)
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        cluster.start()
        for name in cluster.names:
            print(f"{name:<8} {cluster.address(name)}  log {cluster.log_file(name)}")
        print("cluster up; Ctrl-C stops it", flush=True)
        while not stop_requested:
            for name, process in cluster.processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping", file=sys.stderr)
                    request_stop()
            time.sleep(0.3)
    except (RuntimeError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
        print("cluster stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
