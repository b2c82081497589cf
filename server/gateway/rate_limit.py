"""How fast one customer may move money: a token bucket per customer (Pay, Refund, PayBatch),
``MINIPAY_PAY_RATE`` payments a second with bursts of ``MINIPAY_PAY_BURST``, shared by the
replicas. A call costs one token per payment it asks for, and a split payment one per payee:
a batch its items, a split payment (Pay with shares, an atomic PayBatch) its payees.

Each replica enforces its share in memory, ``rate/N`` and ``burst/N`` with N the live replicas
(counted with each lease renewal, ``Replica.live``): no database row is touched per payment,
so the limit costs no write and no shared hot row. The bound this gives, summed over the
replicas, is ``rate·T + burst`` per customer over any interval T while the membership holds
still; a replica that joins makes the others' shares too large by ``rate/N`` for at most one
renewal (a third of the lease). A client that spreads its calls over the replicas (the
client library and the CLIs do) gets close to the whole rate; one pinned to one replica gets
its share, and the RetryInfo says when to come back.

A refusal is ``RESOURCE_EXHAUSTED`` with the reason ``RATE_LIMITED`` and a RetryInfo: when
the bucket will hold the call's cost again. Replays count: retry storms are what the limit is
for.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from minipay.errors import ErrorReason
from server.common.errors import Throttled

# Buckets kept; the least recently used goes first (a bucket untouched for burst/rate seconds
# is full again, so forgetting it loses nothing).
MAX_BUCKETS = 100_000
_EPSILON = 1e-9


@dataclass
class _Bucket:
    tokens: float
    updated: float  # the clock's reading when ``tokens`` was right


class RateLimiter:
    """RATE calls a second per key with bursts of BURST, over every replica: this replica's
    share is 1/``replicas()``. An infinite RATE limits nothing."""

    def __init__(
        self,
        rate: float,
        burst: float,
        replicas: Callable[[], int] = lambda: 1,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        if not rate > 0 or not burst >= 1:  # NaN fails both
            raise ValueError(f"a rate above 0 and a burst of at least 1, not {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._replicas = replicas
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def limits(self) -> bool:
        return not math.isinf(self.rate)

    def take(self, key: str, cost: int = 1) -> None:
        """Takes COST (a batch's items, a split payment's payees; capped at this replica's
        burst, so that any call can pass) from KEY's bucket, or raises Throttled
        (RATE_LIMITED) with when to retry."""
        if not self.limits:
            return
        share = max(1, self._replicas())
        rate, capacity = self.rate / share, max(self.burst / share, 1.0)
        cost_now = min(float(cost), capacity)
        moment = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, moment)
            if len(self._buckets) > self._max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(moment - bucket.updated, 0.0)
            bucket.tokens = min(capacity, bucket.tokens + elapsed * rate)
            bucket.updated = moment
        if bucket.tokens >= cost_now - _EPSILON:  # a clock's rounding is no reason to refuse
            bucket.tokens = max(bucket.tokens - cost_now, 0.0)
            return
        wait = (cost_now - bucket.tokens) / rate
        raise Throttled(
            f"too many payments: at most {self.rate:g} a second with bursts of {self.burst:g} "
            f"per customer; try again in {wait:.3f} s",
            ErrorReason.RATE_LIMITED,
            retry_after=wait,
        )
