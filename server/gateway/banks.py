"""The banks the gateway knows: one mutual-TLS channel and stubs per bank, with the request
id carried along in metadata."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protofiles.minipay.v1 import bank_pb2_grpc
from server.common.errors import NotFound
from server.common.logs import REQUEST_ID
from server.common.tls import CHANNEL_OPTIONS, TlsFiles, channel_credentials


class Bank:
    def __init__(self, name: str, address: str, credentials: grpc.ChannelCredentials) -> None:
        self.name = name
        self.address = address
        self.channel = grpc.aio.secure_channel(address, credentials, CHANNEL_OPTIONS)
        self.participant = bank_pb2_grpc.ParticipantStub(self.channel)
        self.accounts = bank_pb2_grpc.AccountsStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    async def serving(self, timeout: float = 1.0) -> bool:
        try:
            answer = await self._health.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


class BankDirectory:
    def __init__(self, addresses: dict[str, str], tls: TlsFiles) -> None:
        credentials = channel_credentials(tls)
        self._banks = {
            name: Bank(name, address, credentials) for name, address in addresses.items()
        }

    @property
    def names(self) -> list[str]:
        return sorted(self._banks)

    def all(self) -> Sequence[Bank]:
        return [self._banks[name] for name in self.names]

    def get(self, name: str) -> Bank:
        bank = self._banks.get(name)
        if bank is None:
            raise NotFound(f"unknown bank {name!r}; known banks: {', '.join(self.names)}")
        return bank

    async def close(self) -> None:
        for bank in self._banks.values():
            await bank.channel.close()


def call_metadata(request_ids: Sequence[str] = ()) -> tuple[tuple[str, str], ...]:
    """Metadata for a call to a bank: the request ids it serves (one, or a round's worth)."""
    ids = list(dict.fromkeys(request_ids or ([REQUEST_ID.get()] if REQUEST_ID.get() else [])))
    return (("x-request-id", ",".join(ids[:50])),) if ids else ()
