"""The developer tools: the launcher's port probe, and ``python -m devtools.cluster`` (what
``make up`` runs) as a real process: it restarts a process killed with kill -9, stops
everything on SIGTERM, passes the user's settings variables on, and fails in one line when
the cluster cannot start."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.cluster import (
    DEFAULT_BANK_NAMES,
    GATEWAY,
    ROOT,
    SETTINGS_PREFIX,
    Cluster,
    free_port,
    port_in_use,
)
from server.common.settings import BankSettings, GatewaySettings, variable
from tests.conftest import TEST_ENV

TIME_WAIT = "06"  # the state's number in /proc/net/tcp
PROCESS_LINE = re.compile(r"^\S+ (\w+)\s+127\.0\.0\.1:\d+\s+pid (\d+)")
# Where a server may listen on loopback: gRPC listens on "127.0.0.1:PORT" through an IPv6
# socket bound to the IPv4-mapped address.
LISTENERS = [
    (socket.AF_INET, "127.0.0.1"),
    (socket.AF_INET, "0.0.0.0"),
    (socket.AF_INET6, "::ffff:127.0.0.1"),
]


# -- the port probe --------------------------------------------------------------------------


def time_wait_on(port: int) -> bool:
    """Whether a connection with local port PORT is in TIME_WAIT."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.rpartition(":")[2], 16) == port and state == TIME_WAIT:
                return True
    return False


def listener(family: int, host: str, reuse: bool = True) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse))  # gRPC sets it
    sock.bind((host, 0))
    sock.listen()
    return sock


@pytest.mark.parametrize(("family", "host"), LISTENERS)
@pytest.mark.parametrize("reuse", [True, False])
def test_port_probe_reports_a_listening_port(family: int, host: str, reuse: bool) -> None:
    with listener(family, host, reuse) as server:
        port = int(server.getsockname()[1])
        assert port_in_use(port)
    assert not port_in_use(port)


