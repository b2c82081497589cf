"""The command lines as a user meets them. With no cluster: nothing of the servers' code is
loaded, Ctrl-C and Ctrl-D at a real terminal's password prompt end the command at once,
Ctrl-C during a call or while the command is still starting is one line and stops a shell
loop around it, a gateway that is down is one line, every flag has help, the usage names the
command as typed, whoami and logout work logged out, every amount and currency goes through
``minipay.money``, and no expected error is a traceback. Against a real cluster (section 8):
a payment looked up by id, the history's filters, held funds in the balance, JSON errors with
their reason and request id, ``--verbose`` printing that id, a slow payment retried until it
answers, and "log in again" said once. ``pay-batch`` (section 9): a file's bad rows listed and
nothing sent, files it cannot read refused in one line, a file paid once, an edited row paid
alone, the results file, and the progress bar on a terminal.

(The admin's and a new customer's end-to-end run is ``test_command_lines_end_to_end`` in
``test_identity.py``.)
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import inspect
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devtools.cluster import GATEWAY, Cluster
from devtools.scratch import free_port
from minipay.admin.__main__ import build_parser as admin_parser
from minipay.client.__main__ import build_parser as client_parser
from minipay.client.api import MAX_PAGE_SIZE, GatewayClient
from minipay.client.commandline import EXIT_STATUS_HELP, HelpFormatter, money_fields
from minipay.client.logs import describe_request
from minipay.v1 import admin_pb2, common_pb2, gateway_pb2
from server.gateway import servicers
from tests import command_lines
from tests.conftest import TEST_ENV
from tests.helpers import SEED_PASSWORDS, Client, bank_state, customer, server_env, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
# Interpreter start-up and imports, and the exit after a key, on a machine busy with the whole
# suite. A command that did not stop at the key would wait far longer (a prompt that swallows
# Ctrl-C waits forever), and one that went on instead would reach the gateway, which the tests
# of the prompt check did not happen.
PROMPT_TIMEOUT = 30.0
AN_HOUR = 3600
DIED_OF_SIGINT = -signal.SIGINT  # subprocess's return code for a process ended by SIGINT


def default_sigint() -> None:
    """In a child before exec: SIGINT as a terminal's shell would leave it, whatever the test
    runner's process did with it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Cli:
    """Runs the client's or the admin's command line (in this process, or as ``python -m``
    with ``processes``) with a home of its own, a gateway address where nothing listens, and
    one quick attempt per call."""

    home: Path
    certs: Path
    gateway: str
    extra: dict[str, str] = field(default_factory=dict)  # variables added or overridden
    processes: bool = False  # python -m TOOL instead of TOOL's main() in this process

    def variables(self, tool: str) -> dict[str, str]:
        cert = "admin" if tool == "admin" else "client-1"
        given = command_lines.variables(
            self.certs, self.gateway, self.home, cert, MINIPAY_ATTEMPTS="2", MINIPAY_TIMEOUT="5"
        )
        given.update(self.extra)
        return given

    def env(self, tool: str) -> dict[str, str]:
        """The environment of a process of TOOL (for the tests that start one themselves)."""
        return command_lines.process_environment(self.variables(tool))

    def as_processes(self) -> Cli:
        return replace(self, processes=True)

    def prog(self, tool: str) -> str:
        """How the command names itself in its hints."""
        return f"python -m {tool}" if self.processes else command_lines.name_here(tool)

    def run(self, tool: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        run = command_lines.run_process if self.processes else command_lines.run_here
        result = run(tool, args, self.variables(tool), stdin)
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result

    def ok(self, tool: str, *args: str, stdin: str = "") -> str:
        result = self.run(tool, *args, stdin=stdin)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def fails(
        self, tool: str, *args: str, stdin: str = "", exit_code: int = 2
    ) -> subprocess.CompletedProcess[str]:
        """Asserts the exit code and exactly one line on standard error, "error: ..."."""
        result = self.run(tool, *args, stdin=stdin)
        assert result.returncode == exit_code, (result.returncode, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return result

    def save_session(self, tool: str, expires_in: int, username: str = "alice") -> Path:
        path = self.home / ("admin-session.json" if tool == "admin" else "session.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        role = "admin" if tool == "admin" else "customer"
        expires_at = int(time.time()) + expires_in
        path.write_text(
            json.dumps(
                {"token": "t0ken", "username": username, "role": role, "expires_at": expires_at}
            )
        )
        return path


@pytest.fixture
def cli(tmp_path: Path, certs: Path) -> Cli:
    return Cli(tmp_path / "home", certs, f"127.0.0.1:{free_port()}")


# -- 1. the client and admin load nothing of the servers' code ----------------------------------

NO_SERVER_SCRIPT = r"""
import json, runpy, sys

attempted = []

class Spy:
    # Notes every attempt to import the servers' package, even one that fails or is caught.
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "server" or name.startswith("server."):
            attempted.append(name)
        return None

sys.meta_path.insert(0, Spy)
import minipay.client.api, minipay.client.commandline, minipay.client.logs
import client.__main__, admin.__main__

for argv in (
    ["client", "--help"], ["admin", "--help"], ["client", "pay", "--help"],
    ["client", "whoami"], ["admin", "whoami"], ["client", "logout"], ["client", "balance"],
    ["client", "payment", "pay_0"], ["client", "history", "--since", "2024-05-01"],
    ["client", "pay", "--to-bank", "b", "--to-account", "a", "--amount", "1e2"],
    ["admin", "create-user", "--username", "z", "--name", "Z", "--balance", "x"],
):
    sys.argv = argv
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
loaded = sorted(m for m in sys.modules if m == "server" or m.startswith("server."))
print("RESULT " + json.dumps({"loaded": loaded, "attempted": attempted}))
"""


def test_no_server_module_is_loaded(cli: Cli) -> None:
    result = subprocess.run(
        [sys.executable, "-c", NO_SERVER_SCRIPT],
        env=cli.env("client"),
        cwd=REPO_ROOT,  # where ``server`` could be imported: it must not be
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    outcome = json.loads(line.removeprefix("RESULT "))
    assert outcome == {"loaded": [], "attempted": []}
    assert "usage: python -m client" in result.stdout  # the commands did run


@pytest.mark.parametrize("tool", ["client", "admin"])
def test_help_runs_without_server_code(cli: Cli, tool: str) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", tool, "--help"],
        env=cli.env(tool),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "minipay.client.commandline" in imported  # the measurement itself works
    assert not [m for m in imported if m == "server" or m.startswith("server.")]


# -- 2. the password prompt, at a real terminal -------------------------------------------------


def _take_the_terminal() -> None:
    """In the child, before exec: its new session's controlling terminal is the pty, so
    getpass reads /dev/tty, and Ctrl-C at the pty is SIGINT to the child."""
    default_sigint()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@dataclass
class Terminal:
    process: subprocess.Popen[bytes]
    master: int
    seen: bytes = b""

    def read_until(self, text: str, timeout: float = PROMPT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} on the terminal; saw {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                assert chunk, f"the terminal closed before {text!r}; saw {self.seen!r}"
                self.seen += chunk

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self, timeout: float = PROMPT_TIMEOUT) -> tuple[int, str]:
        """The exit code (negative: the signal that ended it), within TIMEOUT, and standard
        error."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"still running {timeout} s after the key; terminal: {self.seen!r}")
        assert self.process.stderr is not None
        stderr = self.process.stderr.read().decode()
        while True:  # what is left on the terminal, for the traceback check
            ready, _, _ = select.select([self.master], [], [], 0)
            try:
                chunk = os.read(self.master, 4096) if ready else b""
            except OSError:
                chunk = b""
            if not chunk:
                break
            self.seen += chunk
        return code, stderr


@pytest.fixture
def silent_gateway(cli: Cli) -> Iterator[socket.socket]:
    """A "gateway" that accepts connections and never answers: a command that reaches it
    waits in the TLS handshake, and the test sees that it was reached."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        cli.gateway = f"127.0.0.1:{listener.getsockname()[1]}"
        yield listener


def reached(listener: socket.socket) -> bool:
    """Whether a command connected to LISTENER (a silent gateway) since it was opened."""
    ready, _, _ = select.select([listener], [], [], 0)
    return bool(ready)


@pytest.fixture
def terminal(cli: Cli) -> Iterator[Any]:
    opened: list[Terminal] = []

    def spawn(tool: str, *args: str) -> Terminal:
        master, slave = pty.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", tool, *args],
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=cli.env(tool),
            cwd=REPO_ROOT,
            start_new_session=True,
            preexec_fn=_take_the_terminal,
        )
        os.close(slave)
        opened.append(Terminal(process, master))
        return opened[-1]

    yield spawn
    for term in opened:
        if term.process.poll() is None:
            term.process.kill()
            term.process.wait()
        if term.process.stderr is not None:
            term.process.stderr.close()
        os.close(term.master)


LOGINS = [
    ("client", ("login", "--username", "alice"), "Password for alice: "),
    ("admin", ("login", "--username", "admin"), "Password for admin: "),
]


@pytest.mark.parametrize(("tool", "args", "prompt"), LOGINS, ids=["client", "admin"])
def test_ctrl_c_at_the_password_prompt(
    terminal: Any, silent_gateway: socket.socket, tool: str, args: Any, prompt: str
) -> None:
    term = terminal(tool, *args)
    term.read_until(prompt)
    term.type("\x03")
    code, stderr = term.finish()
    assert code == DIED_OF_SIGINT  # as a shell expects of Ctrl-C
    assert stderr == "error: interrupted\n"
    assert b"Traceback" not in term.seen
    assert not reached(silent_gateway)  # it stopped at the prompt: nothing was sent


@pytest.mark.parametrize(("tool", "args", "prompt"), LOGINS, ids=["client", "admin"])
def test_ctrl_d_at_the_password_prompt(terminal: Any, tool: str, args: Any, prompt: str) -> None:
    term = terminal(tool, *args)
    term.read_until(prompt)
    term.type("\x04")
    code, stderr = term.finish()
    assert code == 2
    assert stderr == "error: no password given (input ended at the prompt)\n"
    assert b"Traceback" not in term.seen


def test_ctrl_c_after_typing_part_of_the_password(
    terminal: Any, silent_gateway: socket.socket
) -> None:
    term = terminal("client", "register", "--bank", "alpha", "--account", "A-1", "--username", "al")
    term.read_until("Password for al: ")
    term.type("half-a-pass")
    time.sleep(0.2)
    term.type("\x03")
    code, stderr = term.finish()
    assert (code, stderr) == (DIED_OF_SIGINT, "error: interrupted\n")
    assert b"half-a-pass" not in term.seen  # never echoed
    assert not reached(silent_gateway)


def test_ctrl_c_stops_a_shell_loop_around_the_command(
    cli: Cli, silent_gateway: socket.socket
) -> None:
    """The README's ``while :; do … pay …; done``: one Ctrl-C (SIGINT to the terminal's
    foreground process group) during a call prints one line, and the loop ends with it."""
    cli.save_session("client", AN_HOUR)
    pay = "pay --to-bank beta --to-account B-2001 --amount 0.01 --idempotency-key loop-1"
    loop = subprocess.Popen(
        ["bash", "-c", f"while :; do {sys.executable} -m client {pay}; done"],
        env=cli.env("client"),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    try:
        silent_gateway.settimeout(PROMPT_TIMEOUT)
        connection, _ = silent_gateway.accept()  # the command is in the middle of its call
        connection.close()
        os.killpg(loop.pid, signal.SIGINT)
        _, stderr = loop.communicate(timeout=PROMPT_TIMEOUT)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()
    assert loop.returncode == DIED_OF_SIGINT, stderr  # bash obeyed the signal: no next round
    assert stderr.splitlines() == [
        "error: interrupted; the payment may or may not have been made: repeat the command "
        "with --idempotency-key loop-1 to find out (never done twice)"
    ]


def test_ctrl_c_while_the_command_is_starting_is_one_line(cli: Cli) -> None:
    """Ctrl-C while the command's modules are still being imported (grpc, the library): one
    line, no traceback, and the command ends by SIGINT. The child writes a line per import
    (``-X importtime``) into a pipe kept small and unread, so it is held in the middle of its
    imports when the signal comes."""
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "client", "whoami"],
        env=cli.env("client"),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    assert process.stderr is not None
    fcntl.fcntl(process.stderr.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    seen = b""
    try:
        # The entry point is imported, and installs its handler, before the command's modules.
        while not re.search(rb"\| +minipay\.launch\n", seen):
            chunk = process.stderr.read1(4096)  # type: ignore[attr-defined]
            assert chunk, seen.decode()
            seen += chunk
        time.sleep(0.5)  # the pipe fills up: the child waits in its imports
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        stdout, rest = process.communicate(timeout=PROMPT_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = (seen + rest).decode().splitlines()
    imported = [line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import")]
    assert "minipay.launch" in imported
    assert "minipay.client.__main__" not in imported  # interrupted while importing it
    others = [line for line in lines if not line.startswith("import time:")]
    assert others == ["error: interrupted"], lines[-20:]
    assert process.returncode == DIED_OF_SIGINT
    assert stdout == b""


CREATE_ZED = ("create-user", "--username", "zed", "--name", "Zed", "--bank", "gamma")


def test_create_user_asks_twice_and_refuses_a_typo(cli: Cli, terminal: Any) -> None:
    cli.save_session("admin", AN_HOUR, username="admin")
    term = terminal("admin", *CREATE_ZED, "--account", "G-9")
    term.read_until("Password for the new user zed: ")
    term.type("zed-secret-1\n")
    term.read_until("Repeat the password for zed: ")
    term.type("zed-secret-2\n")
    code, stderr = term.finish()
    assert (code, stderr) == (2, "error: the two passwords differ; nothing was sent\n")
    assert b"zed-secret" not in term.seen


def test_create_user_with_the_same_password_twice_goes_on(cli: Cli, terminal: Any) -> None:
    cli.save_session("admin", AN_HOUR, username="admin")
    term = terminal("admin", *CREATE_ZED, "--account", "G-9")
    term.read_until("Password for the new user zed: ")
    term.type("zed-secret-1\n")
    term.read_until("Repeat the password for zed: ")
    term.type("zed-secret-1\n")
    code, stderr = term.finish()
    assert code == 1  # it went on to call the gateway, where nothing listens
    assert stderr.startswith(f"error: UNAVAILABLE: cannot reach the gateway at {cli.gateway}")


def test_password_stdin_reads_one_line_and_refuses_none(cli: Cli) -> None:
    cli.save_session("admin", AN_HOUR, username="admin")
    # One line is enough for create-user (no second one), so this reaches the gateway.
    reached = cli.fails(
        "admin", *CREATE_ZED, "--account", "G-9", "--password-stdin", stdin="pw\n", exit_code=1
    )
    assert "cannot reach the gateway" in reached.stderr
    empty = cli.fails("admin", *CREATE_ZED, "--account", "G-9", "--password-stdin", stdin="")
    assert "standard input is empty" in empty.stderr
    blank = cli.fails("client", "login", "--username", "alice", "--password-stdin", stdin="\n")
    assert "the password is empty" in blank.stderr


def test_nothing_is_asked_when_the_command_cannot_work(cli: Cli) -> None:
    """No password prompt before errors that are known without it (stdin is empty here: a
    prompt would fail differently)."""
    not_logged_in = cli.fails("admin", *CREATE_ZED, "--account", "G-9")
    assert "not logged in" in not_logged_in.stderr
    cli.save_session("admin", AN_HOUR, username="admin")
    no_account = cli.fails("admin", *CREATE_ZED)
    assert no_account.stderr == "error: a customer needs --bank and --account\n"
    bad_amount = cli.fails("admin", *CREATE_ZED, "--account", "G-9", "--balance", "1e2")
    assert "not a plain decimal" in bad_amount.stderr


# -- 3. the gateway is down ---------------------------------------------------------------------


def test_gateway_down_is_one_line(cli: Cli) -> None:
    started = time.monotonic()
    result = cli.fails(
        "client", "login", "--username", "alice", "--password-stdin", stdin="pw\n", exit_code=1
    )
    assert result.stderr == (
        f"error: UNAVAILABLE: cannot reach the gateway at {cli.gateway} after 2 attempts "
        "(connection refused); is the cluster running? (make up)\n"
    )
    assert time.monotonic() - started < 15

    # A flag overrides the variable; --json adds the same error on standard output.
    cli.save_session("client", AN_HOUR)
    result = cli.fails("client", "--attempts", "3", "balance", "--json", exit_code=1)
    assert "after 3 attempts" in result.stderr
    error = json.loads(result.stdout)["error"]
    assert (error["code"], error["reason"]) == ("UNAVAILABLE", "")  # no answer, no reason
    assert re.fullmatch(r"[0-9a-f]{32}", error["request_id"]), error  # the id it sent
    assert result.stderr == f"error: UNAVAILABLE: {error['message']}\n"


def test_gateway_down_during_a_payment_says_how_to_repeat_it(cli: Cli) -> None:
    cli.save_session("client", AN_HOUR)
    result = cli.fails(
        "client",
        *("pay", "--to-bank", "beta", "--to-account", "B-2001", "--amount", "1.00"),
        *("--idempotency-key", "rent-2024-05"),
        exit_code=1,
    )
    assert "cannot reach the gateway" in result.stderr
    assert "--idempotency-key rent-2024-05" in result.stderr


def test_unreadable_certificate_is_one_line(cli: Cli, tmp_path: Path) -> None:
    result = cli.fails(
        "client",
        *("--cert", str(tmp_path / "missing.pem"), "login", "--username", "alice"),
        *("--password-stdin",),
        stdin="pw\n",
    )
    assert result.stderr.startswith(f"error: cannot read certificate {tmp_path / 'missing.pem'}")


# -- 4. help, whoami, logout --------------------------------------------------------------------


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [subparsers] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


@pytest.mark.parametrize("build", [client_parser, admin_parser], ids=["client", "admin"])
def test_every_command_and_flag_has_help_and_its_default(build: Any) -> None:
    parser = build()
    commands = _commands(parser)
    assert {"login", "logout", "whoami"} <= set(commands)
    listed = parser.format_help()
    for name, command in commands.items():
        assert command.description, name
        summary = command.description.splitlines()[0]
        assert summary.endswith("."), (name, summary)
        assert name in listed
        formatter = HelpFormatter(command.prog)
        for action in command._actions:
            flag = action.option_strings[0] if action.option_strings else action.dest
            text = formatter._get_help_string(action)
            assert text, f"{name} {flag}: no help"
            has_default = action.default not in (None, "", False, argparse.SUPPRESS)
            if has_default or flag in ("--gateway", "--ca", "--timeout"):
                assert "default" in text, f"{name} {flag}: no default"
        command.format_help()  # formats without error


@pytest.mark.parametrize("tool", ["client", "admin"])
def test_help_of_a_command(cli: Cli, tool: str) -> None:
    text = cli.ok(tool, "whoami", "--help")
    assert "exits 0 whether or not you are logged in" in " ".join(text.split()).lower()
    assert "(default: $MINIPAY_GATEWAY, else 127.0.0.1:50051)" in " ".join(text.split())


def test_usage_names_the_command_as_typed(cli: Cli) -> None:
    """``python -m client`` in a checkout, ``python -m minipay.client`` so typed, and the
    installed commands ``minipay`` and ``minipay-admin`` by their names, in the usage, the
    help and the hints alike."""
    cli = cli.as_processes()
    assert cli.ok("client", "--help").startswith("usage: python -m client ")
    assert cli.ok("admin", "--help").startswith("usage: python -m admin ")
    package = subprocess.run(
        [sys.executable, "-m", "minipay.client", "login", "--help"],
        env=cli.env("client"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert package.stdout.startswith("usage: python -m minipay.client login "), package.stderr
    assert "('python -m minipay.client register')" in " ".join(package.stdout.split())
    bin_folder = Path(sys.executable).parent
    for command in ("minipay", "minipay-admin"):
        installed = shutil.which(command, path=str(bin_folder))
        assert installed, f"no {command} in {bin_folder}: run make setup"
        done = subprocess.run(
            [installed, "whoami", "--help"],
            env=cli.env("client"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.stdout.startswith(f"usage: {command} whoami "), done.stderr
        assert f"see '{command} --help'" in done.stdout
    admin_help = subprocess.run(
        [bin_folder / "minipay-admin", "create-user", "--help"],
        env=cli.env("admin"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "('minipay register')" in " ".join(admin_help.stdout.split())
    cli.save_session("client", -AN_HOUR)
    expired = subprocess.run(
        [bin_folder / "minipay", "balance"],
        env=cli.env("client"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "log in again with 'minipay login --username alice'" in expired.stderr


def test_login_help_says_register_first(cli: Cli) -> None:
    text = " ".join(cli.ok("client", "login", "--help").split())
    register = f"('{cli.prog('client')} register')"
    assert f"A customer registers once {register} before the first login" in text
    pay = " ".join(cli.ok("client", "pay", "--help").split())
    assert "--currency CURRENCY ISO 4217 currency code (default: USD)" in pay


@pytest.mark.parametrize("tool", ["client", "admin"])
def test_whoami(cli: Cli, tool: str) -> None:
    assert cli.ok(tool, "whoami") == "not logged in\n"
    assert json.loads(cli.ok(tool, "whoami", "--json")) == {
        "logged_in": False,
        "expired": False,
        "request_id": None,  # nothing was sent
    }

    cli.save_session(tool, AN_HOUR, username="alice")
    role = "admin" if tool == "admin" else "customer"
    assert cli.ok(tool, "whoami").startswith(f"alice ({role}), logged in until ")
    data = json.loads(cli.ok(tool, "--json", "whoami"))
    assert data["logged_in"] is True and data["expired"] is False
    assert (data["username"], data["role"]) == ("alice", role)
    assert datetime.fromisoformat(data["expires_at"]).timestamp() > time.time()
    assert data["expires_at"].endswith("Z")

    cli.save_session(tool, -AN_HOUR, username="alice")
    text = cli.ok(tool, "whoami")
    assert text.startswith(f"not logged in: the session of alice ({role}) expired at ")
    assert f"{cli.prog(tool)} login --username alice" in text
    data = json.loads(cli.ok(tool, "whoami", "--json"))
    assert data["logged_in"] is False and data["expired"] is True


@pytest.mark.parametrize("tool", ["client", "admin"])
def test_logout_when_logged_out(cli: Cli, tool: str) -> None:
    assert cli.ok(tool, "logout") == "not logged in\n"
    assert json.loads(cli.ok(tool, "logout", "--json")) == {
        "logged_out": False,
        "logged_in": False,
        "request_id": None,
    }
    session = cli.save_session(tool, -AN_HOUR)  # expired: nothing to revoke, only to forget
    assert cli.ok(tool, "logout") == "logged out (the session had expired)\n"
    assert not session.exists()


def test_an_expired_session_says_so_before_calling(cli: Cli) -> None:
    cli.save_session("client", -AN_HOUR)
    result = cli.fails("client", "balance")
    assert "the session of alice expired" in result.stderr
    assert f"{cli.prog('client')} login --username alice" in result.stderr


# -- 5. one name for amounts in minor units -----------------------------------------------------


def test_json_and_log_fields_name_minor_units() -> None:
    money = common_pb2.Money(minor_units=1234, currency="USD")
    assert money_fields("balance", 1234, "USD") == {
        "balance": "12.34",
        "balance_minor_units": 1234,
        "currency": "USD",
    }
    pay = gateway_pb2.PayRequest(
        to=common_pb2.AccountRef(bank="beta", account="B-2001"), amount=money, idempotency_key="k"
    )
    assert describe_request(pay) == {
        "idempotency_key": "k",
        "amount_minor_units": 1234,
        "currency": "USD",
        "to": "beta/B-2001",
    }
    create = admin_pb2.CreateUserRequest(
        username="zed",
        password="never-logged",
        account=common_pb2.AccountRef(bank="gamma", account="G-9"),
        initial_balance=money,
    )
    fields = describe_request(create)
    assert fields["amount_minor_units"] == 1234 and fields["account"] == "gamma/G-9"
    assert "never-logged" not in json.dumps(fields)


def test_library_parameters_name_minor_units() -> None:
    assert "amount_minor_units" in inspect.signature(GatewayClient.pay).parameters
    assert "amount_minor_units" in inspect.signature(GatewayClient.deposit).parameters
    assert "balance_minor_units" in inspect.signature(GatewayClient.create_user).parameters


# -- 6 and 7. amounts, and every expected error is one line -------------------------------------

PAY = ("pay", "--to-bank", "beta", "--to-account", "B-2001", "--amount")
DEPOSIT = ("deposit", "--bank", "alpha", "--account", "A-1001", "--amount")
CREATE = (*CREATE_ZED, "--account", "G-9", "--password-stdin", "--balance")


@pytest.mark.parametrize(
    ("tool", "args", "amount", "message"),
    [
        ("client", PAY, "1e2", "is not a plain decimal number"),
        ("client", PAY, "1_000", "is not a plain decimal number"),
        ("client", PAY, "\uff11\uff12", "is not a plain decimal number"),  # full-width 12
        ("client", PAY, "0.001", "has more than 2 decimals for USD"),
        ("client", PAY, "0", "amount must be greater than zero"),
        ("admin", DEPOSIT, "-5", "is not a plain decimal number"),
        ("admin", DEPOSIT, "0.00", "amount must be greater than zero"),
        ("admin", CREATE, "1e2", "is not a plain decimal number"),
        ("admin", CREATE, "12.345", "has more than 2 decimals for USD"),
    ],
)
def test_amounts_are_checked_by_minipay_money(
    cli: Cli, tool: str, args: tuple[str, ...], amount: str, message: str
) -> None:
    cli.save_session(tool, AN_HOUR)
    result = cli.fails(tool, *args, amount, stdin="pw\n")
    assert message in result.stderr


def test_a_zero_opening_balance_is_allowed(cli: Cli) -> None:
    cli.save_session("admin", AN_HOUR)
    # Accepted: the command goes on to the gateway (where nothing listens).
    result = cli.fails("admin", *CREATE, "0", stdin="pw\n", exit_code=1)
    assert "cannot reach the gateway" in result.stderr


def test_amount_errors_in_json(cli: Cli) -> None:
    cli.save_session("client", AN_HOUR)
    result = cli.fails("client", *PAY, "0.001", "--json")
    # The same keys as an error from the gateway, empty: nothing was sent.
    assert json.loads(result.stdout) == {
        "error": {
            "code": "CLIENT_ERROR",
            "reason": "",
            "message": "amount '0.001' has more than 2 decimals for USD",
            "metadata": {},
            "request_id": None,
            "field_violations": [],
            "retry_after_s": None,
        }
    }


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("client", ("pay", "--to-bank", "beta"), "the following arguments are required"),
        ("client", ("history", "--page-size", "0"), "argument --page-size"),
        ("client", ("history", "--status", "done"), "argument --status: invalid choice"),
        ("client", ("history", "--direction", "up"), "argument --direction: invalid choice"),
        ("client", ("history", "--since", "yesterday"), "not an ISO 8601 date"),
        ("client", ("history", "--until", "2024-13-01"), "not an ISO 8601 date"),
        ("client", ("payment",), "the following arguments are required: ID"),
        ("client", (*PAY, "1", "--currency", "dollars"), "not an ISO 4217 currency code"),
        ("client", (*PAY, "1", "--currency", "XYZ"), "'XYZ' is not an ISO 4217 currency code"),
        ("admin", (*DEPOSIT, "1", "--currency", "XAU"), "'XAU' is not an ISO 4217 currency code"),
        ("client", ("history", "--page-size", "201"), "'201' is more than 200"),
        ("client", ("--attempts", "none", "balance"), "argument --attempts"),
        ("admin", ("frobnicate",), "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line(
    cli: Cli, tool: str, args: tuple[str, ...], message: str
) -> None:
    result = cli.fails(tool, *args)
    assert message in result.stderr


def test_page_sizes_are_the_gateways(cli: Cli, silent_gateway: socket.socket) -> None:
    """The CLI takes the page sizes the gateway takes (1-200; the gateway's 0 is the CLI's
    default, 20) and refuses the others before anything is sent."""
    assert (MAX_PAGE_SIZE, 20) == (servicers.MAX_PAGE_SIZE, servicers.DEFAULT_PAGE_SIZE)
    cli.save_session("client", AN_HOUR)
    for refused in ("0", str(MAX_PAGE_SIZE + 1)):
        cli.fails("client", "history", "--page-size", refused)
    assert not reached(silent_gateway)
    page_size = client_parser().parse_args(["history"]).page_size
    assert page_size == servicers.DEFAULT_PAGE_SIZE
    biggest = client_parser().parse_args(["history", "--page-size", str(MAX_PAGE_SIZE)])
    assert biggest.page_size == MAX_PAGE_SIZE


def test_the_readme_shows_the_error_line_the_clis_print() -> None:
    """The README's "Using it by hand" gives the format of an error line: the one the CLIs'
    --help gives and the tests below see."""
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    assert "An expected error prints one line, `error: CODE (REASON): message`" in readme
    assert '"error: CODE (REASON): message"' in EXIT_STATUS_HELP
    assert "admin-session.json" in readme


def test_not_logged_in_is_one_line(cli: Cli) -> None:
    result = cli.fails("client", "balance", "--json")
    assert "not logged in" in result.stderr
    assert json.loads(result.stdout)["error"]["code"] == "CLIENT_ERROR"


def test_a_bad_variable_is_one_line(cli: Cli) -> None:
    cli.extra["MINIPAY_ATTEMPTS"] = "lots"
    result = cli.fails("client", "login", "--username", "alice", "--password-stdin", stdin="pw\n")
    assert result.stderr == "error: MINIPAY_ATTEMPTS='lots' is not a whole number\n"


@pytest.mark.parametrize(
    ("tool", "args", "stdin", "exit_code", "words"),
    [
        ("client", ("history", "--status", "done"), "", 2, "argument --status: invalid choice"),
        ("client", (*PAY, "1e2", "--json"), "", 2, "is not a plain decimal number"),
        ("admin", (*CREATE, "0"), "pw\n", 1, "cannot reach the gateway"),
    ],
    ids=["usage", "found-before-sending", "from-the-call"],
)
def test_expected_errors_as_real_processes(
    cli: Cli, tool: str, args: tuple[str, ...], stdin: str, exit_code: int, words: str
) -> None:
    """Most tests here run a command's main() in this process (tests/command_lines.py);
    these run a usage error, an error found before anything is sent and one from the call
    as the shell meets them: ``python -m`` and its exit status, the one line alone on
    standard error, no traceback."""
    cli = cli.as_processes()
    cli.save_session(tool, AN_HOUR)
    result = cli.fails(tool, *args, stdin=stdin, exit_code=exit_code)
    assert words in result.stderr


# -- 8. against a real cluster: payments, history filters, balances, request ids ---------------

SLOW_BANK_DELAY = 4  # seconds gamma sits on a Prepare: a payment to gamma holds funds that long


@dataclass
class Live:
    """A cluster (gamma slow to vote), alice logged in through the command line, and carol
    through the library."""

    cluster: Cluster
    cli: Cli
    carol: Client


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("cli-live")
    env = {**TEST_ENV, **server_env(txn_timeout=SLOW_BANK_DELAY + 6)}
    cluster = Cluster(folder / "cluster", env=env, certs=certs)
    try:
        cluster.start({"gamma": f"delay_prepare={SLOW_BANK_DELAY}"})
        cli = Cli(folder / "home", certs, cluster.gateway_address, {"MINIPAY_TIMEOUT": "30"})
        alice = ("--username", "alice", "--password-stdin")
        password = SEED_PASSWORDS["alice"] + "\n"
        cli.ok(
            "client", "register", "--bank", "alpha", "--account", "A-1001", *alice, stdin=password
        )
        cli.ok("client", "login", *alice, stdin=password)
        yield Live(cluster, cli, customer(cluster, certs, "carol", cert="client-2"))
    finally:
        cluster.stop()


def cli_json(cli: Cli, *args: str) -> Any:
    return json.loads(cli.ok("client", *args, "--json"))


def pay_to(bank: str, account: str, amount: str) -> tuple[str, ...]:
    return ("pay", "--to-bank", bank, "--to-account", account, "--amount", amount)


def gateway_calls(cluster: Cluster, request_id: str, wait: float = 10.0) -> list[dict[str, Any]]:
    """The gateway's call records with this request id, once there is one (or WAIT seconds
    passed): the gateway's log writer is a thread of its own, and a command run in this
    process can end before it has written the call's record."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for line in cluster.log_file(GATEWAY).read_text().splitlines():
            with suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == "call" and record.get("request_id") == request_id:
                    found.append(record)
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def test_payment_by_id(live: Live) -> None:
    cli = live.cli
    paid = cli_json(cli, *PAY, "2.50")
    assert (paid["status"], paid["amount_minor_units"]) == ("COMMITTED", 250)
    payment_id = paid["payment_id"]

    text = cli.ok("client", "payment", payment_id)
    assert text.splitlines()[0] == f"payment {payment_id} COMMITTED: 2.50 USD to beta/B-2001"
    assert re.search(r"^created \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", text, re.MULTILINE), text
    assert re.search(r"^decided ", text, re.MULTILINE), text
    found = cli_json(cli, "payment", payment_id)
    assert found["request_id"] and found["request_id"] != paid["request_id"]
    for name in ("payment_id", "direction", "payer", "payee", "amount", "status", "created_at"):
        assert found[name] == paid[name], name
    assert found["payer"] == {"bank": "alpha", "account": "A-1001"}
    assert found["decided_at"] >= found["created_at"]

    # The payee sees it as incoming, from alice.
    received = live.carol.payment(payment_id)
    assert (received.direction, str(received.counterparty)) == ("incoming", "alpha/A-1001")

    # An id nobody has: one line, exit 1.
    missing = cli.fails("client", "payment", "pay_" + "0" * 32, exit_code=1)
    assert missing.stderr.startswith("error: NOT_FOUND (PAYMENT_NOT_FOUND): ")


def test_an_aborted_payment_prints_its_reason_code_and_exits_1(live: Live) -> None:
    result = live.cli.run("client", *pay_to("beta", "B-404", "1.00"))
    assert result.returncode == 1, result.stderr
    assert re.fullmatch(
        r"payment pay_[0-9a-f]{32} ABORTED: 1\.00 USD to beta/B-404 "
        r"\(ACCOUNT_NOT_FOUND: account B-404 does not exist\)\n",
        result.stdout,
    ), result.stdout


def test_history_filters(live: Live) -> None:
    cli = live.cli
    committed = cli_json(cli, *PAY, "1.25")
    aborted = json.loads(cli.run("client", *pay_to("beta", "B-405", "1.00"), "--json").stdout)
    assert aborted["reason_code"] == "ACCOUNT_NOT_FOUND"
    incoming = live.carol.pay("alpha", "A-1001", 75)
    assert incoming.status == "COMMITTED"

    def ids(*flags: str) -> list[str]:
        page = cli_json(cli, "history", "--page-size", "200", *flags)
        assert page["request_id"]
        return [p["payment_id"] for p in page["payments"]]

    everything = ids()
    assert {committed["payment_id"], aborted["payment_id"], incoming.payment_id} <= set(everything)
    only_aborted = cli_json(cli, "history", "--status", "aborted")["payments"]
    assert aborted["payment_id"] in {p["payment_id"] for p in only_aborted}
    assert {p["status"] for p in only_aborted} == {"ABORTED"}
    assert {p["reason_code"] for p in only_aborted} >= {"ACCOUNT_NOT_FOUND"}
    assert ids("--direction", "in") == [incoming.payment_id]
    outgoing_committed = ids("--direction", "out", "--status", "committed")
    assert committed["payment_id"] in outgoing_committed
    assert aborted["payment_id"] not in outgoing_committed
    assert incoming.payment_id not in outgoing_committed

    # A time range: --since is inclusive, --until exclusive (a bare date: to the day's end).
    created = aborted["created_at"]
    assert aborted["payment_id"] in ids("--since", created)
    assert aborted["payment_id"] not in ids("--until", created)
    assert ids("--since", created, "--until", created) == []
    assert ids("--until", "2000-01-01") == []
    assert ids("--since", "2999-01-01T00:00:00+02:00") == []
    today = datetime.fromisoformat(created).date().isoformat()
    assert set(ids("--since", today, "--until", today)) == set(everything)
    assert cli.ok("client", "history", "--until", "2000-01-01") == "no payments\n"

    # Text: one line per payment, the reason code of an aborted one at the end.
    lines = cli.ok("client", "history", "--status", "aborted").splitlines()
    [line] = [line for line in lines if aborted["payment_id"] in line]
    assert line.endswith(f"{aborted['payment_id']} ACCOUNT_NOT_FOUND"), line
    assert "outgoing" in line and "beta/B-405" in line


def test_balance_shows_held_funds(live: Live) -> None:
    """A payment to gamma (slow to vote) holds alice's funds until it is decided."""
    cli = live.cli
    before = cli_json(cli, "balance")
    assert before["held_minor_units"] == 0
    assert before["available_minor_units"] == before["balance_minor_units"]
    payer = subprocess.Popen(
        [sys.executable, "-m", "client", *pay_to("gamma", "G-3001", "3.00")],
        env=cli.env("client"),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(
            lambda: bank_state(live.cluster, "alpha")["accounts"]["A-1001"][1] == 300,
            SLOW_BANK_DELAY,
            "alpha to hold the funds",
        )
        during = cli_json(cli, "balance")
        text = cli.ok("client", "balance")
    finally:
        payer.communicate(timeout=60)
    assert payer.returncode == 0
    assert during["balance_minor_units"] == before["balance_minor_units"]
    assert (during["held"], during["held_minor_units"]) == ("3.00", 300)
    assert during["available_minor_units"] == before["balance_minor_units"] - 300
    balance = during["balance"]
    available = during["available"]
    assert text == (
        f"alpha/A-1001: balance {balance} USD, held 3.00 USD, available {available} USD\n"
    )
    after = cli_json(cli, "balance")
    assert after["held_minor_units"] == 0
    assert after["balance_minor_units"] == before["balance_minor_units"] - 300


def test_json_errors_carry_reason_metadata_and_request_id(live: Live) -> None:
    cli = live.cli
    unknown_bank = cli.fails("client", *pay_to("omega", "O-1", "1.00"), "--json", exit_code=1)
    error = json.loads(unknown_bank.stdout)["error"]
    assert set(error) == {
        "code",
        "reason",
        "message",
        "metadata",
        "request_id",
        "field_violations",
        "retry_after_s",
    }
    assert (error["code"], error["reason"]) == ("NOT_FOUND", "BANK_NOT_FOUND")
    assert error["metadata"] == {"bank": "omega"}
    assert "unknown bank 'omega'" in error["message"]
    assert (error["field_violations"], error["retry_after_s"]) == ([], None)
    # The request id is the one the gateway logged for this very call.
    [record] = gateway_calls(live.cluster, error["request_id"])
    assert (record["method"], record["code"]) == ("/minipay.v1.Payments/Pay", "NOT_FOUND")
    assert unknown_bank.stderr.startswith("error: NOT_FOUND (BANK_NOT_FOUND): unknown bank")

    bad_account = cli.fails("client", *pay_to("beta", "B 2001!", "1.00"), "--json", exit_code=1)
    error = json.loads(bad_account.stdout)["error"]
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "INVALID_FIELD")
    assert error["metadata"] == {"field": "to.account"}
    assert [v["field"] for v in error["field_violations"]] == ["to.account"]
    assert error["field_violations"][0]["description"]


def test_a_command_as_a_real_process_says_nothing_else(live: Live) -> None:
    """A call that succeeds, as ``python -m client``: exit 0, and once the answer is printed
    the process ends without a word on standard error (nothing from gRPC at exit)."""
    done = live.cli.as_processes().run("client", "balance")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("alpha/A-1001: balance "), done.stdout


def test_verbose_prints_the_request_id(live: Live) -> None:
    cli = live.cli
    done = cli.run("client", "balance", "--verbose")
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("request id: ")]
    request_id = line.removeprefix("request id: ")
    [record] = gateway_calls(live.cluster, request_id)
    assert record["method"] == "/minipay.v1.Payments/GetBalance"
    assert "request id" not in cli.run("client", "balance").stderr  # only with --verbose

    failed = cli.run("client", "payment", "pay_missing", "--verbose")
    assert failed.returncode == 1
    last = failed.stderr.splitlines()[-1]
    match = re.fullmatch(
        r"error: NOT_FOUND \(PAYMENT_NOT_FOUND\): .* \[request id ([0-9a-f]{32})\]", last
    )
    assert match, failed.stderr
    [record] = gateway_calls(live.cluster, match.group(1))
    assert (record["method"], record["code"]) == ("/minipay.v1.Payments/GetPayment", "NOT_FOUND")
    quiet = cli.fails("client", "payment", "pay_missing", exit_code=1)
    assert "request id" not in quiet.stderr


def test_a_slow_payment_is_retried_until_its_outcome_is_known(live: Live) -> None:
    """Each attempt may take one second, and gamma takes four to vote: the first attempts end
    DEADLINE_EXCEEDED, and the retries (same key) wait for the payment and report it, once,
    instead of leaving its outcome unknown (a customer would pay again without the key)."""
    cli = live.cli
    key = f"slow-{time.monotonic_ns()}"
    before = cli_json(cli, "balance")["balance_minor_units"]
    done = cli.run(
        "client",
        *("--timeout", "1", "--attempts", "10"),
        *pay_to("gamma", "G-3001", "1.10"),
        *("--idempotency-key", key),
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"payment pay_[0-9a-f]{32} COMMITTED: 1\.10 USD to gamma/G-3001 "
        r"\[replayed: this key was used before\]\n",
        done.stdout,
    ), done.stdout
    log = (cli.home / "logs" / "client.log").read_text().splitlines()
    retried = [json.loads(line) for line in log if key in line and '"client_retry"' in line]
    assert retried and {r["status"] for r in retried} == {"DEADLINE_EXCEEDED"}
    after = cli_json(cli, "balance")["balance_minor_units"]  # delivers the decision first
    assert before - after == 110  # paid once


def test_log_in_again_is_said_once(live: Live) -> None:
    """A token the gateway refuses (logged out elsewhere): one line that says to log in again
    once, with the command to do it."""
    cli = live.cli
    other = Cli(cli.home.parent / "home-logged-out", cli.certs, cli.gateway, cli.extra)
    alice = ("--username", "alice", "--password-stdin")
    other.ok("client", "login", *alice, stdin=SEED_PASSWORDS["alice"] + "\n")
    session = (other.home / "session.json").read_bytes()
    other.ok("client", "logout")
    (other.home / "session.json").write_bytes(session)  # the revoked token, kept
    refused = other.fails("client", "balance", exit_code=1)
    line = refused.stderr
    assert line.startswith("error: UNAUTHENTICATED (TOKEN_REVOKED): "), line
    assert line.count("log in again") == 1, line
    relogin = f"log in again with '{cli.prog('client')} login --username alice'"
    assert line.rstrip().endswith(relogin)


# -- 9. pay-batch: a CSV file of payments ---------------------------------------------------------


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_pay_batch_lists_every_bad_row_and_sends_nothing(cli: Cli, tmp_path: Path) -> None:
    """Every row is checked first; the bad ones are listed by line (after the one error
    line) and nothing is sent: here the gateway's address has nothing listening, so a call
    would end in "cannot reach the gateway" instead."""
    cli.save_session("client", AN_HOUR)
    payroll = write(
        tmp_path / "payroll.csv",
        "Bank, Account ,amount,idempotency_key",
        "beta,B-2001,12.50,k1",
        "",
        "Beta,B-2001,1,k2",
        "beta,B 2001,1,k3",
        "beta,B-2001,1.001,k4",
        "beta,B-2001,0,k5",
        "beta,B-2001,1,k1",
        "beta,B-2001",
        "beta,B-2001,2,",
        'beta,B-2001,"3,k9',
    )
    result = cli.run("client", "pay-batch", str(payroll))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {payroll}: 7 bad rows; nothing was sent"
    assert lines[1:] == [
        "  line 4: bank 'Beta' is not a bank's name (like beta)",
        "  line 5: account 'B 2001' is not 1-34 letters, digits or '-'",
        "  line 6: amount '1.001' has more than 2 decimals for USD",
        "  line 7: amount must be greater than zero",
        "  line 8: idempotency_key repeats line 2's: each row needs its own",
        "  line 9: 2 values; the header names 4 columns",
        "  line 11: not CSV: unexpected end of data",
    ]
    error = json.loads(cli.run("client", "pay-batch", str(payroll), "--json").stdout)["error"]
    assert (error["code"], error["request_id"]) == ("CLIENT_ERROR", None)
    assert [v["field"] for v in error["field_violations"]] == [
        f"line {n}" for n in (4, 5, 6, 7, 8, 9, 11)
    ]
    assert not (tmp_path / "payroll.results.csv").exists()


def test_pay_batch_refuses_a_file_it_cannot_read_in_one_line(cli: Cli, tmp_path: Path) -> None:
    cli.save_session("client", AN_HOUR)
    payroll = write(tmp_path / "ok.csv", "bank,account,amount", "beta,B-2001,1.00")
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as handle:
        handle.truncate(100 * 1024 * 1024)  # 100 MB, sparse: refused before it is read
    many = tmp_path / "many.csv"
    with many.open("w") as handle:
        handle.write("bank,account,amount\n")
        handle.writelines(f"beta,B-2001,{i % 90 + 1}.00\n" for i in range(100_001))
    cases = {
        "empty": (write(tmp_path / "empty.csv"), "is empty: its first line must be the header"),
        "no header": (
            write(tmp_path / "rows.csv", "beta,B-2001,1.00"),
            "line 1 must be the header bank,account,amount[,currency][,idempotency_key]",
        ),
        "unknown column": (
            write(tmp_path / "typo.csv", "bank,account,amount,idempotency key", "beta,B-1,1,k"),
            "unknown column(s) 'idempotency key'",
        ),
        "missing column": (write(tmp_path / "two.csv", "bank,account"), "missing column(s)"),
        "header only": (write(tmp_path / "header.csv", "bank,account,amount"), "no rows"),
        "missing file": (tmp_path / "nowhere.csv", "cannot read"),
        "too large": (huge, "is 104.9 MB; pay-batch reads files of at most 50 MiB"),
        "too many rows": (many, "has more than 100000 rows; split it"),
    }
    for name, (path, words) in cases.items():
        result = cli.fails("client", "pay-batch", str(path))
        assert words in result.stderr, (name, result.stderr)
    atomic = cli.fails("client", "pay-batch", str(payroll), "--atomic")
    assert "1 rows; with --atomic the file is one split payment of 2 to 100 payees" in (
        atomic.stderr
    )
    same = cli.fails("client", "pay-batch", str(payroll), "--results", str(payroll))
    assert "is the input file" in same.stderr
    assert not list(tmp_path.glob("*.results.csv"))


def test_pay_batch_stops_at_a_call_that_fails_and_says_what_became_of_each_row(
    cli: Cli, tmp_path: Path
) -> None:
    """Nothing listens at the gateway's address: the first call fails. Its rows are UNKNOWN in
    the results, the rows after it NOT_SENT, and the error says to run the file again."""
    cli.save_session("client", AN_HOUR)
    payroll = write(
        tmp_path / "big.csv",
        "bank,account,amount",
        *(f"beta,B-2001,{1 + i % 50}.00" for i in range(1500)),
    )
    result = cli.run("client", "pay-batch", str(payroll), "--json")
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: UNAVAILABLE: cannot reach the gateway"), line
    assert line.endswith(
        "; 1000 rows sent without an answer and 500 not sent: run the same command again to "
        "learn and send them (the rows already paid replay, nothing is paid twice)"
    ), line
    summary = json.loads(result.stdout)
    assert (summary["unknown"], summary["not_sent"], summary["calls"]) == (1000, 500, 0)
    assert summary["error"]["code"] == "UNAVAILABLE"
    statuses = [r["status"] for r in read_results(tmp_path / "big.results.csv")]
    assert statuses == ["UNKNOWN"] * 1000 + ["NOT_SENT"] * 500


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_pay_batch_pays_a_file_once_and_an_edited_row_alone(live: Live) -> None:
    cli, cluster = live.cli, live.cluster
    folder = cli.home.parent / "batch"
    folder.mkdir(exist_ok=True)
    rows = [
        "beta,B-2001,1.10",
        "beta,B-2002,2.20,USD",
        "alpha,A-1002,3.30,usd",  # the same bank; a currency in lower case is fine
        "beta,B-2001,1.10",  # the same payment twice: two rows, two payments
    ]
    payroll = write(folder / "payroll.csv", "bank,account,amount,currency", *rows)
    before = bank_state(cluster, "alpha")["accounts"]["A-1001"][0]

    first = cli.run("client", "pay-batch", str(payroll))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"{payroll}: 4 rows in 1 call, " + first.stdout.split(", ")[1].split("\n")[0],
        "  committed       4   moved 7.70 USD",
        "  aborted         0",
        "  refused         0",
        f"results: {folder / 'payroll.results.csv'}",
    ]
    results = read_results(folder / "payroll.results.csv")
    assert [(r["line"], r["status"], r["replayed"]) for r in results] == [
        (str(n), "COMMITTED", "no") for n in (2, 3, 4, 5)
    ]
    assert [r["amount"] for r in results] == ["1.10", "2.20", "3.30", "1.10"]
    assert all(r["payment_id"].startswith("pay_") for r in results)
    keys = [r["idempotency_key"] for r in results]
    assert len(set(keys)) == 4 and all(k.startswith("csv1-") for k in keys)
    wait_until(lambda: bank_state(cluster, "alpha")["accounts"]["A-1001"][0] == before - 770, 10)

    # The same file again: every row replays, nothing is paid twice.
    again = json.loads(cli.ok("client", "pay-batch", str(payroll), "--json"))
    assert (again["rows"], again["committed"], again["replayed"]) == (4, 4, 4)
    assert again["moved"] == [{"amount": "7.70", "amount_minor_units": 770, "currency": "USD"}]
    assert again["request_id"] == again["request_ids"][-1]
    replayed = read_results(folder / "payroll.results.csv")
    assert [r["payment_id"] for r in replayed] == [r["payment_id"] for r in results]
    assert {r["replayed"] for r in replayed} == {"yes"}

    # One row edited, one added elsewhere: those two pay, and only those.
    edited = write(
        folder / "payroll.csv",
        "bank,account,amount,currency",
        "beta,B-2003,0.05,USD",  # added at the top: the other rows keep their keys
        rows[0],
        "beta,B-2002,2.25,USD",  # was 2.20
        *rows[2:],
    )
    third = json.loads(cli.ok("client", "pay-batch", str(edited), "--json"))
    assert (third["rows"], third["committed"], third["replayed"]) == (5, 5, 3)
    paid_now = [r for r in read_results(folder / "payroll.results.csv") if r["replayed"] == "no"]
    assert [(r["line"], r["account"], r["amount"]) for r in paid_now] == [
        ("2", "B-2003", "0.05"),
        ("4", "B-2002", "2.25"),
    ]
    wait_until(
        lambda: bank_state(cluster, "alpha")["accounts"]["A-1001"][0] == before - 770 - 230, 10
    )

    # A row the banks refuse: its reason in the summary and the results, and exit 1.
    refused = write(
        folder / "refused.csv",
        "bank,account,amount",
        "beta,B-404,1.00",
        "omega,O-1,1.00",
        "beta,B-2001,0.01",
    )
    done = cli.run("client", "pay-batch", str(refused))
    assert done.returncode == 1, done.stderr
    assert "  aborted         1   ACCOUNT_NOT_FOUND 1" in done.stdout.splitlines()
    assert "  refused         1   BANK_NOT_FOUND 1" in done.stdout.splitlines()
    outcomes = read_results(folder / "refused.results.csv")
    assert [(r["status"], r["reason_code"]) for r in outcomes] == [
        ("ABORTED", "ACCOUNT_NOT_FOUND"),
        ("REFUSED", "BANK_NOT_FOUND"),
        ("COMMITTED", ""),
    ]
    assert outcomes[1]["payment_id"] == "" and "omega" in outcomes[1]["reason"]


def test_pay_batch_shows_a_progress_bar_on_a_terminal(live: Live) -> None:
    """tqdm's bar on standard error when it is a terminal; the summary on standard output."""
    cli = live.cli
    folder = cli.home.parent / "batch"
    folder.mkdir(exist_ok=True)
    payroll = write(
        folder / "terminal.csv",
        "bank,account,amount",
        *(f"beta,B-2003,0.{i:02d}" for i in range(1, 31)),
    )
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, b"\x18\x00\x78\x00\x00\x00\x00\x00")  # 24 x 120
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "client", "pay-batch", str(payroll)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            env=cli.env("client"),
            cwd=REPO_ROOT,
        )
        os.close(slave)
        out, _ = process.communicate(timeout=60)
        seen = b""
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert process.returncode == 0, seen
    bar = seen.decode(errors="replace")
    assert "terminal.csv: 100%" in bar and "30/30" in bar and "payments/s" in bar, bar
    assert out.decode().splitlines()[1] == "  committed      30   moved 4.65 USD"
