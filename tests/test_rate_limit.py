"""The per-customer rate limit on money movement, from outside: a raw call over the limit is
refused RESOURCE_EXHAUSTED / RATE_LIMITED with a RetryInfo and records nothing; a split
payment costs one token per payee; the client library (and so the CLI, which says so with
--verbose) waits and pays; two replicas share one limit within the stated bound
(PostgreSQL); nonsense in the settings stops the gateway at start-up with one line and exit
2."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devtools.cluster import GATEWAY, Cluster
from minipay.client.api import SplitShare
from minipay.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from server.common.settings import GatewaySettings, environment
from tests import command_lines
from tests.conftest import TEST_ENV, ClusterFactory
from tests.helpers import (
    COMMITTED,
    SEED_ACCOUNTS,
    aio_channel,
    customer,
    gateway_payments,
    postgres_available,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PAYEE = SEED_ACCOUNTS["carol"]
SECOND = "gateway-2"


def limited(rate: float, burst: float, **more: object) -> dict[str, str]:
    return environment(GatewaySettings, pay_rate=rate, pay_burst=burst, **more)


def request(key: str = "") -> gateway_pb2.PayRequest:
    return gateway_pb2.PayRequest(
        to=common_pb2.AccountRef(bank=PAYEE[0], account=PAYEE[1]),
        amount=common_pb2.Money(minor_units=1, currency="USD"),
        idempotency_key=key or str(uuid.uuid4()),
    )


async def hammer(
    cluster: Cluster,
    certs: Path,
    token: str,
    replicas: list[str],
    seconds: float,
    cert: str = "client-1",
    workers: int = 4,
) -> tuple[int, list[grpc.aio.AioRpcError]]:
    """Raw Pay calls (no library, no retry) as fast as WORKERS callers make them, each in turn
    to each of REPLICAS, for SECONDS: how many were accepted, and the refusals. Several
    callers, so that the calls asked for outrun the limit however slow one call is on a busy
    machine."""
    metadata = (("authorization", f"Bearer {token}"),)
    channels = [aio_channel(cluster, certs, name, cert) for name in replicas]
    stubs = [gateway_pb2_grpc.PaymentsStub(channel) for channel in channels]
    accepted, refusals = 0, []
    stop = time.monotonic() + seconds

    async def caller(turn: int) -> None:
        nonlocal accepted
        while time.monotonic() < stop:
            turn += 1
            try:
                await stubs[turn % len(stubs)].Pay(request(), metadata=metadata, timeout=10)
                accepted += 1
            except grpc.aio.AioRpcError as error:
                refusals.append(error)

    try:
        await asyncio.gather(*(caller(number) for number in range(workers)))
    finally:
        for channel in channels:
            await channel.close()
    return accepted, refusals


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    """The refusal's reason must be RATE_LIMITED; returns its RetryInfo's delay."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    reasons, delays = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append(info.reason)
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delays.append(retry.retry_delay.ToTimedelta().total_seconds())
    assert reasons == ["RATE_LIMITED"], reasons
    [delay] = delays
    return float(delay)