@pytest.mark.parametrize(("family", "host"), LISTENERS)
def test_port_probe_ignores_time_wait(family: int, host: str) -> None:
    """Right after a server stops, its port keeps connections in TIME_WAIT for a minute; a
    server can listen on it again, so the probe must not call it in use."""
    with listener(family, host) as server:
        port = int(server.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server's side closes first, so it is the one that waits
            client.recv(1)  # the server's FIN
    deadline = time.monotonic() + 5
    while not time_wait_on(port):
        assert time.monotonic() < deadline, f"no TIME_WAIT connection on port {port}"
        time.sleep(0.01)
    assert not port_in_use(port)


def test_free_port_is_a_port_the_probe_accepts() -> None:
    port = free_port()
    assert not port_in_use(port)


# -- the launcher ----------------------------------------------------------------------------


def consecutive_free_ports(count: int) -> int:
    """The first of COUNT free ports in a row (for --bank-port)."""
    for _ in range(50):
        first = free_port()
        if first + count <= 65535 and not any(port_in_use(first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} free ports in a row")


def launcher_command(data_dir: Path, gateway_port: int, bank_port: int, certs: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "devtools.cluster", "--data-dir", str(data_dir)),
        *("--gateway-port", str(gateway_port), "--bank-port", str(bank_port)),
        *("--certs", str(certs)),
    ]


def without_settings() -> dict[str, str]:
    """This environment without its settings variables (the test runner's are not ours)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIX)}


class Launcher:
    """``python -m devtools.cluster`` in a process of its own, with its output read line by
    line as it comes."""

    def __init__(self, data_dir: Path, certs: Path, env: dict[str, str]) -> None:
        self.gateway_port = free_port()
        self.bank_port = consecutive_free_ports(len(DEFAULT_BANK_NAMES))
        self.data_dir = data_dir
        self.certs = certs
        self.process = subprocess.Popen(
            launcher_command(data_dir, self.gateway_port, self.bank_port, certs),
            env={**without_settings(), **TEST_ENV, **env},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: Iterator[str]) -> None:
        for line in stream:
            self._new.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first line (since the start) matching PATTERN; fails on timeout or exit."""
        for line in self.lines:
            if match := re.search(pattern, line):
                return match
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=0.2)
            except queue.Empty:
                if not self._reader.is_alive() and self._new.empty():
                    break  # the launcher closed its output: it is over
                continue
            self.lines.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r} in: {self.output()}")

    def output(self) -> str:
        stderr = ""
        if self.process.poll() is not None and self.process.stderr is not None:
            stderr = self.process.stderr.read()
        return "\n".join(self.lines) + "\n" + stderr

    def pids(self) -> dict[str, int]:
        self.wait_for(r"cluster up")
        return {
            match[1]: int(match[2])
            for match in map(PROCESS_LINE.match, self.lines)
            if match is not None
        }

    def view(self) -> Cluster:
        """A Cluster on the launcher's ports, for health checks (it starts nothing)."""
        ports = {GATEWAY: self.gateway_port}
        ports.update({bank: self.bank_port + i for i, bank in enumerate(DEFAULT_BANK_NAMES)})
        return Cluster(self.data_dir, ports=ports, certs=self.certs)

    def terminate(self, timeout: float = 20.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


Launch = Callable[..., Launcher]


@pytest.fixture
def launch(tmp_path: Path, certs: Path) -> Iterator[Launch]:
    started: list[Launcher] = []

    def start(env: dict[str, str] | None = None) -> Launcher:
        launcher = Launcher(tmp_path / f"data-{len(started)}", certs, env or {})
        started.append(launcher)
        return launcher

    yield start
    for launcher in started:
        launcher.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_launcher_restarts_a_killed_bank_and_stops_on_sigterm(launch: Launch) -> None:
    launcher = launch()
    pids = launcher.pids()
    assert set(pids) == {*DEFAULT_BANK_NAMES, GATEWAY}
    os.kill(pids["beta"], signal.SIGKILL)
    launcher.wait_for(r"beta \(pid \d+\) exited with signal SIGKILL .*restarting it in")
    new_pid = int(launcher.wait_for(r"beta restarted: pid (\d+)")[1])
    assert new_pid != pids["beta"]
    launcher.wait_for(rf"beta \(pid {new_pid}\) is serving again")
    launcher.view().wait_ready("beta", timeout=10)

    assert launcher.terminate() == 0, launcher.output()
    launcher.wait_for("cluster stopped")
    assert not any(alive(pid) for pid in [*pids.values(), new_pid])
    events = (launcher.data_dir / "logs" / "cluster.log").read_text()
    for text in ("exited with signal SIGKILL", f"beta restarted: pid {new_pid}", "cluster stopped"):
        assert text in events


def test_launcher_passes_settings_variables_on(launch: Launch) -> None:
    gateway_metrics = free_port()
    bank_metrics = consecutive_free_ports(len(DEFAULT_BANK_NAMES))
    launcher = launch(
        {
            variable(GatewaySettings, "metrics_port"): str(gateway_metrics),
            variable(BankSettings, "metrics_port"): str(bank_metrics),  # one port per bank
        }
    )
    launcher.pids()
    ports = [gateway_metrics, *(bank_metrics + i for i in range(len(DEFAULT_BANK_NAMES)))]
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert b"minipay_rpc_calls_total" in answer.read()
    assert launcher.terminate() == 0, launcher.output()


def test_launcher_that_cannot_start_says_so_in_one_line(tmp_path: Path, certs: Path) -> None:
    broken = tmp_path / "certificates"
    shutil.copytree(certs, broken)
    (broken / "beta.pem").write_text("not a certificate\n")
    process = subprocess.run(
        launcher_command(
            tmp_path / "data", free_port(), consecutive_free_ports(len(DEFAULT_BANK_NAMES)), broken
        ),
        env=without_settings(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 1
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, process.stderr
    assert process.stderr.strip() == errors[0]
    assert errors[0].startswith("error: beta exited with")


def test_launcher_refuses_a_port_in_use(tmp_path: Path, certs: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        process = subprocess.run(
            launcher_command(tmp_path, port, consecutive_free_ports(3), certs),
            env=without_settings(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert process.returncode == 2
    assert process.stderr.strip() == f"error: port {port} for gateway is in use"
