"""Building and running a grpc.aio server the same way for every component: mutual TLS,
interceptors, the standard health and reflection services, and clean shutdown on signals."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as HealthServicer
from grpc_reflection.v1alpha import reflection

from server.common.errors import ConfigError
from server.common.tls import TlsFiles, server_credentials
from server.interceptors.handlers import Layer, Layers


def build_server(
    address: str,
    tls: TlsFiles,
    layers: Sequence[Layer],
    register: Callable[[grpc.aio.Server], Sequence[str]],
    max_request_bytes: int = 4 * 1024 * 1024,
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """Adds the services ``register`` names plus health and reflection, every call passing
    through LAYERS (the first outermost), in one interceptor; binds the port."""
    options = [
        # SO_REUSEPORT is on by default in gRPC: a second server on a taken port would bind
        # beside the first one and share its traffic. Off, the second one is refused.
        ("grpc.so_reuseport", 0),
        # A request larger than any real one is refused before it is read into memory.
        ("grpc.max_receive_message_length", max_request_bytes),
    ]
    server = grpc.aio.server(interceptors=[Layers(layers)], options=options)
    service_names = list(register(server))
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    credentials = server_credentials(tls)
    try:
        port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if not port:
        raise ConfigError(f"cannot listen on {address}: the port is in use or the address is wrong")
    return server, port, health_servicer


# How long a server stopping says NOT_SERVING before it stops taking calls: clients that
# watch its health (round robin over replicas) move to the others meanwhile.
DRAIN_NOTICE = 0.5


async def mark_serving(health_servicer: HealthServicer, names: Sequence[str]) -> None:
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


async def drain(
    server: grpc.aio.Server, health_servicer: HealthServicer, names: Sequence[str], grace: float
) -> None:
    """Reports NOT_SERVING, lets clients notice, then stops: calls under way have GRACE
    seconds to finish; new ones are refused."""
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await asyncio.sleep(DRAIN_NOTICE)
    await server.stop(grace)


def keep_files_private() -> None:
    """Everything this process creates (databases, WAL files, logs, keys, folders) is readable
    by its owner only."""
    os.umask(0o077)


async def wait_for_signal() -> None:
    """Returns on SIGINT or SIGTERM, so the caller can stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