@pytest.mark.in_process
def test_over_the_limit_a_call_is_refused_with_when_to_come_back(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = make_cluster(env=limited(rate=2, burst=3))
    alice = customer(cluster, certs, "alice")
    accepted, refusals = asyncio.run(hammer(cluster, certs, alice.token, [GATEWAY], 1.0))
    assert 3 <= accepted <= 3 + 2 + 1, accepted  # the burst, and the rate for a second
    assert refusals
    delays = [retry_delay(error) for error in refusals]
    assert all(0 < delay <= 0.5 for delay in delays), delays  # one token at 2 a second
    assert len(gateway_payments(cluster)) == accepted, "a refused call records nothing"
    # Another customer has a bucket of their own.
    erin = customer(cluster, certs, "erin", cert="client-2")
    assert erin.pay(*PAYEE, 1).status == COMMITTED


@pytest.mark.in_process
def test_the_library_waits_and_pays_and_the_cli_says_so(
    make_cluster: ClusterFactory, certs: Path, tmp_path: Path
) -> None:
    rate = 0.5  # one payment every 2 s (the CLI's main() runs in this process: no start-up)
    cluster = make_cluster(env=limited(rate=rate, burst=1))
    alice = customer(cluster, certs, "alice")
    started = time.monotonic()
    paid = [alice.pay(*PAYEE, 1) for _ in range(2)]
    elapsed = time.monotonic() - started
    assert all(p.status == COMMITTED for p in paid)
    assert elapsed >= 1 / rate * 0.9, elapsed  # the second waited for its turn
    # The CLI right after: refused, it waits, pays, and --verbose says so.
    home = tmp_path / "home"
    home.mkdir()
    (home / "session.json").write_text(
        json.dumps({"token": alice.token, "username": "alice", "role": "customer"})
    )
    given = command_lines.variables(certs, cluster.gateway_address, home, "client-1")
    arguments = ["pay", "--to-bank", PAYEE[0], "--to-account", PAYEE[1], "--amount", "0.01"]
    result = command_lines.run_here("client", ["--verbose", *arguments], given)
    assert result.returncode == 0, result.stderr
    assert "COMMITTED" in result.stdout
    assert "rate limited: waiting" in result.stderr, result.stderr


@pytest.mark.in_process
def test_a_call_that_cannot_wait_within_its_timeout_is_refused(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    cluster = make_cluster(env=limited(rate=0.05, burst=1))  # one payment every 20 s
    alice = customer(cluster, certs, "alice")
    # 5 s for the whole call, its waits and retries included (its deadline).
    alice.config = type(alice.config)(**{**vars(alice.config), "timeout": 5.0, "deadline": 5.0})
    assert alice.pay(*PAYEE, 1).status == COMMITTED
    started = time.monotonic()
    error = alice.error("pay", *PAYEE, 1)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert error.retry_after is not None and 15 < error.retry_after <= 20
    assert time.monotonic() - started < 5, "it did not wait for what it could not get"


@pytest.mark.in_process
def test_a_split_payment_costs_one_token_per_payee(
    make_cluster: ClusterFactory, certs: Path
) -> None:
    """Pay with 3 shares takes 3 of a burst of 4: an atomic PayBatch of 2 payees is then
    refused (its 2 tokens are 100 s away at 0.01 a second), a plain payment still passes."""
    cluster = make_cluster(env=limited(rate=0.01, burst=4))
    alice = customer(cluster, certs, "alice")
    payees = [SEED_ACCOUNTS[name] for name in ("bob", "carol", "erin")]

    async def pay_three() -> gateway_pb2.PayResponse:
        async with aio_channel(cluster, certs, GATEWAY, "client-1") as channel:
            answer: gateway_pb2.PayResponse = await gateway_pb2_grpc.PaymentsStub(channel).Pay(
                gateway_pb2.PayRequest(
                    shares=[
                        gateway_pb2.Share(
                            payee=common_pb2.AccountRef(bank=bank, account=account),
                            amount=common_pb2.Money(minor_units=1, currency="USD"),
                        )
                        for bank, account in payees
                    ],
                    idempotency_key=str(uuid.uuid4()),
                ),
                metadata=(("authorization", f"Bearer {alice.token}"),),
                timeout=10,
            )
            return answer

    assert asyncio.run(pay_three()).payment.status == gateway_pb2.PAYMENT_STATUS_COMMITTED
    two = [SplitShare(*payee, 1) for payee in payees[:2]]
    error = alice.error("pay_split", two)  # cannot wait 100 s within its 30 s
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert error.retry_after is not None and 90 < error.retry_after <= 100, error.retry_after
    assert alice.pay(*PAYEE, 1).status == COMMITTED  # the last token
    assert len(gateway_payments(cluster)) == 2, "the refused split recorded nothing"


@pytest.mark.skipif(not postgres_available(), reason="replicas need PostgreSQL")
def test_two_replicas_share_one_limit(make_cluster: ClusterFactory, certs: Path) -> None:
    """Each replica takes half the rate and burst: a client going round both gets the
    whole limit, within rate·T + burst; one pinned to a replica gets that replica's half."""
    rate, burst, seconds = 10.0, 10.0, 3.0
    cluster = make_cluster("postgres", env=limited(rate, burst, lease=1.5), gateways=2)
    alice = customer(cluster, certs, "alice")
    time.sleep(1.0)  # each replica has renewed its lease, and counted both, since both joined
    both, refusals = asyncio.run(hammer(cluster, certs, alice.token, [GATEWAY, SECOND], seconds))
    assert refusals and all(retry_delay(error) > 0 for error in refusals)
    # Never more than rate·T + burst over the replicas; and near the rate, as the turns are even.
    assert rate * seconds * 0.8 <= both <= rate * seconds + burst + 1, both
    time.sleep(burst / rate + 0.5)  # the buckets fill again
    erin = customer(cluster, certs, "erin", cert="client-2")
    pinned, refusals = asyncio.run(
        hammer(cluster, certs, erin.token, [SECOND], seconds, "client-2")
    )
    assert refusals and all(retry_delay(error) > 0 for error in refusals)
    half = (rate * seconds + burst) / 2
    assert half * 0.7 <= pinned <= half + 1, pinned


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MINIPAY_PAY_RATE", "0"), ("MINIPAY_PAY_RATE", "nonsense"), ("MINIPAY_PAY_BURST", "-1")],
)
def test_nonsense_limits_stop_the_gateway_at_start(
    tmp_path: Path, certs: Path, variable: str, value: str
) -> None:
    idle = Cluster(tmp_path / "idle", env=dict(TEST_ENV), certs=certs)
    env = {**idle.environment(GATEWAY), variable: value}
    result = subprocess.run(
        idle.command(GATEWAY), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: gateway: "), result.stderr
    assert variable in lines[0] and value in lines[0].lower()
