"""The gateway server factory: migrate the database, load admins from the seed, wire the
identity service, the coordinator and the servicers, serve over mutual TLS, and recover."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml

from protofiles.minipay.v1 import admin_pb2, admin_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from server.common import db as dbmod
from server.common.errors import ConfigError
from server.common.faults import Faults
from server.common.metrics import serve_metrics
from server.common.serving import build_server, mark_serving
from server.common.settings import GatewaySettings
from server.common.tls import TlsFiles
from server.gateway import identity
from server.gateway.banks import BankDirectory
from server.gateway.coordinator import Coordinator
from server.gateway.recovery import Recovery
from server.gateway.services import AdminService, AuthService, CoordinatorService, PaymentsService
from server.gateway.throttle import LoginThrottle
from server.gateway.tokens import TokenService, load_or_create_key
from server.interceptors.authentication import AuthInterceptor
from server.interceptors.logging import LoggingInterceptor

log = logging.getLogger(__name__)

SERVICES = [
    gateway_pb2.DESCRIPTOR.services_by_name["Auth"].full_name,
    gateway_pb2.DESCRIPTOR.services_by_name["Payments"].full_name,
    gateway_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
]


@dataclass
class GatewayServer:
    server: grpc.aio.Server
    port: int
    database: dbmod.Database
    banks: BankDirectory
    coordinator: Coordinator
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self, grace: float = 1.0) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.stop(grace)
        await self.coordinator.stop()
        await self.banks.close()
        self.database.close()


def seed_admins(path: Path) -> list[tuple[str, str]]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read seed file {path}: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"seed file {path}: expected a mapping at the top")
    admins = []
    for index, row in enumerate(data.get("admins") or [], start=1):
        if not isinstance(row, dict) or not row.get("username") or not row.get("password"):
            raise ConfigError(f"seed file {path}, admin #{index}: needs username and password")
        admins.append((str(row["username"]), str(row["password"])))
    return admins


def prepare_database(settings: GatewaySettings) -> dbmod.Database:
    database = dbmod.Database(settings.db_url)
    dbmod.check_connection(database.engine)
    dbmod.upgrade(settings.db_url, "gateway")
    admins = seed_admins(settings.seed)
    database.run_sync(
        lambda s: [
            identity.ensure_admin(s, name, password, settings.bcrypt_rounds)
            for name, password in admins
        ]
    )
    return database


async def run_server(settings: GatewaySettings) -> GatewayServer:
    database = await asyncio.to_thread(prepare_database, settings)
    tls = TlsFiles(settings.ca, settings.cert, settings.key)
    tokens = TokenService(load_or_create_key(settings.token_key_path), settings.token_ttl)
    banks = BankDirectory(settings.bank_addresses, tls)
    faults = Faults(settings.faults)
    coordinator = Coordinator(database, banks, settings.txn_timeout, settings.batch_max, faults)
    throttle = LoginThrottle(
        settings.login_max_failures, settings.login_window, settings.login_cooldown
    )
    identities = identity.IdentityService(database, banks, tokens, throttle)
    await identities.load_revoked()

    def register(server: grpc.aio.Server) -> list[str]:
        gateway_pb2_grpc.add_AuthServicer_to_server(AuthService(identities), server)
        gateway_pb2_grpc.add_PaymentsServicer_to_server(
            PaymentsService(database, banks, coordinator), server
        )
        gateway_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorService(coordinator), server)
        admin_pb2_grpc.add_AdminServicer_to_server(
            AdminService(database, banks, settings.bcrypt_rounds), server
        )
        return SERVICES

    interceptors = [LoggingInterceptor("gateway"), AuthInterceptor(banks.names, tokens)]
    server, port, health = build_server(settings.listen, tls, interceptors, register)
    serve_metrics(settings.metrics_port)
    await server.start()
    await mark_serving(health, SERVICES)
    recovery = Recovery(database, coordinator, tokens, settings.idempotency_ttl)
    await recovery.run_once(at_start=True)
    gateway = GatewayServer(server, port, database, banks, coordinator)
    gateway.tasks.append(asyncio.create_task(recovery.run_forever(settings.recovery_interval)))
    log.info("gateway serving", extra={"fields": {"port": port, "banks": banks.names}})
    return gateway
