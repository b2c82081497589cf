"""The reconcile (Admin/Reconcile, ``admin reconcile``): the books agree after payments,
refunds and deposits; a ledger or balance changed behind the system's back is named; a bank
down is named and nothing changes; payments running meanwhile are no finding; any replica
shows the last report. And ``admin overview``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest

from devtools.cluster import GATEWAY, Cluster
from minipay.client.api import GatewayClient, RetryPolicy
from server.gateway import reconcile
from tests.conftest import ClusterFactory
from tests.helpers import (
    ADMIN,
    SEED_ACCOUNTS,
    Client,
    admin,
    assert_reconciled,
    bank_url,
    client_config,
    customer,
    log_in_everyone,
    postgres_available,
    settle,
    wait_until,
)
from tests.test_cli import Cli


def key() -> str:
    return uuid.uuid4().hex


def some_traffic(cluster: Cluster, certs: Path) -> None:
    """Payments across banks and within one, a refund, a deposit and a new customer."""
    alice = customer(cluster, certs, "alice")
    bob_bank, bob_account = SEED_ACCOUNTS["bob"]
    carol_bank, carol_account = SEED_ACCOUNTS["carol"]
    paid = alice.pay(carol_bank, carol_account, 1_500, idempotency_key=key())
    alice.pay(bob_bank, bob_account, 700, idempotency_key=key())
    alice.pay(carol_bank, carol_account, 10**12, idempotency_key=key())  # aborts
    boss = admin(cluster, certs)
    boss.admin_refund(paid.payment_id, 500, "USD", key())
    boss.deposit(carol_bank, carol_account, 2_000, idempotency_key=key())
    boss.create_user(
        username="zed",
        name="Zed",
        password="zed-password-1",
        bank="beta",
        account="B-7777",
        balance_minor_units=12_345,
    )


def sqlite_file(cluster: Cluster, bank: str) -> str:
    return bank_url(cluster, bank).split("///", 1)[1]


def test_the_books_agree_after_payments_refunds_and_deposits(
    cluster: Cluster, certs: Path, tmp_path: Path
) -> None:
    some_traffic(cluster, certs)
    settle(cluster)
    report = assert_reconciled(cluster, certs)
    assert report.payments_checked == 4  # three payments and a refund
    assert report.deposits_checked >= 2  # the deposit, the openings
    assert {bank.bank for bank in report.banks} == set(cluster.bank_names)
    assert all(c.balances_minor_units == c.deposits_minor_units for c in report.currencies)
    last = admin(cluster, certs).last_reconcile()
    assert last is not None and last.run_id == report.run_id and last.agreed

    cli = Cli(tmp_path / "home", certs, cluster.gateway_address)
    cli.ok("admin", "login", "--username", ADMIN[0], "--password-stdin", stdin=ADMIN[1] + "\n")
    assert "the books agree" in cli.ok("admin", "reconcile")
    data = json.loads(cli.ok("admin", "reconcile", "--json", "--older-than", "5"))
    assert data["agreed"] is True and data["findings"] == [] and data["older_than_seconds"] == 5
    overview = cli.ok("admin", "overview")
    assert "bank alpha" in overview and "last reconcile: agreed" in overview
    shown = json.loads(cli.ok("admin", "overview", "--json"))
    assert len(shown["throughput"]) == 30
    assert sum(b["committed"] for b in shown["throughput"]) >= 3
    assert shown["open_payments"] == 0 and shown["replicas"][0]["live"] is True


def test_a_deposit_is_recorded_and_applied_once(cluster: Cluster, certs: Path) -> None:
    boss = admin(cluster, certs)
    bank, account = SEED_ACCOUNTS["carol"]
    same = key()
    first = boss.deposit(bank, account, 300, idempotency_key=same)
    again = boss.deposit(bank, account, 300, idempotency_key=same)
    assert again.balance_minor_units == first.balance_minor_units
    error = boss.error("deposit", bank, account, 301, idempotency_key=same)
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    refused = boss.error("deposit", bank, account, 300, "EUR", idempotency_key=key())
    assert refused.code.name == "FAILED_PRECONDITION"
    assert_reconciled(cluster, certs)


def test_changes_behind_the_system_s_back_are_named(
    cluster: Cluster, certs: Path, tmp_path: Path
) -> None:
    some_traffic(cluster, certs)
    settle(cluster)
    assert_reconciled(cluster, certs)
    bank, account = SEED_ACCOUNTS["carol"]
    with sqlite3.connect(sqlite_file(cluster, bank)) as db:
        db.execute("UPDATE accounts SET balance = balance + 999 WHERE number = ?", (account,))
    beta = sqlite_file(cluster, "beta")
    with sqlite3.connect(beta) as db:
        entry_id, payment_id = db.execute(
            "SELECT id, payment_id FROM ledger_entries WHERE payment_id IS NOT NULL LIMIT 1"
        ).fetchone()
        db.execute("DELETE FROM ledger_entries WHERE id = ?", (entry_id,))
        db.execute(
            "INSERT INTO ledger_entries (account_number, amount, balance_after, payment_id, "
            "deposit_id, created_at) VALUES ('B-2001', 5, 0, NULL, NULL, 0)"
        )
    # Payments finished within CLOCK_SKEW of the start count as moving: conservation is
    # judged only when nothing is.
    time.sleep(reconcile.CLOCK_SKEW + 0.5)
    report = admin(cluster, certs).reconcile(1)
    assert not report.agreed
    codes = {(f.code, f.bank) for f in report.findings}
    assert ("BALANCE_MISMATCH", bank) in codes
    assert ("CONSERVATION", "") in codes
    assert ("ENTRY_MISSING", "beta") in codes
    assert ("UNKNOWN_AT_BANK", "beta") in codes
    missing = next(f for f in report.findings if f.code == "ENTRY_MISSING")
    assert missing.payment_id == payment_id

    cli = Cli(tmp_path / "home", certs, cluster.gateway_address)
    cli.ok("admin", "login", "--username", ADMIN[0], "--password-stdin", stdin=ADMIN[1] + "\n")
    result = cli.run("admin", "reconcile")
    assert result.returncode == 1
    assert "THE BOOKS DISAGREE" in result.stdout and "BALANCE_MISMATCH" in result.stdout


def test_a_bank_down_is_named_and_nothing_changes(
    cluster: Cluster, certs: Path, tmp_path: Path
) -> None:
    some_traffic(cluster, certs)
    settle(cluster)
    cluster.kill("gamma")
    cli = Cli(tmp_path / "home", certs, cluster.gateway_address)
    cli.ok("admin", "login", "--username", ADMIN[0], "--password-stdin", stdin=ADMIN[1] + "\n")
    result = cli.run("admin", "reconcile", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert not report["agreed"]
    assert [(f["code"], f["bank"]) for f in report["findings"]] == [("BANK_UNREACHABLE", "gamma")]
    assert "NOT ANSWERING" in cli.run("admin", "reconcile").stdout
    assert "NOT ANSWERING" in cli.ok("admin", "overview")
    cluster.start_process("gamma")
    cluster.wait_ready("gamma")
    boss = admin(cluster, certs)
    wait_until(lambda: all(b.serving for b in boss.list_banks().banks), what="gamma serving")
    assert_reconciled(cluster, certs)


def test_reconcile_while_payments_run_finds_nothing(cluster: Cluster, certs: Path) -> None:
    config = client_config(cluster, certs)
    tokens = asyncio.run(log_in_everyone(config))
    stop = threading.Event()
    paid = 0

    async def pay_on() -> None:
        nonlocal paid
        names = sorted(tokens)
        async with GatewayClient(config, retry=RetryPolicy(max_attempts=1)) as client:
            i = 0
            while not stop.is_set():
                payer, payee = names[i % len(names)], names[(i * 7 + 3) % len(names)]
                i += 1
                if payer == payee:
                    continue
                client.token = tokens[payer]
                await asyncio.gather(
                    *(
                        client.pay(*SEED_ACCOUNTS[payee], 1 + j, idempotency_key=key())
                        for j in range(4)
                    ),
                    return_exceptions=True,
                )
                paid += 4

    worker = threading.Thread(target=lambda: asyncio.run(pay_on()))
    worker.start()
    try:
        boss = admin(cluster, certs)
        reports = []
        for _ in range(3):
            reports.append(boss.reconcile(60))
    finally:
        stop.set()
        worker.join(60)
    assert paid > 0
    for report in reports:
        assert report.agreed, [f.detail for f in report.findings]
    assert any(report.in_flight for report in reports) or paid < 20
    settle(cluster)
    assert_reconciled(cluster, certs)


def test_reconcile_bad_input(cluster: Cluster, certs: Path) -> None:
    boss = admin(cluster, certs)
    error = boss.error("reconcile", -5)
    assert error.code.name == "INVALID_ARGUMENT"
    assert [name for name, _ in error.field_violations] == ["older_than_seconds"]
    assert boss.last_reconcile() is None
    alice = customer(cluster, certs, "alice")
    assert alice.error("reconcile").code.name == "PERMISSION_DENIED"


@pytest.mark.skipif(not postgres_available(), reason="replicas need MINIPAY_TEST_POSTGRES_URL")
def test_the_last_reconcile_from_another_replica(make_cluster: ClusterFactory, certs: Path) -> None:
    cluster = make_cluster("postgres", gateways=2)
    some_traffic(cluster, certs)
    settle(cluster)
    first = Client(cluster, certs, "admin", gateway=cluster.address(GATEWAY))
    first.login(*ADMIN)
    report = first.reconcile(1)
    assert report.agreed and report.replica == GATEWAY
    second = Client(cluster, certs, "admin", gateway=cluster.address("gateway-2"))
    second.login(*ADMIN)
    last = second.last_reconcile()
    assert last is not None and last.run_id == report.run_id
    overview = second.overview()
    assert {r.name for r in overview.replicas} == {GATEWAY, "gateway-2"}
    assert all(r.live for r in overview.replicas)
    assert overview.last_reconcile is not None
    assert overview.last_reconcile.run_id == report.run_id
