"""The echo baseline: the most unary RPCs per second Python's grpc.aio does on this machine,
over the same mutual TLS as the product, so that the benchmark's figures can be read as
ratios that hold from one machine to another.

A generic unary handler that returns its request, served by a separate process (``python -m
devtools.bench.echo --serve PORT``) with the gateway's development certificate and requiring
a client certificate from the clients CA; this process is the client, with ``client-1``'s
certificate, trusting the services CA and asking for the gateway's name, exactly like the
benchmark's load. It runs for a few seconds at the run's concurrency, its workers sharing
channels as the load's do, and reports RPC/s and the CPU both sides spent per call.

``python -m devtools.bench.echo`` measures it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from certificate.ca import CLIENTS_CA, SERVICES_CA
from devtools.bench.processes import process_cpu
from devtools.cluster import GATEWAY, ROOT
from devtools.scratch import LOOPBACK, free_port
from minipay.service_names import GATEWAY_SERVER_NAME
from server.common.settings import DEV_CERTS

SERVICE = "minipay.bench.Echo"
METHOD = f"/{SERVICE}/Echo"
CLIENT_CERT = "client-1"
PAYLOAD = b"x" * 64  # about the size of a PayRequest
READY_TIMEOUT = 20.0


@dataclass(frozen=True)
class EchoResult:
    concurrency: int
    channels: int
    seconds: float  # measured wall time
    calls: int
    rpc_per_s: float
    server_cpu_ms_per_rpc: float
    client_cpu_ms_per_rpc: float


# -- the server (its own process) ------------------------------------------------------------


async def _echo(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _serve(port: int, certs: Path) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [((certs / f"{GATEWAY}-key.pem").read_bytes(), (certs / f"{GATEWAY}.pem").read_bytes())],
        root_certificates=(certs / CLIENTS_CA).read_bytes(),
        require_client_auth=True,
    )
    server.add_secure_port(f"{LOOPBACK}:{port}", credentials)
    await server.start()
    await server.wait_for_termination()


def serve(port: int, certs: Path = DEV_CERTS) -> None:
    """Serves the echo on loopback PORT until killed."""
    asyncio.run(_serve(port, certs))


# -- the client (this process) ---------------------------------------------------------------


def _channel(port: int, certs: Path) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / SERVICES_CA).read_bytes(),
        private_key=(certs / f"{CLIENT_CERT}-key.pem").read_bytes(),
        certificate_chain=(certs / f"{CLIENT_CERT}.pem").read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", GATEWAY_SERVER_NAME)]
    return grpc.aio.secure_channel(f"{LOOPBACK}:{port}", credentials, options)


async def _drive(
    port: int, certs: Path, seconds: float, concurrency: int, per_channel: int
) -> tuple[int, float]:
    """Calls and wall time of ``concurrency`` workers calling for ``seconds``."""
    channels = [_channel(port, certs) for _ in range(math.ceil(concurrency / per_channel))]
    try:
        calls = [channel.unary_unary(METHOD) for channel in channels]
        for call in calls:  # connected (and the server up) before the clock starts
            await call(PAYLOAD, wait_for_ready=True, timeout=READY_TIMEOUT)
        done = 0
        end = time.monotonic() + seconds

        async def worker(call: grpc.aio.UnaryUnaryMultiCallable) -> None:
            nonlocal done
            while time.monotonic() < end:
                await call(PAYLOAD)
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(calls[i // per_channel]) for i in range(concurrency)))
        return done, time.monotonic() - started
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


def measure(
    seconds: float = 3.0, concurrency: int = 32, per_channel: int = 8, certs: Path = DEV_CERTS
) -> EchoResult:
    """Starts the echo server process, drives it from this process, stops it."""
    port = free_port()
    command = [sys.executable, "-m", "devtools.bench.echo", "--serve", str(port)]
    server = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        server_cpu = process_cpu(server.pid)
        client_cpu = time.process_time()
        try:
            calls, elapsed = asyncio.run(_drive(port, certs, seconds, concurrency, per_channel))
        except grpc.aio.AioRpcError as error:
            alive = server.poll() is None
            detail = "" if alive else f" (it exited: {_tail(server)})"
            raise RuntimeError(f"echo baseline failed: {error.details()}{detail}") from None
        server_cpu = process_cpu(server.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
    finally:
        server.kill()
        server.wait()
        if server.stderr is not None:
            server.stderr.close()
    per_rpc = 1000 / calls if calls else 0.0
    return EchoResult(
        concurrency=concurrency,
        channels=math.ceil(concurrency / per_channel),
        seconds=round(elapsed, 3),
        calls=calls,
        rpc_per_s=round(calls / elapsed, 1) if elapsed else 0.0,
        server_cpu_ms_per_rpc=round(server_cpu * per_rpc, 3),
        client_cpu_ms_per_rpc=round(client_cpu * per_rpc, 3),
    )


def _tail(process: subprocess.Popen[str]) -> str:
    if process.stderr is None:
        return "no output"
    lines = process.stderr.read().strip().splitlines()
    return lines[-1] if lines else f"exit code {process.returncode}"


def describe(echo: EchoResult) -> str:
    return (
        f"echo {echo.rpc_per_s:.1f} RPC/s at {echo.concurrency} clients on {echo.channels} "
        f"channel(s), {echo.seconds:.1f} s; cpu ms/rpc server {echo.server_cpu_ms_per_rpc:.3f} "
        f"client {echo.client_cpu_ms_per_rpc:.3f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench.echo",
        description="Measure unary gRPC echo RPCs per second over mutual TLS (the dev "
        "certificates), server and client in two processes: the benchmark's baseline.",
    )
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="how long to call (default: %(default)s)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="concurrent callers (default: %(default)s)"
    )
    parser.add_argument(
        "--per-channel",
        type=int,
        default=8,
        help="callers sharing one channel, as in the benchmark (default: %(default)s)",
    )
    parser.add_argument(
        "--serve",
        type=int,
        metavar="PORT",
        default=None,
        help="only serve the echo on 127.0.0.1:PORT until killed (what the measurement "
        "starts in its own process)",
    )
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return 0
    print(describe(measure(args.seconds, args.concurrency, args.per_channel)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
