"""Logs and metrics: one record per call with the fields an operator needs, 2PC events, a
request id followed from the client through the gateway to both banks, no secret anywhere,
Prometheus counters that move; no request that can forge a record in the text format, and a
flood of refused calls that costs the log a bounded number of lines."""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from devtools.cluster import GATEWAY, Cluster
from devtools.scratch import free_port
from minipay.client.api import RetryPolicy
from minipay.v1 import gateway_pb2, gateway_pb2_grpc
from server.common.log_sampling import LOGGED_PER_INTERVAL
from tests.conftest import TEST_ENV, ClusterFactory
from tests.helpers import (
    COMMITTED,
    SEED_PASSWORDS,
    Client,
    channel,
    customer,
    running_cluster,
    server_env,
    wait_until,
)


def records(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    """Every whole record in the process's log (a line being written is not one yet)."""
    found = []
    for line in cluster.log_file(name).read_text().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def find(entries: list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
    return [e for e in entries if all(e.get(k) == v for k, v in fields.items())]


@pytest.fixture
def observed(make_cluster: ClusterFactory) -> Cluster:
    ports = {name: free_port() for name in ("alpha", "beta", "gamma", GATEWAY)}
    return make_cluster(metrics_ports=ports)


def test_one_payment_followed_through_the_logs(
    observed: Cluster, certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = observed
    alice = customer(cluster, certs, "alice")
    key = f"log-test-{uuid.uuid4()}"
    with caplog.at_level(logging.INFO, logger="minipay.client"):
        answer = alice.pay("beta", "B-2001", 4321, idempotency_key=key)
    client_calls = [
        r for r in caplog.records if getattr(r, "fields", {}).get("method", "").endswith("/Pay")
    ]
    assert client_calls, "the client's channel logged no call"
    request_id = client_calls[-1].fields["request_id"]  # type: ignore[attr-defined]
    assert request_id
    assert answer.request_id == request_id  # what the gateway answered with: the caller's own

    # Records are written by a thread of their own, a moment after the call; and the client
    # may hear the outcome before a bank has written its Commit.
    def logged(name: str, method: str) -> bool:
        return bool(find(records(cluster, name), method=method, request_id=request_id))

    wait_until(lambda: logged(GATEWAY, "/minipay.v1.Payments/Pay"), 10, "the Pay record")
    commit = "/minipay.v1.Participant/Commit"

    def committed(name: str) -> bool:
        # A decision goes without any caller's request id: its Commit names the payment.
        calls = find(records(cluster, name), method=commit)
        return any(answer.payment_id in e.get("payment_ids", []) for e in calls)

    for bank in ("alpha", "beta"):
        wait_until(functools.partial(committed, bank), 10, f"{bank}'s Commit")
    wait_until(
        lambda: any(
            answer.payment_id in e.get("payment_ids", [])
            for e in find(records(cluster, GATEWAY), event="decision_acknowledged")
        ),
        10,
        "the acknowledgements",
    )
    gateway = records(cluster, "gateway")
    [call] = find(gateway, event="call", method="/minipay.v1.Payments/Pay", request_id=request_id)
    assert call["code"] == "OK"
    assert call["payment_id"] == answer.payment_id
    assert call["idempotency_key"] == key
    assert call["amount_minor_units"] == 4321 and call["currency"] == "USD"
    assert call["username"] == "alice" and call["role"] == "customer"
    assert call["caller"] == "client-1"
    assert call["peer"].startswith("ipv4:127.0.0.1:")
    assert call["duration_ms"] >= 0 and call["component"] == "gateway"
    for step in ("prepare", "decision", "commit_sent", "decision_acknowledged"):
        assert any(
            e.get("event") == step
            and (
                e.get("payment_id") == answer.payment_id
                or answer.payment_id in e.get("payment_ids", [])
            )
            for e in gateway
        ), f"no {step} record"
    for bank in ("alpha", "beta"):
        bank_calls = find(records(cluster, bank), event="call", request_id=request_id)
        methods = {e["method"] for e in bank_calls}
        assert methods == {"/minipay.v1.Participant/Prepare"}, "no queued decision keeps it"
        assert all(e["caller"] == "gateway" and e["code"] == "OK" for e in bank_calls)


def test_errors_retries_and_no_secrets(observed: Cluster, certs: Path) -> None:
    cluster = observed
    alice = customer(cluster, certs, "alice")
    token = alice.token
    stranger = Client(cluster, certs)
    error = stranger.error("login", "alice", "wrong-password-123")
    assert (error.code.name, error.reason) == ("UNAUTHENTICATED", "LOGIN_FAILED")
    assert error.request_id
    # The status reaches the client a moment before the record is written: wait for it
    # before the kill below.
    deadline = time.monotonic() + 10
    while not find(records(cluster, "gateway"), code="UNAUTHENTICATED"):
        assert time.monotonic() < deadline, "the failed login was never logged"
        time.sleep(0.1)

    # A retried payment: the gateway is down for the first attempts.
    cluster.kill(GATEWAY)
    key = f"retry-{uuid.uuid4()}"
    result: dict[str, Any] = {}
    retrying = Client(cluster, certs, token=token, max_attempts=12)

    def pay() -> None:
        retrying_policy = RetryPolicy(max_attempts=20, initial_backoff=0.3, max_backoff=1.0)
        result["answer"] = retrying.run(lambda c: _pay_with(c, retrying_policy, key))

    thread = threading.Thread(target=pay)
    thread.start()
    time.sleep(1.0)
    cluster.start_process(GATEWAY)
    cluster.wait_ready(GATEWAY)
    thread.join(60)
    assert result["answer"].status == COMMITTED

    gateway = records(cluster, "gateway")
    [failed] = find(gateway, event="call", method="/minipay.v1.Auth/Login", code="UNAUTHENTICATED")
    assert failed["error"] and failed["username"] == "alice"
    retries = find(gateway, event="client_retry", idempotency_key=key)
    assert retries and retries[0]["attempt"] > 1

    secrets = [*SEED_PASSWORDS.values(), "wrong-password-123", token, token.split(".")[2]]
    for path in (cluster.data_dir / "logs").glob("*.log"):
        text = path.read_text()
        for secret in secrets:
            assert secret not in text, f"a secret is in {path.name}"
        assert "$2b$" not in text  # no bcrypt hash


async def _pay_with(client: Any, policy: RetryPolicy, key: str) -> Any:
    client.retry = policy
    return await client.pay("beta", "B-2001", 111, idempotency_key=key)


def test_metrics_move(observed: Cluster, certs: Path) -> None:
    cluster = observed
    alice = customer(cluster, certs, "alice")
    alice.pay("beta", "B-2001", 100)
    alice.pay("beta", "B-2001", 10**9)  # aborted: insufficient funds

    def scrape(name: str) -> str:
        url = f"http://127.0.0.1:{cluster.metrics_ports[name]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    gateway = scrape(GATEWAY)
    assert 'minipay_rpc_calls_total{code="OK",method="/minipay.v1.Payments/Pay"}' in gateway
    assert 'minipay_payments_total{outcome="COMMITTED",reason="none"} 1.0' in gateway
    assert 'minipay_payments_total{outcome="ABORTED",reason="INSUFFICIENT_FUNDS"} 1.0' in gateway
    assert 'minipay_2pc_phase_seconds_count{phase="prepare"}' in gateway
    assert "minipay_payments_in_doubt" in gateway
    bank = scrape("alpha")
    assert 'method="/minipay.v1.Participant/Prepare"' in bank


# -- the text format, and floods ----------------------------------------------------------------


# What str.splitlines splits on, as Python's documentation lists it.
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


@pytest.fixture(scope="module")
def text_logs(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[Cluster]:
    env = {**TEST_ENV, **server_env(log_format="text")}
    with running_cluster(tmp_path_factory.mktemp("text-logs"), certs, env) as cluster:
        yield cluster


def test_no_line_break_in_a_request_starts_a_text_log_line(text_logs: Cluster, certs: Path) -> None:
    """Every character str.splitlines splits on (NEL, U+2028 and U+2029 too), in a username
    a reader of the log would otherwise take for the start of a record of its own."""
    auth = gateway_pb2_grpc.AuthStub(channel(text_logs, certs, GATEWAY, "client-1"))
    for number, line_break in enumerate(LINE_BREAKS):
        forged = f"mallory{line_break}FORGED-{number} INFO gateway call code=OK username=admin"
        with pytest.raises(grpc.RpcError) as refused:
            auth.Login(gateway_pb2.LoginRequest(username=forged, password="p" * 10), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    log = text_logs.log_file(GATEWAY)
    last = f"FORGED-{len(LINE_BREAKS) - 1}"
    wait_until(lambda: last in log.read_text(), 10, "the refused logins' records")
    lines = log.read_text().splitlines()
    for number in range(len(LINE_BREAKS)):
        [line] = [line for line in lines if f"FORGED-{number}" in line]
        assert "mallory" in line and line.index("mallory") < line.index(f"FORGED-{number}")
    assert not [line for line in lines if line.startswith("FORGED")]


def test_a_flood_of_refused_calls_is_logged_in_part_and_counted_in_full(
    text_logs: Cluster, certs: Path
) -> None:
    """One peer's 300 refused calls: the first few are logged one by one, each once (a
    refusal is no warning, so standard error does not copy it), then one record counts the
    rest; another peer's refusal is still logged."""
    flood, method = 300, "/minipay.v1.Payments/GetPayment"
    payments = gateway_pb2_grpc.PaymentsStub(channel(text_logs, certs, GATEWAY, "client-2"))
    for _ in range(flood):
        with pytest.raises(grpc.RpcError):
            payments.GetPayment(gateway_pb2.GetPaymentRequest(payment_id="x\x00"), timeout=10)
    Client(text_logs, certs, "client-3").error("login", "nobody", "password-1")
    log = text_logs.log_file(GATEWAY)

    def summary() -> list[str]:
        return [line for line in log.read_text().splitlines() if "refusals_summarized" in line]

    wait_until(summary, 15, "the summary of the flood")
    [counted] = summary()
    assert "client-2" in counted and f"count={flood - LOGGED_PER_INTERVAL}" in counted
    assert f"{method} INVALID_ARGUMENT" in counted
    lines = log.read_text().splitlines()
    one_by_one = [
        line for line in lines if f"method={method}" in line and "caller=client-2" in line
    ]
    assert len(one_by_one) == LOGGED_PER_INTERVAL
    assert all(" INFO " in line for line in one_by_one)
    assert [
        line for line in lines if "/minipay.v1.Auth/Login" in line and "caller=client-3" in line
    ]
    standard_error = text_logs.log_path(GATEWAY).read_text()
    assert method not in standard_error, "a refusal copied to standard error"
