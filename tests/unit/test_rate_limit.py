"""The per-customer rate limit (``server.gateway.rate_limit``) on an injected clock: a burst,
then the rate; the RetryInfo's wait; each replica's share as the live replicas come and go;
a batch's cost; no limit at all; and the settings that start it (nonsense refused)."""

from __future__ import annotations

import math

import grpc
import pytest
from google.rpc import error_details_pb2

from minipay.errors import ErrorReason
from server.common.errors import ConfigError, Throttled
from server.common.settings import GatewaySettings, from_namespace
from server.gateway.rate_limit import RateLimiter
from server.interceptors.status import rich_status
from tests.unit.test_error_details import details


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refused(limiter: RateLimiter, key: str = "alice", cost: int = 1) -> float:
    """The wait the refusal asks for (it must refuse)."""
    with pytest.raises(Throttled) as caught:
        limiter.take(key, cost)
    assert caught.value.reason is ErrorReason.RATE_LIMITED
    return caught.value.retry_after


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=5, clock=clock)
    for _ in range(5):
        limiter.take("alice")
    assert refused(limiter) == pytest.approx(0.1)
    limiter.take("bob")  # each customer has a bucket of their own
    clock.now += 0.1
    limiter.take("alice")
    assert refused(limiter) == pytest.approx(0.1)
    clock.now += 10  # a long pause fills the bucket to the burst, never beyond
    for _ in range(5):
        limiter.take("alice")
    assert refused(limiter) == pytest.approx(0.1)


def test_over_a_second_at_most_rate_and_burst_pass() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=100, burst=20, clock=clock)
    passed = 0
    for _ in range(1000):  # one call a millisecond, for a second
        try:
            limiter.take("alice")
            passed += 1
        except Throttled:
            pass
        clock.now += 0.001
    assert 100 <= passed <= 100 + 20


def test_each_replica_takes_its_share_as_replicas_come_and_go() -> None:
    clock = Clock()
    live = [2]
    limiter = RateLimiter(rate=10, burst=4, replicas=lambda: live[0], clock=clock)
    limiter.take("alice")
    limiter.take("alice")
    assert refused(limiter) == pytest.approx(1 / 5)  # half the rate: 5 a second here
    live[0] = 1  # the other replica is gone: the whole rate and burst here
    clock.now += 1.0
    for _ in range(4):
        limiter.take("alice")
    assert refused(limiter) == pytest.approx(0.1)
    live[0] = 4  # more replicas: a full bucket shrinks to the new share at once
    clock.now += 10
    limiter.take("alice")
    assert refused(limiter) == pytest.approx(1 / 2.5)
    live[0] = 0  # never counted below this replica
    clock.now += 10
    for _ in range(4):
        limiter.take("alice")
    refused(limiter)


def test_a_share_of_the_burst_is_never_less_than_one_call() -> None:
    limiter = RateLimiter(rate=2, burst=2, replicas=lambda: 8, clock=Clock())
    limiter.take("alice")
    assert refused(limiter) == pytest.approx(4.0)  # the rate's share: 0.25 a second


def test_a_batch_costs_its_items_capped_at_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=100, burst=50, clock=clock)
    limiter.take("alice", cost=30)
    assert refused(limiter, cost=30) == pytest.approx(0.1)
    clock.now += 0.5
    limiter.take("alice", cost=1000)  # more than a burst: costs a whole one, and passes
    assert refused(limiter) == pytest.approx(0.01)


def test_an_infinite_rate_limits_nothing() -> None:
    limiter = RateLimiter(rate=math.inf, burst=1, clock=Clock())
    assert not limiter.limits
    for _ in range(10_000):
        limiter.take("alice", cost=1000)


def test_buckets_are_bounded_and_the_oldest_goes() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock, max_buckets=3)
    limiter.take("alice")
    for name in ("bob", "carol", "dave"):
        limiter.take(name)
    limiter.take("alice")  # forgotten: a full bucket again (what it would be soon anyway)
    refused(limiter, "dave")


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (math.nan, 1), (1, 0.5)])
def test_nonsense_limits_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("MINIPAY_PAY_RATE", "0", "must be above 0"),
        ("MINIPAY_PAY_RATE", "-5", "must be above 0"),
        ("MINIPAY_PAY_RATE", "nan", "must be above 0"),
        ("MINIPAY_PAY_RATE", "lots", "expected a number"),
        ("MINIPAY_PAY_BURST", "0", "must be at least 1"),
        ("MINIPAY_PAY_BURST", "many", "expected a number"),
    ],
)
def test_settings_that_make_no_sense_stop_the_start(variable: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_namespace(GatewaySettings, env={variable: value})
    assert words in str(caught.value) and variable in str(caught.value)


def test_the_default_limits_and_no_limit() -> None:
    defaults = GatewaySettings()
    assert (defaults.pay_rate, defaults.pay_burst) == (2000.0, 4000.0)
    unlimited = from_namespace(GatewaySettings, env={"MINIPAY_PAY_RATE": "inf"})
    assert math.isinf(unlimited.pay_rate)


def test_the_refusal_carries_a_retry_info_to_the_millisecond() -> None:
    limiter = RateLimiter(rate=1000, burst=1, clock=Clock())
    limiter.take("alice")
    with pytest.raises(Throttled) as caught:
        limiter.take("alice")
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, retry = details(status)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "RATE_LIMITED"
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (0, 1_000_000)
    # Just under a second, rounded up to the millisecond, is a whole second.
    slow = rich_status(Throttled("wait", ErrorReason.RATE_LIMITED, retry_after=0.9999))
    _, retry = details(slow)
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (1, 0)
