"""The client library: a mutual-TLS channel to the gateway, the saved login session, and
calls that retry safely (same idempotency key and request id, exponential backoff with
jitter) on UNAVAILABLE and DEADLINE_EXCEEDED."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from protofiles.minipay.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
)
from server.common.logs import describe_request

log = logging.getLogger("minipay.client")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEV_CERTS = REPO_ROOT / "certificate" / "dev"
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
R = TypeVar("R")


@dataclass(frozen=True)
class ClientConfig:
    """Where the gateway is and which certificate to present; flags override these."""

    gateway: str = "127.0.0.1:50051"
    ca: Path = DEV_CERTS / "ca.pem"
    cert: Path = DEV_CERTS / "client-1.pem"
    key: Path = DEV_CERTS / "client-1-key.pem"
    home: Path = Path.home() / ".minipay"
    timeout: float = 30.0
    max_attempts: int = 5

    @classmethod
    def from_env(cls, default_cert: str = "client-1", **overrides: Any) -> ClientConfig:
        env = os.environ
        values: dict[str, Any] = {
            "gateway": env.get("MINIPAY_GATEWAY", cls.gateway),
            "ca": Path(env.get("MINIPAY_CA", str(DEV_CERTS / "ca.pem"))),
            "cert": Path(env.get("MINIPAY_CERT", str(DEV_CERTS / f"{default_cert}.pem"))),
            "key": Path(env.get("MINIPAY_KEY", str(DEV_CERTS / f"{default_cert}-key.pem"))),
            "home": Path(env.get("MINIPAY_HOME", str(Path.home() / ".minipay"))),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class ClientError(Exception):
    """A problem on this side (missing certificate, no session): one line for the user."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


class CallLogger(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """One record per call attempt: method, request id, attempt, status and duration."""

    def __init__(self, target: str) -> None:
        self._target = target

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        metadata = dict(details.metadata or ())
        fields: dict[str, Any] = {
            "method": details.method.decode()
            if isinstance(details.method, bytes)
            else details.method,
            "peer": self._target,
            "request_id": metadata.get("x-request-id", ""),
            "attempt": int(metadata.get("x-attempt", 1)),
            **describe_request(request),
        }
        started = time.perf_counter()
        call = await continuation(details, request)
        try:
            await call
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
            fields["error"] = error.details()
        fields.update(code=code.name, duration_ms=round((time.perf_counter() - started) * 1000, 3))
        log.log(
            logging.INFO if code == grpc.StatusCode.OK else logging.WARNING,
            "call",
            extra={"fields": fields},
        )
        return call


def open_channel(config: ClientConfig) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(config.ca, "CA certificate"),
        private_key=_read(config.key, "private key"),
        certificate_chain=_read(config.cert, "certificate"),
    )
    # Reconnect quickly, so a retry after a gateway restart finds it as soon as it is back.
    options = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]
    return grpc.aio.secure_channel(
        config.gateway, credentials, options, interceptors=[CallLogger(config.gateway)]
    )


@dataclass
class SavedSession:
    """The login token, kept in a file only its owner can read."""

    path: Path

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            raise ClientError(f"session file {self.path} is unreadable; log in again") from None
        return data if isinstance(data, dict) else {}

    def save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(temporary, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class RetryPolicy:
    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 3.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)

    def backoff(self, attempt: int) -> float:
        # "Full jitter": spreads retries of many clients over the whole window.
        return random.uniform(0, min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1)))


