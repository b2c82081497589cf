"""The customer's and the admin's command lines in tests, run two ways.

``run_here``: the command's own ``main(argv)`` in the test's process, with the given
``MINIPAY_*`` variables (and no others), standard input, and standard output and error
captured; the exit status is what ``main`` returns, or what it exits with (argparse's
``--help`` and usage errors). It is the command line but for the process: no interpreter
start-up and imports (about a second of CPU each), so the tests of what a command prints,
refuses and sends run this way. An unexpected exception is a traceback in the test itself.

``run_process``: ``python -m TOOL`` as a person runs it. For what only a process shows:
the entry point (``minipay.launch``: the exit status given to the shell, Ctrl-C and
SIGINT, nothing on standard error but the one line, no traceback), a terminal, the command's
name in its usage, what it imports. Each test file keeps a few of these.

Both return a ``subprocess.CompletedProcess`` of text.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from certificate.ca import SERVICES_CA
from devtools.cluster import SETTINGS_PREFIX
from minipay.client.commandline import command_name
from minipay.client.logs import LOGGER
from tests.helpers import only_variables

REPO_ROOT = Path(__file__).resolve().parents[1]
MAINS = {"client": "minipay.client.__main__", "admin": "minipay.admin.__main__"}
Result = subprocess.CompletedProcess[str]
_one_at_a_time = threading.Lock()  # standard streams and variables belong to the process


def variables(certs: Path, gateway: str, home: Path, cert: str, **extra: str) -> dict[str, str]:
    """The variables of a command line talking to GATEWAY as certificate CERT, with its home
    (session, client.log) in HOME; EXTRA adds or overrides (MINIPAY_ATTEMPTS="2"...)."""
    return {
        "MINIPAY_HOME": str(home),
        "MINIPAY_GATEWAY": gateway,
        "MINIPAY_CA": str(certs / SERVICES_CA),
        "MINIPAY_CERT": str(certs / f"{cert}.pem"),
        "MINIPAY_KEY": str(certs / f"{cert}-key.pem"),
        **extra,
    }


def process_environment(given: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its MINIPAY_* variables, then GIVEN."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIX)}
    env.update(given)
    return env


def run_process(
    tool: str, args: Sequence[str], given: Mapping[str, str], stdin: str = "", timeout: float = 60
) -> Result:
    """``python -m TOOL ARGS`` with GIVEN as its MINIPAY_* variables."""
    return subprocess.run(
        [sys.executable, "-m", tool, *args],
        input=stdin,
        env=process_environment(given),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_here(tool: str, args: Sequence[str], given: Mapping[str, str], stdin: str = "") -> Result:
    """TOOL's ``main(ARGS)`` in this process, with GIVEN as its only MINIPAY_* variables."""
    main = importlib.import_module(MAINS[tool]).main
    out, err = io.StringIO(), io.StringIO()
    with (
        _one_at_a_time,
        only_variables(given),
        _client_log_kept_apart(),
        _stdin(stdin),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        _asyncio_reports_to(err),
    ):
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse: --help, and the usage errors
            code = _exit_status(exit, err)
    return subprocess.CompletedProcess([tool, *args], code, out.getvalue(), err.getvalue())


def name_here(tool: str) -> str:
    """The name a command run by ``run_here`` gives itself in its hints: the installed
    command's (``minipay``), since this process was not started as ``python -m client``."""
    return command_name(tool)


def _exit_status(exit: SystemExit, err: io.StringIO) -> int:
    if exit.code is None:
        return 0
    if isinstance(exit.code, int):
        return exit.code
    print(exit.code, file=err)  # as the interpreter does with sys.exit("text")
    return 1


@contextlib.contextmanager
def _client_log_kept_apart() -> Iterator[None]:
    """The command points the client library's logger at its own client.log; afterwards the
    test's own calls through the library log where they did before."""
    logger = logging.getLogger(LOGGER)
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    try:
        yield
    finally:
        for handler in list(logger.handlers):
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        logger.setLevel(level)
        logger.propagate = propagate


@contextlib.contextmanager
def _asyncio_reports_to(stream: io.StringIO) -> Iterator[None]:
    """What asyncio reports in this thread (a task's exception that nobody retrieved...)
    goes to STREAM, as in a process of its own it would reach standard error, traceback and
    all (the in-process servers' loop, in a thread of its own, reports elsewhere)."""
    logger = logging.getLogger("asyncio")
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    this_thread = threading.get_ident()
    handler.addFilter(lambda record: record.thread == this_thread)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def _stdin(text: str) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved
