"""The audit chain from outside: admin actions (with their outcome), refused admin attempts,
key rotations and each round's decisions are recorded, with no password anywhere; `admin
audit verify` holds on the chain as written and catches a record edited, deleted, two
swapped, and the chain truncated or rewritten from some point on (given a head saved
earlier), each done behind the system's back in its database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from devtools.cluster import Cluster
from minipay.audit import chain_hash
from tests import command_lines
from tests.conftest import ClusterFactory
from tests.helpers import SEED_ACCOUNTS, admin, customer

CAROL = SEED_ACCOUNTS["carol"]


def bodies(cluster: Cluster, certs: Path) -> list[dict[str, Any]]:
    page = admin(cluster, certs).audit_page(0, 1000)
    return [json.loads(record.body) for record in page.records]


def admin_cli(
    cluster: Cluster, certs: Path, home: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """The admin's command line (its main() in this process: tests/command_lines.py), with
    the admin's password on standard input."""
    given = command_lines.variables(certs, cluster.gateway_address, home, "admin")
    return command_lines.run_here("admin", args, given, stdin="admin-dev-pass\n")


@pytest.mark.in_process
def test_admin_actions_refusals_and_decisions_are_recorded(cluster: Cluster, certs: Path) -> None:
    boss, alice = admin(cluster, certs), customer(cluster, certs, "alice")
    paid = alice.pay(*CAROL, 700)
    boss.create_user(
        username="zed",
        name="Zed",
        password="zed-secret-pass-1",
        bank="alpha",
        account="A-9001",
        balance_minor_units=0,
    )
    boss.admin_refund(paid.payment_id, 200)
    assert (
        boss.error("set_disabled", "alpha", "nobody-here", True).code == grpc.StatusCode.NOT_FOUND
    )
    assert alice.error("list_users").code == grpc.StatusCode.PERMISSION_DENIED

    records = bodies(cluster, certs)
    text = json.dumps(records)
    assert "zed-secret-pass-1" not in text and "admin-dev-pass" not in text
    assert alice.token not in text and boss.token not in text
    actions = [(r["action"], r["outcome"]) for r in records if r["type"] == "admin_action"]
    assert ("rotate_key", "OK") in actions  # the replica's first key
    assert ("create_user", "OK") in actions
    assert ("refund", "OK") in actions
    assert ("disable_user", "CUSTOMER_NOT_FOUND") in actions
    assert any(action == "ListUsers" for action, _ in actions), actions  # alice's attempt
    created = next(r for r in records if r.get("action") == "create_user")
    assert created["admin"] == "admin" and created["certificate"] == "admin"
    assert created["what"]["username"] == "zed"
    decided = [p for r in records if r["type"] == "decisions" for p in r["payments"]]
    ids = {p["id"]: p for p in decided}
    assert ids[paid.payment_id]["status"] == "COMMITTED"
    assert ids[paid.payment_id]["amount"] == 700
    refund = next(p for p in decided if p["refund_of"] == paid.payment_id)
    assert refund["requested_by"] == "admin"
    # The overview names the chain's head, as the chain ends.
    page = boss.audit_page(0, 1000)
    seen = boss.overview()
    assert seen.audit_head_sequence >= page.head_sequence == page.records[-1].sequence
    assert seen.last_event_sequence > 0


@pytest.mark.in_process
def test_verify_catches_every_kind_of_tampering(
    make_cluster: ClusterFactory, certs: Path, tmp_path: Path
) -> None:
    cluster = make_cluster()
    alice = customer(cluster, certs, "alice")
    for amount in (100, 200, 300, 400):
        alice.pay(*CAROL, amount)
    home = tmp_path / "admin"
    assert (
        admin_cli(
            cluster, certs, home, "login", "--username", "admin", "--password-stdin"
        ).returncode
        == 0
    )
    good = admin_cli(cluster, certs, home, "audit", "verify")
    assert good.returncode == 0, good.stderr
    assert "the chain holds" in good.stdout
    head = json.loads(admin_cli(cluster, certs, home, "--json", "audit", "verify").stdout)["head"]
    listed = admin_cli(cluster, certs, home, "--json", "audit", "list")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) >= 4

    database = cluster.data_dir / "gateway.db"
    if not database.exists():
        database = next(cluster.data_dir.glob("gateway*.db"))

    def tamper(*statements: str) -> None:
        with sqlite3.connect(database) as connection:
            for statement in statements:
                connection.execute(statement)

    def snapshot() -> list[tuple[int, str, str, str]]:
        with sqlite3.connect(database) as connection:
            return list(connection.execute("SELECT sequence, prev_hash, hash, body FROM audit_log"))

    def restore(rows: list[tuple[int, str, str, str]], head_row: tuple[int, str]) -> None:
        with sqlite3.connect(database) as connection:
            connection.execute("DELETE FROM audit_log")
            connection.executemany("INSERT INTO audit_log VALUES (?, ?, ?, ?)", rows)
            connection.execute(
                "UPDATE journal_heads SET sequence = ?, hash = ? WHERE name = 'audit'", head_row
            )

    original = snapshot()
    with sqlite3.connect(database) as connection:
        head_row = connection.execute(
            "SELECT sequence, hash FROM journal_heads WHERE name = 'audit'"
        ).fetchone()

    def verdict(*extra: str) -> str:
        result = admin_cli(cluster, certs, home, "audit", "verify", *extra)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout

    edit = "replace(body, '\"amount\":200', '\"amount\":2')"
    tamper(f"UPDATE audit_log SET body = {edit} WHERE sequence = 3")
    assert "record 3 was changed" in verdict()
    restore(original, head_row)
    tamper("DELETE FROM audit_log WHERE sequence = 2")
    assert "record 2 is missing" in verdict()
    restore(original, head_row)
    tamper(  # swap the bodies (and hashes) of 2 and 3
        "UPDATE audit_log SET sequence = -2 WHERE sequence = 2",
        "UPDATE audit_log SET sequence = 2 WHERE sequence = 3",
        "UPDATE audit_log SET sequence = 3 WHERE sequence = -2",
    )
    assert "record 2" in verdict()
    restore(original, head_row)
    # Truncated, and the head moved back to match: only a saved head catches it.
    last = original[-1][0]
    tamper(
        f"DELETE FROM audit_log WHERE sequence >= {last - 1}",
        f"UPDATE journal_heads SET sequence = {last - 2}, hash = "
        f"(SELECT hash FROM audit_log WHERE sequence = {last - 2}) WHERE name = 'audit'",
    )
    assert admin_cli(cluster, certs, home, "audit", "verify").returncode == 0
    assert "truncated" in verdict("--expect-head", head)
    restore(original, head_row)
    # Rewritten from record 2 on, every hash recomputed: the saved head no longer matches.
    rewritten = list(original[:1])
    previous = original[0][2]
    for sequence, _, _, body in original[1:]:
        body = body.replace('"amount":300', '"amount":3')
        digest = chain_hash(previous, body)
        rewritten.append((sequence, previous, digest, body))
        previous = digest
    restore(rewritten, (rewritten[-1][0], previous))
    assert admin_cli(cluster, certs, home, "audit", "verify").returncode == 0
    assert "rewritten" in verdict("--expect-head", head)
    restore(original, head_row)
    assert admin_cli(cluster, certs, home, "audit", "verify", "--expect-head", head).returncode == 0
