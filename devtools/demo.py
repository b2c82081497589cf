"""``make demo``: start a cluster in a temporary folder, run a short scripted session with
the real admin and client command lines, print it, stop everything."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.cluster import Cluster, every_process

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
    # The command lines' own variables (see ``client/cli.py``), not server settings.
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


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="minipay-demo-") as folder:
        cluster = Cluster(Path(folder), env=every_process(log_format="json"))
        print("== starting three banks and the gateway (mutual TLS, SQLite, 2PC)")
        try:
            cluster.start()
            for name in cluster.names:
                print(f"   {name:<8} {cluster.address(name)}")
            failures = 0
            for index, (who, command, password, expected) in enumerate(SCRIPT):
                print(f"\n[{who}] $ python -m {command}")
                if index in NOTES:
                    print(f"   # {NOTES[index]}")
                code, output = run_step(cluster, who, command, password, Path(folder) / "home")
                for line in output.splitlines():
                    print(f"   {line}")
                if code != expected:
                    failures += 1
                    print(f"   !! exit code {code}, expected {expected}")
        finally:
            cluster.stop()
            print("\n== cluster stopped")
    if failures:
        print(f"demo FAILED: {failures} step(s) did not behave as expected")
        return 1
    print("demo finished: every step behaved as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
