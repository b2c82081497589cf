"""``make demo``: start a cluster and the web console in a temporary folder, run a short
scripted session with the real admin and client command lines, print it, stop everything
(``--keep``: keep the cluster and the console up until Ctrl-C, to look at what the script did
in the browser). Ctrl-C or SIGTERM, at any moment, stops everything and removes the folder
too."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from devtools.cluster import (
    Cluster,
    ConsoleProcess,
    Stopped,
    StopRequests,
    every_process,
)
from devtools.scratch import free_port
from minipay.launch import die_of

ROOT = Path(__file__).resolve().parents[1]

# (who is typing, command, password for --password-stdin or None, exit code expected)
SCRIPT: list[tuple[str, str, str | None, int]] = [
    ("admin", "admin login --username admin --password-stdin", "admin-dev-pass", 0),
    ("admin", "admin list-banks", None, 0),
    (
        "admin",
        "admin create-user --username zed --name 'Zed Zimmer' --bank gamma "
        "--account G-3999 --balance 100.00 --password-stdin",
        "zed-dev-pass",
        0,
    ),
    ("admin", "admin list-users --bank gamma", None, 0),
    (
        "alice",
        "client register --bank alpha --account A-1001 --username alice --password-stdin",
        "alice-dev-pass",
        0,
    ),
    ("alice", "client login --username alice --password-stdin", "alice-dev-pass", 0),
    ("alice", "client balance", None, 0),
    (
        "alice",
        "client pay --to-bank beta --to-account B-2001 --amount 12.34 "
        "--idempotency-key demo-payment-1",
        None,
        0,
    ),
    (
        "alice",
        "client pay --to-bank beta --to-account B-2001 --amount 12.34 "
        "--idempotency-key demo-payment-1",
        None,
        0,
    ),
    ("alice", "client pay --to-bank gamma --to-account G-3999 --amount 5000.00", None, 1),
    ("alice", "client balance --json", None, 0),
    ("alice", "client history", None, 0),
    (
        "carol",
        "client register --bank beta --account B-2001 --username carol --password-stdin",
        "carol-dev-pass",
        0,
    ),
    ("carol", "client login --username carol --password-stdin", "carol-dev-pass", 0),
    ("carol", "client history", None, 0),
    ("carol", "client pay --to-bank alpha --to-account A-1001 --amount 0.001", None, 2),
]
NOTES = {
    8: "same idempotency key again: the first outcome, no second payment",
    9: "more than alice has: aborted at both banks, nothing moves",
    15: "an amount the currency cannot hold is refused before anything is sent",
}


def run_step(
    cluster: Cluster, who: str, command: str, password: str | None, homes: Path
) -> tuple[int, str]:
    cert = "admin" if who == "admin" else "client-1"
    # The command lines' own variables (``minipay/client/api.py``), not server settings.
    env = {
        **os.environ,
        "MINIPAY_GATEWAY": cluster.gateway_address,
        "MINIPAY_HOME": str(homes / who),
        "MINIPAY_CERT": str(cluster.certs / f"{cert}.pem"),
        "MINIPAY_KEY": str(cluster.certs / f"{cert}-key.pem"),
    }
    result = subprocess.run(
        [sys.executable, "-m", *shlex.split(command)],
        input=(password + "\n") if password else "",
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    return result.returncode, (result.stdout + result.stderr).rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo",
        description="Start three banks, the gateway and the web console in a temporary folder "
        "on free ports, run a scripted session with the admin and client command lines, print "
        "each command and its answer, and stop. Ctrl-C or SIGTERM stops the cluster and "
        "removes the folder. Exit status: 0 when every step behaved as expected, 1 when one "
        "did not.",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="after the script, keep the cluster and the console running until Ctrl-C",
    )
    args = parser.parse_args(argv)
    stops = StopRequests()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="minipay-demo-") as folder:
        cluster = Cluster(Path(folder), env=every_process(log_format="json"))
        console = ConsoleProcess(cluster, free_port(), any_free_port=True)
        try:
            failures = run_script(cluster, console, Path(folder) / "home", stops.requested)
            if args.keep and not stops.requested():
                print(f"\n== still up: open {console.url} (Ctrl-C stops everything)")
                while not stops.requested():
                    time.sleep(0.2)
        except Stopped:
            pass  # said below, once the folder is gone
        except (RuntimeError, TimeoutError) as error:  # the cluster did not start
            print(f"error: {error}", file=sys.stderr)
            failures = len(SCRIPT)
        finally:
            console.stop()
            cluster.stop()
            print("\n== cluster stopped")
    if stops.signal is not None:
        print(f"demo stopped by {stops.signal.name}; its temporary folder is removed")
        die_of(stops.signal)
    if failures:
        print(f"demo FAILED: {failures} step(s) did not behave as expected")
        return 1
    print("demo finished: every step behaved as expected")
    return 0


def run_script(
    cluster: Cluster, console: ConsoleProcess, homes: Path, stopping: Callable[[], bool]
) -> int:
    """Starts CLUSTER and its CONSOLE and runs the script against it; how many steps did not
    behave as expected. Raises Stopped as soon as STOPPING() says so."""
    print("== starting three banks, the gateway (mutual TLS, SQLite, 2PC) and the web console")
    cluster.start(stopping=stopping)
    console.start()
    console.wait_ready(stopping=stopping)
    for name in cluster.names:
        print(f"   {name:<8} {cluster.address(name)}")
    print(f"   {'console':<8} {console.url}  (sign in as admin / admin-dev-pass)")
    failures = 0
    for index, (who, command, password, expected) in enumerate(SCRIPT):
        if stopping():
            raise Stopped
        print(f"\n[{who}] $ python -m {command}")
        if index in NOTES:
            print(f"   # {NOTES[index]}")
        code, output = run_step(cluster, who, command, password, homes)
        for line in output.splitlines():
            print(f"   {line}")
        if code != expected and not stopping():  # a step cut short by Ctrl-C is not a failure
            failures += 1
            print(f"   !! exit code {code}, expected {expected}")
    return failures


if __name__ == "__main__":
    sys.exit(main())
