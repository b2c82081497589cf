"""The bank server factory: migrate and seed the database, then serve the participant,
accounts and ledger services over mutual TLS, and keep asking about undecided yes votes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import grpc

from minipay import balancing
from minipay.service_names import GATEWAY_SERVER_NAME
from minipay.v1 import bank_pb2, bank_pb2_grpc
from server.bank import seed
from server.bank.coordinator_client import CoordinatorClient
from server.bank.recovery import DecisionAsker
from server.bank.servicers import AccountsService, LedgerService, ParticipantService
from server.common import seed as seed_file
from server.common.db import Database, open_database
from server.common.errors import ConfigError
from server.common.faults import Faults
from server.common.metrics import serve_metrics
from server.common.passwords import Passwords
from server.common.serving import build_server, mark_serving
from server.common.settings import BankSettings
from server.common.tls import Peers, TlsFiles, channel_credentials, channel_options
from server.interceptors.authentication import AuthInterceptor
from server.interceptors.handlers import Layer
from server.interceptors.logging import LoggingInterceptor

log = logging.getLogger(__name__)

SERVICES = [
    bank_pb2.DESCRIPTOR.services_by_name["Participant"].full_name,
    bank_pb2.DESCRIPTOR.services_by_name["Accounts"].full_name,
    bank_pb2.DESCRIPTOR.services_by_name["Ledger"].full_name,
]


@dataclass
class BankServer:
    server: grpc.aio.Server
    port: int
    database: Database
    coordinator: CoordinatorClient
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self, grace: float = 1.0) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.stop(grace)
        await self.coordinator.close()
        self.database.close()


def gateway_channel(addresses: str, tls: TlsFiles) -> grpc.aio.Channel:
    """One channel to every gateway replica: a question goes to whichever one is healthy."""
    try:
        target = balancing.channel_target(addresses)
    except balancing.AddressError as error:
        raise ConfigError(f"gateway address {addresses!r}: {error}") from None
    options = [*balancing.OPTIONS, *channel_options(GATEWAY_SERVER_NAME)]
    return grpc.aio.secure_channel(target, channel_credentials(tls), options)


def prepare_database(settings: BankSettings) -> Database:
    """Opens (and migrates) the database and loads this bank's seed customers; raises
    ConfigError for anything that stops a clean start."""
    customers = [
        row
        for row in seed_file.customers(settings.seed, settings.bank_addresses)
        if row.bank == settings.name
    ]
    database = open_database(settings.db_url, "bank")
    added = database.run_sync(lambda s: seed.load(s, customers, settings.bcrypt_rounds))
    log.info("database ready", extra={"fields": {"seeded_customers": added}})
    return database


async def run_server(settings: BankSettings) -> BankServer:
    address = settings.listen_address  # before the database: an unknown name stops the start
    database = await asyncio.to_thread(prepare_database, settings)
    tls = TlsFiles(settings.ca, settings.cert_path, settings.key_path)
    faults = Faults(settings.faults)

    def register(server: grpc.aio.Server) -> list[str]:
        bank_pb2_grpc.add_ParticipantServicer_to_server(
            ParticipantService(database, faults), server
        )
        bank_pb2_grpc.add_AccountsServicer_to_server(
            AccountsService(database, Passwords(settings.bcrypt_rounds)), server
        )
        bank_pb2_grpc.add_LedgerServicer_to_server(LedgerService(database), server)
        return SERVICES

    interceptors: list[Layer] = [
        LoggingInterceptor(settings.process_name),
        AuthInterceptor(Peers(settings.ca), (), None),
    ]
    server, port, health = build_server(address, tls, interceptors, register)
    serve_metrics(settings.metrics_port)
    await server.start()
    await mark_serving(health, SERVICES)
    coordinator = CoordinatorClient(gateway_channel(settings.gateway, tls))
    asker = DecisionAsker(database, coordinator, settings.txn_timeout)
    bank = BankServer(server, port, database, coordinator)
    bank.tasks.append(asyncio.create_task(asker.run_forever(settings.recovery_interval)))
    log.info("bank serving", extra={"fields": {"bank": settings.name, "port": port}})
    return bank
