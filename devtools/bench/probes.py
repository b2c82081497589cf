"""The probes after a preload: one customer at a time, how long the first page of history
takes for the payer with the most payments, and how long an idempotent replay of a preloaded
payment (same key, same parameters) takes; a replay that does not give back the preloaded
payment, committed, is a problem."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from devtools.bench.load import CUSTOMER_CERT, as_user, client_config, percentiles
from devtools.bench.preload import Preloaded, Replay
from devtools.cluster import Cluster
from devtools.customers import Customer
from minipay.client.api import GatewayClient, RetryPolicy
from minipay.client.results import Payment, PaymentStatus

HISTORY_PAGE = 20  # what ``python -m client history`` asks for


async def _timed(calls: int, call: Callable[[int], Awaitable[None]]) -> list[float]:
    """Seconds each of CALLS sequential calls took."""
    latencies = []
    for index in range(calls):
        started = time.perf_counter()
        await call(index)
        latencies.append(time.perf_counter() - started)
    return latencies


async def probe(
    cluster: Cluster,
    customers: Sequence[Customer],
    tokens: Sequence[str],
    preloaded: Preloaded,
    calls: int,
) -> dict[str, Any]:
    """CALLS history pages and up to CALLS replays; their latency percentiles (ms), and the
    replays that did not answer with their preloaded payment."""
    busiest = customers[preloaded.busiest]
    wrong: list[str] = []
    rows = 0
    async with GatewayClient(client_config(cluster, CUSTOMER_CERT), retry=RetryPolicy()) as client:
        payer = as_user(client, tokens[preloaded.busiest])

        async def first_page(_: int) -> None:
            nonlocal rows
            rows = len((await payer.history(page_size=HISTORY_PAGE)).payments)

        async def replay(index: int) -> None:
            sent = preloaded.replays[index]
            payee = customers[sent.payee]
            answer = await as_user(client, tokens[sent.payer]).pay(
                payee.bank, payee.account, sent.amount, idempotency_key=sent.key
            )
            if not _replayed(answer, sent):
                wrong.append(sent.payment_id)

        history = await _timed(calls, first_page)
        replays = await _timed(min(calls, len(preloaded.replays)), replay)
    return {
        "history_payer": busiest.username,
        "history_page_rows": rows,
        "history_ms": percentiles(history),
        "replays": len(replays),
        "replay_ms": percentiles(replays),
        "replays_wrong": len(wrong),
        "replays_wrong_ids": wrong[:5],
        "problems": [
            f"{len(wrong)} replay(s) did not answer with their preloaded payment: "
            + ", ".join(wrong[:5])
        ]
        if wrong
        else [],
    }


def _replayed(answer: Payment, sent: Replay) -> bool:
    return (
        answer.replayed
        and answer.payment_id == sent.payment_id
        and answer.status is PaymentStatus.COMMITTED
    )
