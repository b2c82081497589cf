"""The developer tools: the launcher's port probe, and ``python -m devtools.cluster`` (what
``make up`` runs) as a real process: it restarts a process killed with kill -9 (and passes
the user's settings variables on), stops everything on SIGTERM or Ctrl-C (to ``make up``
too, and while starting), keeps its data folder to its owner, names its PostgreSQL databases
with a prefix and refuses a URL with a database in it, and fails in one line, quoting only
this run's output, when the cluster cannot start. A pay right after kill -9 of the gateway
goes through once the launcher has restarted it. ``make demo`` stops everything and removes
its folder on SIGTERM, and ``--help`` only helps."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy

from certificate.ca import SERVICES_CA
from devtools.cluster import (
    DEFAULT_BANK_NAMES,
    GATEWAY,
    ROOT,
    SETTINGS_PREFIX,
    Cluster,
)
from devtools.scratch import free_port, port_in_use, server_url
from server.common.settings import BankSettings, GatewaySettings, variable
from tests.conftest import TEST_ENV
from tests.helpers import POSTGRES_URL, SEED_PASSWORDS, postgres_available

TIME_WAIT = "06"  # the state's number in /proc/net/tcp
PROCESS_LINE = re.compile(r"^\S+ ([\w-]+)\s+127\.0\.0\.1:\d+\s+pid (\d+)")
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
        *("--certs", str(certs), "--console-port", "0"),  # make up's test starts the console
    ]


# What an outer make (make test) tells the makes it starts: the tests' make runs on its own.
MAKE_VARIABLES = frozenset({"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"})


def without_settings() -> dict[str, str]:
    """This environment without its settings variables (the test runner's are not ours), nor
    an outer make's."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(SETTINGS_PREFIX) and k not in MAKE_VARIABLES
    }


def processes_of(folder: Path) -> list[int]:
    """The live processes whose environment names FOLDER or a path in it: the servers of a
    cluster whose data folder it is (whatever started them)."""
    marker = str(folder).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if any(marker in value for value in environ.split(b"\0")):
            found.append(int(entry.name))
    return found


