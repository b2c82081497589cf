"""What the command lines run first (``minipay`` and ``minipay-admin``; ``python -m client``
and ``python -m admin`` in a checkout): Ctrl-C is one line from the very first instant, while
the command's modules are still being imported, and it ends the command by SIGINT, so that a
shell loop around the command stops too.

Nothing here imports more than the standard library: it runs before grpc is loaded."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
from types import FrameType
from typing import NoReturn

INTERRUPTED = "interrupted"


def die_of(signum: int) -> NoReturn:
    """Ends this process by the signal SIGNUM, as a program stopped by it should once it has
    cleaned up: a shell that runs it in a loop sees Ctrl-C's SIGINT and stops as well, where
    an exit status (even 130) would let the loop go on. The shell reports 128 + SIGNUM."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # only where the signal did not end the process


def die_interrupted() -> NoReturn:
    """Ends this process as Ctrl-C does."""
    die_of(signal.SIGINT)


def _interrupted_while_starting(_signum: int, _frame: FrameType | None) -> None:
    """Ctrl-C before the command runs: nothing was sent; one line (and the JSON error with
    --json, as the command lines print every error), then SIGINT."""
    if "--json" in sys.argv[1:]:
        error: dict[str, object] = {
            "code": "INTERRUPTED",
            "reason": "",
            "message": INTERRUPTED,
            "metadata": {},
            "request_id": None,
            "field_violations": [],
            "retry_after_s": None,
        }
        print(json.dumps({"error": error}))
    print(f"error: {INTERRUPTED}", file=sys.stderr)
    die_interrupted()


def run(module: str) -> NoReturn:
    """Imports MODULE and runs its ``main()``, with Ctrl-C handled from the start (unless it
    is ignored, as in a job a script started in the background: then it stays ignored)."""
    handled = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    if handled:
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    main = importlib.import_module(module).main
    if handled:
        # From here Ctrl-C is KeyboardInterrupt again: the command ends its own prompt and
        # call (echo back on, a payment's key to repeat it with) before its one line.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = main()
    except KeyboardInterrupt:  # outside the command's own handling (reading its flags)
        _interrupted_while_starting(signal.SIGINT, None)
    sys.exit(code)


def customer() -> NoReturn:
    """The ``minipay`` command."""
    run("minipay.client.__main__")


def admin() -> NoReturn:
    """The ``minipay-admin`` command."""
    run("minipay.admin.__main__")
