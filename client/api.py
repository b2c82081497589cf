"""The client library: a mutual-TLS channel to the gateway, the saved login session, and
calls that retry safely (same idempotency key and request id, exponential backoff with
jitter) on UNAVAILABLE and DEADLINE_EXCEEDED.

Amounts are integers in minor units (cents for USD), named ``<what>_minor_units`` like the
API's ``Money.minor_units``; ``minipay.money`` converts them to and from "12.34". When every
attempt fails without the gateway ever answering, a call raises ``GatewayUnreachable`` (an
``AioRpcError`` whose details say which address, how many attempts and why)."""

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

from client.logs import LOGGER, describe_request
from minipay import balancing
from minipay.identity import GATEWAY_SERVER_NAME
from minipay.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
)

log = logging.getLogger(LOGGER)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEV_CERTS = REPO_ROOT / "certificate" / "dev"
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
R = TypeVar("R")


DEFAULT_GATEWAY = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0
DEFAULT_ATTEMPTS = 5


class ClientError(Exception):
    """A problem on this side (missing certificate, no session): one line for the user."""


def _env_number(name: str, kind: type[int] | type[float], default: float) -> Any:
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ClientError(f"{name}={text!r} is not {what}") from None
    if value <= 0:
        raise ClientError(f"{name}={text!r} must be greater than zero")
    return value


@dataclass(frozen=True)
class ClientConfig:
    """Where the gateway is, which certificate to present, how long to wait and how often to
    try; the MINIPAY_* environment variables set these, and flags override both."""

    gateway: str = DEFAULT_GATEWAY
    # The name the gateway's certificate must prove, whatever address it is reached at.
    server_name: str = GATEWAY_SERVER_NAME
    ca: Path = DEV_CERTS / "services-ca.pem"
    cert: Path = DEV_CERTS / "client-1.pem"
    key: Path = DEV_CERTS / "client-1-key.pem"
    home: Path = Path.home() / ".minipay"
    timeout: float = DEFAULT_TIMEOUT  # seconds, per attempt
    max_attempts: int = DEFAULT_ATTEMPTS

    @classmethod
    def from_env(cls, default_cert: str = "client-1", **overrides: Any) -> ClientConfig:
        env = os.environ
        values: dict[str, Any] = {
            "gateway": env.get("MINIPAY_GATEWAY") or DEFAULT_GATEWAY,
            "server_name": env.get("MINIPAY_GATEWAY_SERVER_NAME") or GATEWAY_SERVER_NAME,
            "ca": Path(env.get("MINIPAY_CA") or DEV_CERTS / "services-ca.pem"),
            "cert": Path(env.get("MINIPAY_CERT") or DEV_CERTS / f"{default_cert}.pem"),
            "key": Path(env.get("MINIPAY_KEY") or DEV_CERTS / f"{default_cert}-key.pem"),
            "home": Path(env.get("MINIPAY_HOME") or Path.home() / ".minipay"),
            "timeout": _env_number("MINIPAY_TIMEOUT", float, DEFAULT_TIMEOUT),
            "max_attempts": _env_number("MINIPAY_ATTEMPTS", int, DEFAULT_ATTEMPTS),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def check_files(self) -> None:
        """Raises ClientError unless the CA, certificate and key can be read: checked before
        anyone is asked for a password."""
        _read(self.ca, "CA certificate")
        _read(self.cert, "certificate")
        _read(self.key, "private key")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


class GatewayUnreachable(grpc.aio.AioRpcError):  # type: ignore[misc]
    """Every attempt failed and the gateway never answered: nothing listens at the address,
    the name does not resolve, or the TLS handshake failed. Its details are one line for
    the user; ``reason`` is gRPC's own text of the last failure."""

    def __init__(self, error: grpc.aio.AioRpcError, address: str, attempts: int) -> None:
        self.address = address
        self.attempts = attempts
        self.reason = error.details() or ""
        super().__init__(
            error.code(),
            error.initial_metadata(),
            error.trailing_metadata(),
            details=_unreachable_message(address, attempts, self.reason, error.code()),
            debug_error_string=error.debug_error_string(),
        )


def _unreachable_message(address: str, attempts: int, reason: str, code: grpc.StatusCode) -> str:
    tried = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    lowered = reason.lower()
    if "handshake" in lowered or "ssl" in lowered or "certificate" in lowered:
        why = reason.removesuffix(": OK").rsplit(": ", 1)[-1]
        return (
            f"cannot reach the gateway at {address} {tried}: the TLS handshake failed ({why}); "
            "check --ca, --cert and --key"
        )
    if "resolv" in lowered or "lookup" in lowered:
        return (
            f"cannot reach the gateway at {address} {tried}: the name does not resolve; "
            "check --gateway or MINIPAY_GATEWAY"
        )
    if "refused" in lowered:
        why = " (connection refused)"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        why = " (no answer in time)"
    else:
        why = ""
    return f"cannot reach the gateway at {address} {tried}{why}; is the cluster running? (make up)"


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
    options = [
        *balancing.OPTIONS,  # several replicas: round robin over the healthy ones
        # TLS refuses a server that cannot prove it is the gateway, before a byte is sent.
        ("grpc.ssl_target_name_override", config.server_name),
        # Reconnect quickly, so a retry after a gateway restart finds it as soon as it is back.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    try:
        target = balancing.channel_target(config.gateway)
    except balancing.AddressError as error:
        raise ClientError(f"gateway address {config.gateway!r}: {error}") from None
    return grpc.aio.secure_channel(
        target, credentials, options, interceptors=[CallLogger(config.gateway)]
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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary = self.path.with_suffix(".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle)
            os.replace(temporary, self.path)
        except OSError as exc:
            raise ClientError(
                f"cannot save the session in {self.path}: {exc.strerror or exc}"
            ) from None

    def clear(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise ClientError(
                f"cannot remove the session file {self.path}: {exc.strerror or exc}"
            ) from None


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

    def _never_connected(self) -> bool:
        """True when the channel has no connection: the failure was reaching the gateway,
        not an answer from it (the gateway itself says UNAVAILABLE when a bank is down)."""
        state = self._channel.get_state(try_to_connect=False)
        return bool(state != grpc.ChannelConnectivity.READY)

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
                if error.code() not in RETRYABLE:
                    raise
                if attempt >= self.retry.max_attempts:
                    if self._never_connected():
                        raise GatewayUnreachable(error, self.config.gateway, attempt) from error
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
        amount_minor_units: int,
        currency: str = "USD",
        idempotency_key: str = "",
    ) -> gateway_pb2.PayResponse:
        """Pays AMOUNT_MINOR_UNITS (cents for USD); the same IDEMPOTENCY_KEY (default: a new
        UUID) gives the first outcome again instead of a second payment."""
        key = idempotency_key or str(uuid.uuid4())
        request = gateway_pb2.PayRequest(
            to=common_pb2.AccountRef(bank=to_bank, account=to_account),
            amount=common_pb2.Money(minor_units=amount_minor_units, currency=currency),
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
        balance_minor_units: int,
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
                initial_balance=common_pb2.Money(
                    minor_units=balance_minor_units, currency=currency
                ),
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
        amount_minor_units: int,
        currency: str = "USD",
        idempotency_key: str = "",
    ) -> admin_pb2.DepositResponse:
        key = idempotency_key or str(uuid.uuid4())
        return await self.call(
            self.admin.Deposit,
            admin_pb2.DepositRequest(
                account=common_pb2.AccountRef(bank=bank, account=account),
                amount=common_pb2.Money(minor_units=amount_minor_units, currency=currency),
                idempotency_key=key,
            ),
            idempotency_key=key,
        )