def default_sigint() -> None:
    """In a child before exec: SIGINT as a terminal would deliver it (not ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Launcher:
    """``python -m devtools.cluster`` (or COMMAND(data_dir, gateway_port, bank_port, certs),
    e.g. ``make up``) in a process group of its own, like a command typed at a terminal, with
    its output read line by line as it comes."""

    def __init__(
        self,
        data_dir: Path,
        certs: Path,
        env: dict[str, str],
        command: Callable[[Path, int, int, Path], list[str]] | None = None,
    ) -> None:
        self.gateway_port = free_port()
        self.bank_port = consecutive_free_ports(len(DEFAULT_BANK_NAMES))
        self.data_dir = data_dir
        self.certs = certs
        self.process = subprocess.Popen(
            (command or launcher_command)(data_dir, self.gateway_port, self.bank_port, certs),
            env={**without_settings(), **TEST_ENV, **env},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=default_sigint,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._errors: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()
        # Standard error is read as it comes too: a process left behind that still holds it
        # open must not make reading it wait forever.
        self._error_reader = threading.Thread(
            target=self._errors.extend, args=(self.process.stderr,), daemon=True
        )
        self._error_reader.start()

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
        """Every line so far (once the launcher has exited, all of it), standard error last."""
        if self.process.poll() is not None:
            self._reader.join(10)
            self._error_reader.join(10)
        while not self._new.empty():
            self.lines.append(self._new.get())
        return "\n".join(self.lines) + "\n" + "".join(self._errors)

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

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def ctrl_c(self, timeout: float = 30.0) -> int:
        """Ctrl-C at its terminal: SIGINT to its whole process group, servers included."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout)

    def close(self) -> None:
        """Kills whatever a failed test left: its process group holds the launcher, make's
        shell and the servers, whichever of them outlived the process the test started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for pid in processes_of(self.data_dir):
            os.kill(pid, signal.SIGKILL)


Launch = Callable[..., Launcher]


@pytest.fixture
def launch(tmp_path: Path, certs: Path) -> Iterator[Launch]:
    started: list[Launcher] = []

    def start(
        env: dict[str, str] | None = None,
        command: Callable[[Path, int, int, Path], list[str]] | None = None,
        data_dir: Path | None = None,
    ) -> Launcher:
        folder = data_dir or tmp_path / f"data-{len(started)}"
        launcher = Launcher(folder, certs, env or {}, command)
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
    """And it passes the user's settings variables on: here each process's metrics port."""
    gateway_metrics = free_port()
    bank_metrics = consecutive_free_ports(len(DEFAULT_BANK_NAMES))
    launcher = launch(
        {
            variable(GatewaySettings, "metrics_port"): str(gateway_metrics),
            variable(BankSettings, "metrics_port"): str(bank_metrics),  # one port per bank
        }
    )
    pids = launcher.pids()
    assert set(pids) == {*DEFAULT_BANK_NAMES, GATEWAY}
    ports = [gateway_metrics, *(bank_metrics + i for i in range(len(DEFAULT_BANK_NAMES)))]
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert b"minipay_rpc_calls_total" in answer.read()

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


def test_launcher_that_cannot_start_says_so_in_one_line(tmp_path: Path, certs: Path) -> None:
    """One line, quoting what beta wrote in this run, never what an earlier run left in
    beta.out."""
    broken = tmp_path / "certificates"
    shutil.copytree(certs, broken)
    (broken / "beta.pem").write_text("not a certificate\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "beta.out").write_text("an earlier run's last words\n")
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
    assert "earlier run" not in errors[0]
    assert "certificate" in errors[0].lower()  # this run's own reason
    assert not processes_of(tmp_path / "data")


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


# -- stopping: SIGTERM and Ctrl-C, to make up and make demo, starting up included -------------


def make_up_command(data_dir: Path, gateway_port: int, bank_port: int, _certs: Path) -> list[str]:
    """``make up`` on these ports and data folder (with the checkout's dev certificates)."""
    return [
        *("make", "--no-print-directory", "up", f"DATA={data_dir}"),
        *(f"GATEWAY_PORT={gateway_port}", f"BANK_PORT={bank_port}"),
        f"CONSOLE_PORT={free_port()}",
    ]


def make_has_nothing_to_set_up(target: str, module: str) -> bool:
    """Whether ``make TARGET`` would go straight to its own command, running MODULE (``make
    setup`` was run since pyproject.toml last changed): a test must not reinstall the virtual
    environment."""
    if shutil.which("make") is None:
        return False
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        env=without_settings(),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    first = (planned.stdout.splitlines() or [""])[0]
    return planned.returncode == 0 and f"-m {module}" in first


def test_sigterm_to_make_up_stops_every_server(launch: Launch) -> None:
    """make passes SIGTERM to its child only: the recipe's shell must not stand in between."""
    if not make_has_nothing_to_set_up("up", "devtools.cluster"):
        pytest.skip("make up would set up the checkout first: run make setup")
    launcher = launch(command=make_up_command)
    pids = launcher.pids()
    assert set(pids) == {*DEFAULT_BANK_NAMES, GATEWAY}
    # make up serves the web console too, and says where; one that dies is restarted.
    console = launcher.wait_for(r"console\s+(http://127\.0\.0\.1:\d+)\s+pid (\d+)")
    url, console_pid = console[1], int(console[2])
    with urllib.request.urlopen(f"{url}/login", timeout=10) as answer:
        assert b"Sign in" in answer.read()
    os.kill(console_pid, signal.SIGKILL)
    restarted = int(launcher.wait_for(r"console restarted: pid (\d+)")[1])
    launcher.terminate()
    launcher.wait_for("cluster stopped")
    assert not any(alive(pid) for pid in [*pids.values(), console_pid, restarted])
    assert not processes_of(launcher.data_dir)


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_launcher_stopped_while_starting_stops_everything(launch: Launch, how: str) -> None:
    """SIGTERM to the launcher, or Ctrl-C at its terminal (SIGINT to the servers as well),
    while the servers are starting: no traceback, every server stops, and after Ctrl-C the
    launcher ends by SIGINT as a shell expects."""
    launcher = launch()
    out = launcher.data_dir / "gateway.out"
    deadline = time.monotonic() + 30
    while not out.exists():  # the last process is started; none is serving yet
        assert time.monotonic() < deadline, launcher.output()
        time.sleep(0.01)
    assert not launcher.lines or "cluster up" not in launcher.lines[-1]
    code = launcher.terminate() if how == "sigterm" else launcher.ctrl_c()
    output = launcher.output()
    assert code == (0 if how == "sigterm" else -signal.SIGINT), output
    assert "Traceback" not in output
    assert "cluster stopped" in output and "cluster up" not in output
    assert not processes_of(launcher.data_dir)


def test_sigterm_to_make_demo_stops_everything_and_removes_its_folder(tmp_path: Path) -> None:
    """The demo, stopped by SIGTERM to ``make demo`` once its cluster is up: every server
    stops, its temporary folder is gone, and it says so in a line."""
    if not make_has_nothing_to_set_up("demo", "devtools.demo"):
        pytest.skip("make demo would set up the checkout first: run make setup")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    demo = subprocess.Popen(
        ["make", "--no-print-directory", "demo"],
        env={**without_settings(), "TMPDIR": str(temporary)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    try:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:
            seen.append(line)
            if line.startswith("[admin] $"):  # the cluster is up, the script has begun
                break
        assert processes_of(temporary), "".join(seen)
        demo.send_signal(signal.SIGTERM)
        demo.wait(60)
        # What the demo wrote to the end; a process left behind holding the pipe is killed.
        time.sleep(1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGKILL)
        rest, _ = demo.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGKILL)
        demo.wait()
        for pid in processes_of(temporary):
            os.kill(pid, signal.SIGKILL)
    output = "".join(seen) + rest
    assert "Traceback" not in output
    assert "demo stopped by SIGTERM; its temporary folder is removed" in output
    assert not processes_of(temporary)
    assert list(temporary.iterdir()) == []


def test_demo_help_only_helps(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devtools.demo", "--help"],
        env={**without_settings(), "TMPDIR": str(tmp_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m devtools.demo")
    assert "== starting" not in done.stdout
    assert list(tmp_path.iterdir()) == []  # no cluster folder was made


# -- the data folder is its owner's --------------------------------------------------------


def test_launcher_keeps_its_data_folder_to_its_owner(launch: Launch, tmp_path: Path) -> None:
    """Folders 0700 and files 0600 in the data folder, an existing one and what an earlier
    run left in it included: the servers' output names users. (And Ctrl-C stops it.)"""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "logs").mkdir(mode=0o755)
    (data / "logs").chmod(0o755)
    (data / "gateway.out").write_text("an earlier run's warnings about alice\n")
    (data / "gateway.out").chmod(0o644)
    (data / "logs" / "cluster.log").write_text("an earlier run's events\n")
    (data / "logs" / "cluster.log").chmod(0o644)
    launcher = launch(data_dir=data)
    pids = launcher.pids()
    # Ctrl-C at its terminal, once up: everything stops, and the launcher ends by SIGINT.
    assert launcher.ctrl_c() == -signal.SIGINT, launcher.output()
    output = launcher.output()
    assert "Traceback" not in output and "cluster stopped" in output
    assert not any(alive(pid) for pid in pids.values())
    exposed = []
    for path in [data, *data.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            exposed.append(f"{path.relative_to(tmp_path)} {mode:o}")
    assert not exposed
    assert {p.name for p in data.glob("*.out")} >= {"gateway.out", "alpha.out"}


# -- a pay right after kill -9 of the gateway ------------------------------------------------


def test_a_pay_right_after_the_gateway_is_killed_goes_through(launch: Launch, certs: Path) -> None:
    """``make up`` restarts a gateway killed with kill -9 within a few seconds; the CLI's
    default retries (no --attempts, no variable) outlast that, so the pay sent at once ends
    COMMITTED. Here the gateway dies twice in a row, so the launcher waits 2 s before the
    restart: longer than the retries of old lasted at most (3 s with the start)."""
    launcher = launch()
    pids = launcher.pids()
    home = launcher.data_dir.parent / "home"
    env = {
        **without_settings(),
        "MINIPAY_HOME": str(home),
        "MINIPAY_GATEWAY": f"127.0.0.1:{launcher.gateway_port}",
        "MINIPAY_CA": str(certs / SERVICES_CA),
        "MINIPAY_CERT": str(certs / "client-1.pem"),
        "MINIPAY_KEY": str(certs / "client-1-key.pem"),
    }

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "client", *args],
            input=stdin,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    password = SEED_PASSWORDS["alice"] + "\n"
    alice = ("--username", "alice", "--password-stdin")
    for step in (("register", "--bank", "alpha", "--account", "A-1001", *alice), ("login", *alice)):
        assert cli(*step, stdin=password).returncode == 0
    key = f"after-kill-{uuid.uuid4()}"
    os.kill(pids[GATEWAY], signal.SIGKILL)
    os.kill(int(launcher.wait_for(r"gateway restarted: pid (\d+)")[1]), signal.SIGKILL)
    launcher.wait_for(r"exited with signal SIGKILL after .*; restarting it in 2 s")
    pay = ("pay", "--to-bank", "beta", "--to-account", "B-2001", "--amount", "1.00")
    paid = cli("--json", *pay, "--idempotency-key", key)
    assert paid.returncode == 0, paid.stderr
    payment = json.loads(paid.stdout)
    assert payment["status"] == "COMMITTED"
    log = (home / "logs" / "client.log").read_text()
    assert '"client_retry"' in log  # it did meet the dead gateway first


# -- PostgreSQL databases: a prefix, and a URL without a database ------------------------------


def test_a_database_url_with_a_database_in_it_is_refused_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *launcher_command(tmp_path, free_port(), consecutive_free_ports(3), tmp_path),
            *("--gateways", "2"),
            *("--database-url", "postgresql+psycopg://postgres@127.0.0.1:5432/minipay"),
        ],
        env=without_settings(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(
        "error: --database-url names a database ('minipay'): give the server alone"
    ), done.stderr
    assert "minipay_gateway" in done.stderr and "DATABASE_PREFIX" in done.stderr


def test_a_bad_database_prefix_is_refused_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *launcher_command(tmp_path, free_port(), consecutive_free_ports(3), tmp_path),
            *("--database-url", "postgresql+psycopg://postgres@127.0.0.1:5432"),
            *("--database-prefix", "Robert'); DROP"),
        ],
        env=without_settings(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: database prefix"), done.stderr
    assert done.stderr.count("\n") == 1


def _databases(prefix: str) -> set[str]:
    engine = sqlalchemy.create_engine(server_url(POSTGRES_URL, "postgres"))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"),
                {"prefix": f"{prefix}\\_%"},
            )
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def test_postgresql_databases_are_named_with_the_prefix(launch: Launch) -> None:
    """Two checkouts on one PostgreSQL server keep apart by their prefixes; the README's
    dropdb lines remove a prefix's databases."""
    if not postgres_available():
        pytest.skip("no PostgreSQL server: set MINIPAY_TEST_POSTGRES_URL to run this")
    server = server_url(POSTGRES_URL, "").rstrip("/")
    prefix = f"minipay_t{uuid.uuid4().hex[:8]}"

    def with_prefix(data_dir: Path, gateway_port: int, bank_port: int, certs: Path) -> list[str]:
        return [
            *launcher_command(data_dir, gateway_port, bank_port, certs),
            *("--database-url", server, "--database-prefix", prefix),
        ]

    try:
        launcher = launch(command=with_prefix)
        pids = launcher.pids()
        assert set(pids) == {*DEFAULT_BANK_NAMES, GATEWAY}
        names = {f"{prefix}_{name}" for name in (GATEWAY, *DEFAULT_BANK_NAMES)}
        assert _databases(prefix) == names
        assert launcher.terminate() == 0, launcher.output()
        drop_as_the_readme_says(prefix)
        assert _databases(prefix) == set()
    finally:
        engine = sqlalchemy.create_engine(
            server_url(POSTGRES_URL, "postgres"), isolation_level="AUTOCOMMIT"
        )
        with engine.connect() as connection:
            for name in _databases(prefix):
                connection.execute(
                    sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                )
        engine.dispose()


def drop_as_the_readme_says(prefix: str) -> None:
    """The README's loop that drops make up's databases, with this prefix and the test
    server's host and user; skips when dropdb is not installed."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(
        r"```sh\n(for name in gateway alpha beta gamma; do\n.*?\ndone)\n```", readme, re.S
    )
    assert match, "the README's dropdb lines"
    if shutil.which("dropdb") is None:
        pytest.skip("dropdb (PostgreSQL's client tools) is not installed")
    script = match.group(1).replace('"minipay_$name"', f'"{prefix}_$name"')
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
