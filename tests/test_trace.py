"""A payment's story (``GetPaymentTrace``) from real clusters: committed, aborted for each
cause (a no vote, the timeout, a bank that cannot be reached), recovered (a bank asked after
the gateway was killed) and taken over by another replica (PostgreSQL, kill -9 of the owner
mid-way); each read by its payer, its payee, a stranger and an admin, and through the CLIs.

Judged: the steps a sequence diagram of two-phase commit would draw, in order, each named for
the replica that took it, with sent/answered times that make sense; the payer sees every
step, the payee a committed payment's steps without the payer's bank's votes or the payer's
request details, a stranger the very answer a payment that does not exist gets, an admin
everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from certificate.ca import SERVICES_CA
from devtools.cluster import GATEWAY, Cluster
from minipay.client.api import ApiError, PaymentTrace
from minipay.client.trace import TraceStep
from minipay.client.trace_text import render_text
from server.common.settings import GatewaySettings, environment
from tests.conftest import ClusterFactory
from tests.helpers import (
    ABORTED,
    COMMITTED,
    SEED_ACCOUNTS,
    Client,
    admin,
    assert_atomic,
    customer,
    postgres_available,
    server_env,
    settle,
    total_money,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PAYEE = SEED_ACCOUNTS["carol"]  # the payee of every payment here
STRANGER_CERT = "client-3"
Story = list[tuple[str, str, str]]  # (kind, bank, outcome) of each step


class Readers:
    """The four who may ask for a payment's story: alice (the payer), carol (the payee),
    dave (a stranger, at the payee's bank) and an admin."""

    def __init__(self, cluster: Cluster, certs: Path, gateway: str = "") -> None:
        self.payer = customer(cluster, certs, "alice")
        self.payee = customer(cluster, certs, "carol", cert="client-2")
        self.stranger = customer(cluster, certs, "dave", cert=STRANGER_CERT)
        self.admin = admin(cluster, certs)
        if gateway:  # read through one replica
            for client in (self.payer, self.payee, self.stranger, self.admin):
                client.config = type(client.config)(
                    **{**vars(client.config), "gateway": cluster.address(gateway)}
                )

    def traces(self, payment_id: str) -> dict[str, PaymentTrace | ApiError]:
        def read(work: Callable[[], PaymentTrace]) -> PaymentTrace | ApiError:
            try:
                return work()
            except ApiError as error:
                return error

        return {
            "payer": read(lambda: self.payer.payment_trace(payment_id)),
            "payee": read(lambda: self.payee.payment_trace(payment_id)),
            "stranger": read(lambda: self.stranger.payment_trace(payment_id)),
            "admin": read(lambda: self.admin.admin_payment_trace(payment_id)),
        }


def story(trace: PaymentTrace | ApiError) -> Story:
    assert isinstance(trace, PaymentTrace), trace
    return [(step.kind, step.bank, step.outcome) for step in trace.steps]


# The order two-phase commit takes; steps of one phase (two banks' votes) in any order, and a
# replay or a bank's question whenever it came.
PHASES = ("RECORDED", "VOTED", "DECIDED", "TAKEN_OVER", "NOT_ACKNOWLEDGED", "FINISHED")


def assert_story(trace: PaymentTrace | ApiError, *expected: tuple[str, str, str]) -> None:
    """TRACE has exactly the EXPECTED steps (kind, bank, outcome), in the order of PHASES."""
    told = story(trace)
    assert sorted(told) == sorted(expected), told
    phases = [PHASES.index(kind) for kind, _, _ in told if kind in PHASES]
    assert phases == sorted(phases), told


def steps_of(trace: PaymentTrace | ApiError, kind: str, bank: str = "") -> list[TraceStep]:
    assert isinstance(trace, PaymentTrace), trace
    return [s for s in trace.steps if s.kind == kind and (not bank or s.bank == bank)]


def assert_not_found(error: PaymentTrace | ApiError, payment_id: str) -> None:
    """Exactly what a payment that does not exist gets."""
    assert isinstance(error, ApiError), error
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND")
    assert error.metadata == {"payment_id": payment_id}
    assert error.message == "no payment with this id that you made or received"


def assert_sane_times(trace: PaymentTrace) -> None:
    """Every message is answered after it left; the story starts at the record."""
    assert trace.steps[0].kind == "RECORDED" and trace.steps[0].elapsed_ms == 0
    for step in trace.steps:
        assert step.elapsed_ms >= 0, step
        if step.sent_at is not None:
            assert step.sent_at <= step.at, step
        assert step.replica, step


def assert_payee_view(payer: PaymentTrace | ApiError, payee: PaymentTrace | ApiError) -> None:
    """The payee's story: the payer's without the payer's bank's votes and questions, the
    payer's replays, or the payer's request details."""
    assert isinstance(payer, PaymentTrace) and isinstance(payee, PaymentTrace)
    payer_bank = payer.payer.bank
    expected = [
        step
        for step in payer.steps
        if step.kind != "REPLAYED"
        and not (step.kind in ("VOTED", "NOT_ACKNOWLEDGED", "ASKED") and step.bank == payer_bank)
    ]
    assert [(s.kind, s.bank, s.outcome, s.at) for s in payee.steps] == [
        (s.kind, s.bank, s.outcome, s.at) for s in expected
    ]
    assert all(not step.attributes for step in payee.steps if step.kind == "RECORDED")
    assert payee.reason_code == ""


def paid(client: Client, amount: int, key: str = "") -> Any:
    return client.pay(*PAYEE, amount, idempotency_key=key or str(uuid.uuid4()))


# -- committed ---------------------------------------------------------------------------------


def test_a_committed_payment_as_each_reader_sees_it(
    make_cluster: ClusterFactory, certs: Path, tmp_path: Path
) -> None:
    cluster = make_cluster()
    readers = Readers(cluster, certs)
    key = str(uuid.uuid4())
    payment = paid(readers.payer, 1234, key)
    again = paid(readers.payer, 1234, key)  # a replay of the key
    assert payment.status == COMMITTED and again.replayed
    settle(cluster)
    traces = readers.traces(payment.payment_id)
    payer = traces["payer"]
    assert isinstance(payer, PaymentTrace)
    print(render_text(payer))
    assert_story(
        payer,
        ("RECORDED", "", ""),
        ("VOTED", "alpha", "YES"),
        ("VOTED", "beta", "YES"),
        ("DECIDED", "", "COMMIT"),
        ("REPLAYED", "", "COMMITTED"),
        ("ACKNOWLEDGED", "alpha", "COMMIT"),
        ("ACKNOWLEDGED", "beta", "COMMIT"),
        ("FINISHED", "", ""),
    )
    assert_sane_times(payer)
    assert {step.replica for step in payer.steps} == {GATEWAY}
    recorded = payer.steps[0]
    assert recorded.attributes == {"request_id": payment.request_id, "certificate": "client-1"}
    assert steps_of(payer, "REPLAYED")[0].attributes == {"request_id": again.request_id}
    decided = steps_of(payer, "DECIDED")[0]
    assert decided.detail == "every vote yes" and decided.round
    assert {s.round for s in steps_of(payer, "VOTED")} == {decided.round}
    assert payer.status.value == "COMMITTED" and payer.payment_id == payment.payment_id

    assert_payee_view(payer, traces["payee"])
    assert_not_found(traces["stranger"], payment.payment_id)
    assert_not_found(readers.stranger.error("payment_trace", "pay_" + "0" * 32), "pay_" + "0" * 32)
    admin_view = traces["admin"]
    assert isinstance(admin_view, PaymentTrace)
    assert admin_view.steps == payer.steps and admin_view.reason_code == ""
    assert (
        readers.admin.error("admin_payment_trace", "pay_nobody").code == grpc.StatusCode.NOT_FOUND
    )

    # The command lines print the same story, as a timeline or as JSON.
    cli = TraceCli(cluster, certs, tmp_path)
    text = cli.ok("client", readers.payer.token, "trace", payment.payment_id)
    assert text.splitlines()[0] == f"payment {payment.payment_id} COMMITTED"
    assert "COMMIT (every vote yes)" in text and "finished: every bank acknowledged" in text
    document = json.loads(
        cli.ok("client", readers.payer.token, "trace", payment.payment_id, "--json")
    )
    assert [s["kind"] for s in document["steps"]] == [s.kind for s in payer.steps]
    assert document["request_id"]
    admin_text = cli.ok("admin", readers.admin.token, "trace", payment.payment_id)
    assert admin_text.splitlines()[0] == f"payment {payment.payment_id} COMMITTED"
    refused = cli.run(
        "client", readers.stranger.token, "trace", payment.payment_id, cert=STRANGER_CERT
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: NOT_FOUND (PAYMENT_NOT_FOUND)"), refused.stderr


class TraceCli:
    """``python -m client`` and ``python -m admin`` against CLUSTER, logged in with a token."""

    def __init__(self, cluster: Cluster, certs: Path, home: Path) -> None:
        self.cluster, self.certs, self.home = cluster, certs, home

    def run(
        self, tool: str, token: str, *args: str, cert: str = ""
    ) -> subprocess.CompletedProcess[str]:
        cert = cert or ("admin" if tool == "admin" else "client-1")
        home = self.home / f"{tool}-{cert}"
        session = "admin-session.json" if tool == "admin" else "session.json"
        home.mkdir(parents=True, exist_ok=True)
        (home / session).write_text(
            json.dumps({"token": token, "username": "someone", "role": tool, "expires_at": 0})
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")}
        env.update(
            MINIPAY_HOME=str(home),
            MINIPAY_GATEWAY=self.cluster.gateway_address,
            MINIPAY_CA=str(self.certs / SERVICES_CA),
            MINIPAY_CERT=str(self.certs / f"{cert}.pem"),
            MINIPAY_KEY=str(self.certs / f"{cert}-key.pem"),
        )
        result = subprocess.run(
            [sys.executable, "-m", tool, *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result

    def ok(self, tool: str, token: str, *args: str) -> str:
        result = self.run(tool, token, *args)
        assert result.returncode == 0, result.stderr
        return result.stdout
