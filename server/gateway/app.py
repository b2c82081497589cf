"""The gateway server factory: migrate the database, load admins from the seed, wire the
identity service, the coordinator and the servicers, serve over mutual TLS, and recover."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import grpc

from minipay.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)
from server.common import seed as seed_file
from server.common.db import Database, is_sqlite, open_database
from server.common.faults import Faults
from server.common.metrics import serve_metrics
from server.common.passwords import Passwords, PasswordWork
from server.common.serving import HealthServicer, build_server, drain, mark_serving
from server.common.settings import GatewaySettings
from server.common.tls import Peers, TlsFiles
from server.gateway import events, users
from server.gateway.audit import RefusedAttempts
from server.gateway.banks import BankDirectory
from server.gateway.coordinator import Coordinator
from server.gateway.event_feed import EventFeed
from server.gateway.journal import Journal
from server.gateway.rate_limit import RateLimiter
from server.gateway.recovery import Recovery
from server.gateway.replicas import Replica
from server.gateway.revocations import Revocations
from server.gateway.servicers import (
    AdminService,
    AuthService,
    CoordinatorService,
    EventsService,
    PaymentsService,
)
from server.gateway.throttle import Limit, LoginThrottle
from server.gateway.token_keys import KeyRing
from server.gateway.tokens import TokenService
from server.gateway.trace import Trace
from server.interceptors.authentication import AuthInterceptor
from server.interceptors.handlers import Layer
from server.interceptors.logging import LoggingInterceptor, RequestLimits

log = logging.getLogger(__name__)

# Customers' and admins' requests are small: a few identifiers, an amount, a password. A
# batch of payments is the one exception: 1000 items of at most ~380 bytes each (bank 63,
# account 34, key 255, the amount, and their framing) come to ~371 KiB.
MAX_REQUEST_BYTES = 64 * 1024
MAX_BATCH_REQUEST_BYTES = 512 * 1024
REQUEST_LIMITS = RequestLimits(
    MAX_REQUEST_BYTES, {"/minipay.v1.Payments/PayBatch": MAX_BATCH_REQUEST_BYTES}
)
SERVICES = [
    gateway_pb2.DESCRIPTOR.services_by_name["Auth"].full_name,
    gateway_pb2.DESCRIPTOR.services_by_name["Payments"].full_name,
    gateway_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["Events"].full_name,
]


@dataclass
class GatewayServer:
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    database: Database
    banks: BankDirectory
    coordinator: Coordinator
    replica: Replica
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self, grace: float = 5.0) -> None:
        """Reports NOT_SERVING (clients move to the other replicas), finishes the calls under
        way, then gives up the lease so that survivors need not wait for it."""
        await drain(self.server, self.health, SERVICES, grace)
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.coordinator.stop()
        with contextlib.suppress(Exception):
            await self.replica.leave()
        await self.banks.close()
        self.database.close()


def prepare_database(settings: GatewaySettings) -> Database:
    """Opens (and migrates) the database, adds the seed's admins and takes its customers'
    names."""
    admins = seed_file.admins(settings.seed)
    customers = seed_file.customers(settings.seed, settings.bank_addresses)
    database = open_database(settings.db_url, "gateway")
    database.run_sync(lambda s: users.load_seed(s, admins, customers, settings.bcrypt_rounds))
    return database


async def run_server(settings: GatewaySettings) -> GatewayServer:
    database = await asyncio.to_thread(prepare_database, settings)
    replica = Replica(database, settings.name, settings.lease)
    # On SQLite this process holds the database alone (its lock): a lease left by an earlier
    # run of this replica is that of a dead process.
    await replica.join(alone=is_sqlite(settings.db_url))
    tls = TlsFiles(settings.ca, settings.cert_path, settings.key_path, settings.client_ca)
    revocations = Revocations(database)
    await revocations.refresh()
    keys = KeyRing(database, settings.name, settings.token_key_path)
    await keys.start()
    tokens = TokenService(keys, settings.token_ttl, revocations)
    banks = BankDirectory(settings.bank_addresses, tls)
    coordinator = Coordinator(
        database,
        banks,
        replica,
        banks.names,
        settings.txn_timeout,
        settings.batch_max,
        Faults(settings.faults),
        Trace(settings.name, enabled=settings.trace),
        journaled=settings.journal,
    )
    feed = EventFeed(lambda: database.statements(events.last_sequence))
    limiter = RateLimiter(settings.pay_rate, settings.pay_burst, lambda: replica.live)
    throttle = LoginThrottle(database)
    limits = users.ThrottleLimits(
        per_username=Limit(
            settings.login_max_failures, settings.login_window, settings.login_cooldown
        ),
        per_certificate=Limit(
            settings.login_client_max_failures, settings.login_window, settings.login_cooldown
        ),
    )
    identities = users.UserService(
        database,
        banks,
        tokens,
        revocations,
        throttle,
        limits,
        Passwords(settings.bcrypt_rounds),
        PasswordWork(),
    )

    def register(server: grpc.aio.Server) -> list[str]:
        gateway_pb2_grpc.add_AuthServicer_to_server(AuthService(identities), server)
        gateway_pb2_grpc.add_PaymentsServicer_to_server(
            PaymentsService(database, banks, coordinator, limiter), server
        )
        gateway_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorService(coordinator), server)
        admin_pb2_grpc.add_AdminServicer_to_server(
            AdminService(
                banks, identities, database, coordinator, limiter, Journal(database), settings.name
            ),
            server,
        )
        events_pb2_grpc.add_EventsServicer_to_server(EventsService(database, feed), server)
        return SERVICES

    interceptors: list[Layer] = [
        LoggingInterceptor(
            settings.process_name, answer_request_id=True, request_limits=REQUEST_LIMITS
        ),
        AuthInterceptor(
            Peers(settings.ca),
            banks.names,
            tokens,
            on_refused=RefusedAttempts(Journal(database), settings.name),
        ),
    ]
    server, port, health = build_server(
        settings.listen, tls, interceptors, register, max_request_bytes=REQUEST_LIMITS.largest
    )
    serve_metrics(settings.metrics_port)

    async def prune_events() -> None:
        older_than = time.time() - settings.event_retention
        await database.statements(lambda c: events.prune(c, older_than))

    recovery = Recovery(
        database,
        coordinator,
        settings.idempotency_ttl,
        chores=[
            revocations.forget_expired,
            lambda: throttle.forget_expired(settings.login_window),
            lambda: keys.retire_unused(settings.token_ttl),
            lambda: keys.forget_retired(settings.token_ttl),
            prune_events,
        ],
    )
    await recovery.run_once()
    await server.start()
    await mark_serving(health, SERVICES)
    gateway = GatewayServer(server, port, health, database, banks, coordinator, replica)
    gateway.tasks += [
        asyncio.create_task(replica.run_forever()),
        asyncio.create_task(recovery.run_forever(settings.recovery_interval)),
        asyncio.create_task(revocations.run_forever()),
        asyncio.create_task(keys.run_forever()),
    ]
    log.info(
        "gateway serving",
        extra={"fields": {"replica": settings.name, "port": port, "banks": banks.names}},
    )
    return gateway
