"""Prometheus metrics for every server: calls and latency by method and status, payments by
outcome and reason, payments in doubt, 2PC phase latencies and client retries."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from server.common.errors import ConfigError

CALLS = Counter("minipay_rpc_calls", "gRPC calls served", ["method", "code"])
CALL_SECONDS = Histogram(
    "minipay_rpc_duration_seconds",
    "time to serve a gRPC call",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter("minipay_client_retries", "calls that arrived as a client's retry", ["method"])
PAYMENTS = Counter("minipay_payments", "payments decided", ["outcome", "reason"])
PHASE_SECONDS = Histogram(
    "minipay_2pc_phase_seconds",
    "time spent in each 2PC phase",
    ["phase"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
IN_DOUBT = Gauge(
    "minipay_payments_in_doubt",
    "payments begun and not yet finished (gateway) or voted yes and undecided (bank)",
)


def serve_metrics(port: int) -> None:
    """Serves /metrics on 127.0.0.1:PORT in a background thread (0: off)."""
    if not port:
        return
    try:
        start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on port {port}: {exc.strerror or exc}") from None