class GatewayClient:
    """Every call the client and admin command lines make, over one channel."""

    def __init__(
        self, config: ClientConfig, token: str = "", retry: RetryPolicy | None = None
    ) -> None:
        self.config = config
        self.token = token
        self.retry = retry or RetryPolicy(max_attempts=config.max_attempts)
        self._channel = open_channel(config)
        self.auth = gateway_pb2_grpc.AuthStub(self._channel)
        self.payments = gateway_pb2_grpc.PaymentsStub(self._channel)
        self.admin = admin_pb2_grpc.AdminStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def call(
        self, method: Callable[..., Awaitable[R]], request: Any, idempotency_key: str = ""
    ) -> R:
        """Calls with retries; every attempt carries the same request id and its number."""
        request_id = uuid.uuid4().hex
        attempt = 1
        while True:
            metadata = [("x-request-id", request_id), ("x-attempt", str(attempt))]
            if self.token:
                metadata.append(("authorization", f"Bearer {self.token}"))
            try:
                return await method(request, metadata=metadata, timeout=self.config.timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE or attempt >= self.retry.max_attempts:
                    raise
                delay = self.retry.backoff(attempt)
                log.warning(
                    "retrying",
                    extra={
                        "fields": {
                            "event": "client_retry",
                            "request_id": request_id,
                            "idempotency_key": idempotency_key,
                            "attempt": attempt + 1,
                            "max_attempts": self.retry.max_attempts,
                            "status": error.code().name,
                            "delay_s": round(delay, 3),
                        }
                    },
                )
                await self.retry.sleep(delay)
                attempt += 1

    # -- customer calls --------------------------------------------------------------------

    async def register(
        self, username: str, password: str, bank: str, account: str
    ) -> gateway_pb2.RegisterResponse:
        return await self.call(
            self.auth.Register,
            gateway_pb2.RegisterRequest(
                username=username, password=password, bank=bank, account=account
            ),
        )

    async def login(self, username: str, password: str) -> gateway_pb2.LoginResponse:
        answer: gateway_pb2.LoginResponse = await self.call(
            self.auth.Login, gateway_pb2.LoginRequest(username=username, password=password)
        )
        self.token = answer.token
        return answer

    async def logout(self) -> None:
        await self.call(self.auth.Logout, gateway_pb2.LogoutRequest())

    async def balance(self) -> gateway_pb2.GetBalanceResponse:
        return await self.call(self.payments.GetBalance, gateway_pb2.GetBalanceRequest())

    async def pay(
        self,
        to_bank: str,
        to_account: str,
        minor_units: int,
        currency: str = "USD",
        idempotency_key: str = "",
    ) -> gateway_pb2.PayResponse:
        key = idempotency_key or str(uuid.uuid4())
        request = gateway_pb2.PayRequest(
            to=common_pb2.AccountRef(bank=to_bank, account=to_account),
            amount=common_pb2.Money(minor_units=minor_units, currency=currency),
            idempotency_key=key,
        )
        return await self.call(self.payments.Pay, request, idempotency_key=key)

    async def history(
        self, page_size: int = 20, page_token: str = ""
    ) -> gateway_pb2.ListHistoryResponse:
        return await self.call(
            self.payments.ListHistory,
            gateway_pb2.ListHistoryRequest(page_size=page_size, page_token=page_token),
        )

    # -- admin calls -----------------------------------------------------------------------

    async def list_banks(self) -> admin_pb2.ListBanksResponse:
        return await self.call(self.admin.ListBanks, admin_pb2.ListBanksRequest())

    async def create_user(
        self,
        *,
        username: str,
        name: str,
        password: str,
        bank: str,
        account: str,
        balance_minor: int,
        currency: str = "USD",
        role: str = "customer",
    ) -> admin_pb2.CreateUserResponse:
        return await self.call(
            self.admin.CreateUser,
            admin_pb2.CreateUserRequest(
                username=username,
                name=name,
                password=password,
                role=role,
                account=common_pb2.AccountRef(bank=bank, account=account),
                initial_balance=common_pb2.Money(minor_units=balance_minor, currency=currency),
            ),
        )

    async def list_users(self, bank: str = "") -> admin_pb2.ListUsersResponse:
        return await self.call(self.admin.ListUsers, admin_pb2.ListUsersRequest(bank=bank))

    async def set_disabled(
        self, bank: str, username: str, disabled: bool
    ) -> admin_pb2.SetUserDisabledResponse:
        return await self.call(
            self.admin.SetUserDisabled,
            admin_pb2.SetUserDisabledRequest(bank=bank, username=username, disabled=disabled),
        )

    async def deposit(
        self,
        bank: str,
        account: str,
        minor_units: int,
        currency: str = "USD",
        idempotency_key: str = "",
    ) -> admin_pb2.DepositResponse:
        key = idempotency_key or str(uuid.uuid4())
        return await self.call(
            self.admin.Deposit,
            admin_pb2.DepositRequest(
                account=common_pb2.AccountRef(bank=bank, account=account),
                amount=common_pb2.Money(minor_units=minor_units, currency=currency),
                idempotency_key=key,
            ),
            idempotency_key=key,
        )
