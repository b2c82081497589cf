"""The client library: a mutual-TLS channel to the gateway, the saved login session, and
typed calls that retry safely (same idempotency key and request id) on UNAVAILABLE and
DEADLINE_EXCEEDED: exponential backoff with jitter (or longer when the gateway's RetryInfo
says so), 10 attempts by default, which wait between about 7 and 14 s in all, longer than a
gateway takes to be restarted, and never past the call's deadline (60 s by default). A call
refused for the customer's rate limit (RATE_LIMITED) waits what its RetryInfo says, plus
jitter, and is sent again without counting as an attempt, as long as the waiting stays
within the call's deadline; each wait is logged (on standard error with the CLIs' --verbose).

Calls return frozen dataclasses (``minipay.client.results``), each with the ``request_id`` of
the call. Everything the library raises is a ``MinipayError`` (``minipay.client.errors``): an
``ApiError`` for every call that does not succeed (code, reason, message, metadata, request id,
field violations, retry delay), its subclass ``GatewayUnreachable`` when every attempt failed
without the gateway ever answering, and a ``ClientError`` for what is found wrong on this side
before anything is sent (a certificate setting missing, a file that cannot be read). A payment
the gateway recorded is never an error: ``pay`` returns it, COMMITTED or ABORTED with its
``reason_code``. Amounts are integers in minor units (cents for USD), named
``<what>_minor_units`` like the API's ``Money.minor_units``; ``minipay.money`` converts them
to and from "12.34"."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import grpc
from google.protobuf import timestamp_pb2

from minipay import balancing
from minipay.audit import GENESIS, Head, Record, Verdict, verify
from minipay.client.errors import (
    REQUEST_ID_HEADER,
    ApiError,
    ClientError,
    GatewayUnreachable,
    MinipayError,
    header,
)
from minipay.client.events import EVENT_TYPES, AuditPage, Event, EventPage
from minipay.client.logs import LOGGER, describe_request
from minipay.client.results import (
    DIRECTION_OF_MESSAGE,
    KIND_OF_MESSAGE,
    STATUS_OF_MESSAGE,
    AccountRef,
    Balance,
    Bank,
    BankList,
    BatchItem,
    BatchResult,
    BatchResults,
    Deposit,
    Direction,
    HistoryPage,
    ItemError,
    LoginResult,
    LogoutResult,
    Overview,
    Payment,
    PaymentKind,
    PaymentStatus,
    ReconcileReport,
    Registration,
    Share,
    SplitShare,
    User,
    UserList,
    utc,
)
from minipay.client.trace import PaymentTrace
from minipay.errors import ErrorReason
from minipay.service_names import GATEWAY_SERVER_NAME
from minipay.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    events_pb2,
    events_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)

__all__ = [
    "AccountRef",
    "ApiError",
    "Balance",
    "Bank",
    "BankList",
    "BatchItem",
    "BatchResult",
    "BatchResults",
    "ClientConfig",
    "ClientError",
    "Deposit",
    "Direction",
    "GatewayClient",
    "GatewayUnreachable",
    "HistoryPage",
    "ItemError",
    "LoginResult",
    "LogoutResult",
    "MinipayError",
    "Overview",
    "Payment",
    "PaymentKind",
    "PaymentStatus",
    "PaymentTrace",
    "ReconcileReport",
    "Registration",
    "RetryPolicy",
    "Share",
    "SplitShare",
    "User",
    "UserList",
]

log = logging.getLogger(LOGGER)

REPO_ROOT = Path(__file__).resolve().parents[2]
# The dev certificates (``make setup``) when this code runs from a checkout; an installed
# client has none to fall back on and must be given its own.
DEV_CERTS: Path | None = (
    REPO_ROOT / "certificate" / "dev" if (REPO_ROOT / "certificate" / "ca.py").is_file() else None
)
# A payment that commits slowly ends its attempt with DEADLINE_EXCEEDED: the retry, with the
# same idempotency key, learns its outcome instead of leaving it unknown.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


DEFAULT_GATEWAY = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0  # seconds, each attempt
DEFAULT_DEADLINE = 60.0  # seconds, the whole call with its retries
RECONCILE_PATIENCE = 600.0  # seconds: a reconcile reads every bank's books
DEFAULT_ATTEMPTS = 10
# ListHistory's page size: 1-200 (the gateway's limits; 0 there means 20).
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 200
# PayBatch's items per call (the gateway's limit).
MAX_BATCH_ITEMS = 1000
# The certificate settings: the variable, the CLIs' flag, and what the file is.
CERTIFICATE_SETTINGS = {
    "ca": ("MINIPAY_CA", "--ca", "the services CA that signed the gateway's certificate"),
    "cert": ("MINIPAY_CERT", "--cert", "your client certificate"),
    "key": ("MINIPAY_KEY", "--key", "its private key"),
}


def dev_certificate(name: str) -> Path | None:
    """certificate/dev/NAME in a checkout; None where the client is installed."""
    return DEV_CERTS / name if DEV_CERTS is not None else None


_DEV_CA = dev_certificate("services-ca.pem")
_DEV_CERT = dev_certificate("client-1.pem")
_DEV_KEY = dev_certificate("client-1-key.pem")


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
    # None: not given (in a checkout, the dev certificates are the defaults).
    ca: Path | None = _DEV_CA
    cert: Path | None = _DEV_CERT
    key: Path | None = _DEV_KEY
    home: Path = Path.home() / ".minipay"
    timeout: float = DEFAULT_TIMEOUT  # seconds, each attempt
    max_attempts: int = DEFAULT_ATTEMPTS
    deadline: float = DEFAULT_DEADLINE  # seconds, the whole call with its retries

    @classmethod
    def from_env(cls, default_cert: str = "client-1", **overrides: Any) -> ClientConfig:
        """The MINIPAY_* variables, then OVERRIDES (None: not given); DEFAULT_CERT names the
        dev certificate used in a checkout when MINIPAY_CERT and MINIPAY_KEY are not set."""
        env = os.environ

        def path(name: str, dev_name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else dev_certificate(dev_name)

        values: dict[str, Any] = {
            "gateway": env.get("MINIPAY_GATEWAY") or DEFAULT_GATEWAY,
            "server_name": env.get("MINIPAY_GATEWAY_SERVER_NAME") or GATEWAY_SERVER_NAME,
            "ca": path("MINIPAY_CA", "services-ca.pem"),
            "cert": path("MINIPAY_CERT", f"{default_cert}.pem"),
            "key": path("MINIPAY_KEY", f"{default_cert}-key.pem"),
            "home": Path(env.get("MINIPAY_HOME") or Path.home() / ".minipay"),
            "timeout": _env_number("MINIPAY_TIMEOUT", float, DEFAULT_TIMEOUT),
            "max_attempts": _env_number("MINIPAY_ATTEMPTS", int, DEFAULT_ATTEMPTS),
            "deadline": _env_number("MINIPAY_DEADLINE", float, DEFAULT_DEADLINE),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def check_files(self) -> None:
        """Raises ClientError unless the CA, certificate and key are given and can be read:
        checked before anyone is asked for a password."""
        self.tls_files()

    def tls_files(self) -> tuple[bytes, bytes, bytes]:
        """The CA, certificate and key files' contents; ClientError naming the settings to
        give when any is not given, or the file when one cannot be read."""
        ca, cert, key = self.ca, self.cert, self.key
        if ca is None or cert is None or key is None:
            given = {"ca": ca, "cert": cert, "key": key}
            raise ClientError(_missing_certificates([n for n, p in given.items() if p is None]))
        return (
            _read(ca, "CA certificate", "ca"),
            _read(cert, "certificate", "cert"),
            _read(key, "private key", "key"),
        )


def _missing_certificates(missing: list[str]) -> str:
    """Which settings to give, in one line."""
    settings = [CERTIFICATE_SETTINGS[name] for name in missing]
    variables = ", ".join(f"{variable} ({what})" for variable, _, what in settings)
    flags = ", ".join(flag for _, flag, _ in settings)
    return (
        f"no certificate given: set {variables}, or give {flags} (in a program: ClientConfig's "
        f"{', '.join(missing)}); only a checkout of the repository has dev certificates to fall "
        "back on"
    )


def _read(path: Path, what: str, setting: str) -> bytes:
    variable, flag, _ = CERTIFICATE_SETTINGS[setting]
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ClientError(
            f"cannot read {what} {path}: {exc.strerror or exc} (set by {variable} or {flag})"
        ) from None


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
    ca, cert, key = config.tls_files()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
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
    """How often to try and how long to pause: the pause after attempt N is drawn between
    half and all of INITIAL_BACKOFF * 2**(N-1), at most MAX_BACKOFF. With the defaults the
    nine pauses of ten attempts add up to 6.9-13.75 s: a gateway killed and restarted by
    ``make up`` is back well within that."""

    max_attempts: int = DEFAULT_ATTEMPTS
    initial_backoff: float = 0.25
    max_backoff: float = 2.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)

    def backoff(self, attempt: int) -> float:
        # Jitter spreads the retries of many clients; keeping at least half of each step
        # keeps the whole window long enough to outlast a restart.
        step = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return random.uniform(step / 2, step)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """The pause before the next attempt: the backoff, or longer when the gateway's
        RetryInfo asked for longer."""
        return max(self.backoff(attempt), retry_after or 0.0)

    def rate_limit_wait(self, retry_after: float) -> float:
        """The pause before sending a rate-limited call again: what the gateway asked for,
        and up to a tenth more (at least a few ms), so that clients do not come back at once."""
        return retry_after + random.uniform(0, retry_after / 10 + 0.005)


class Answer(NamedTuple):
    """A call's response message and the request id the gateway answered with."""

    message: Any
    request_id: str


_MESSAGE_OF_STATUS = {status: value for value, status in STATUS_OF_MESSAGE.items()}
_MESSAGE_OF_DIRECTION = {direction: value for value, direction in DIRECTION_OF_MESSAGE.items()}
_MESSAGE_OF_KIND = {kind: value for value, kind in KIND_OF_MESSAGE.items()}


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    """MOMENT as a Timestamp; a naive datetime is taken as UTC."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _account(bank: str, account: str) -> common_pb2.AccountRef:
    return common_pb2.AccountRef(bank=bank, account=account)


def _money(minor_units: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor_units, currency=currency)


class GatewayClient:
    """Every call a customer or an admin makes, over one channel. Use it with ``async with``;
    ``login`` keeps the token for the calls after it."""

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
        self.event_stream = events_pb2_grpc.EventsStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _never_connected(self) -> bool:
        """True when the channel has no connection: the failure was reaching the gateway,
        not an answer from it (the gateway itself says UNAVAILABLE when a bank is down)."""
        state = self._channel.get_state(try_to_connect=False)
        return bool(state != grpc.ChannelConnectivity.READY)

    async def _call(
        self, method: Any, request: Any, idempotency_key: str = "", patience: float = 0.0
    ) -> Answer:
        """Calls with retries; every attempt carries the same request id and its number, and
        none runs past the call's deadline (PATIENCE, if longer than the configured timeout
        and deadline, for a call that takes long by nature). Raises ApiError
        (GatewayUnreachable when the gateway never answered)."""
        request_id = uuid.uuid4().hex
        deadline = time.monotonic() + max(self.config.deadline, patience)
        attempt = 1
        while True:
            metadata = [(REQUEST_ID_HEADER, request_id), ("x-attempt", str(attempt))]
            if self.token:
                metadata.append(("authorization", f"Bearer {self.token}"))
            timeout = min(max(self.config.timeout, patience), deadline - time.monotonic())
            try:
                call = method(request, metadata=metadata, timeout=timeout)
                message = await call
                answered = header(await call.initial_metadata(), REQUEST_ID_HEADER)
                return Answer(message, answered or request_id)
            except grpc.aio.AioRpcError as rpc_error:
                error = ApiError.from_rpc_error(rpc_error, request_id)
                pause = self._rate_limited(error, deadline)
                if pause is not None:
                    await self.retry.sleep(pause)
                    continue
                delay = self.retry.delay(attempt, error.retry_after)
                last = attempt >= self.retry.max_attempts
                if error.code not in RETRYABLE:
                    raise error from rpc_error
                if last or time.monotonic() + delay >= deadline:
                    if self._never_connected():
                        raise GatewayUnreachable(
                            rpc_error, self.config.gateway, attempt, request_id
                        ) from rpc_error
                    raise error from rpc_error
            self._log_retry(error, attempt, delay, idempotency_key)
            await self.retry.sleep(delay)
            attempt += 1

    def _rate_limited(self, error: ApiError, deadline: float) -> float | None:
        """How long to wait before sending a call the rate limit refused again; None when
        the error is another, or the wait would go past the call's deadline."""
        if error.reason != ErrorReason.RATE_LIMITED or not error.retry_after:
            return None
        pause = self.retry.rate_limit_wait(error.retry_after)
        if time.monotonic() + pause >= deadline:
            return None
        fields = {
            "event": "rate_limited",
            "message": f"rate limited: waiting {pause:.3f} s, then sending the call again",
            "request_id": error.request_id,
            "waiting_s": round(pause, 3),
        }
        log.warning("rate limited", extra={"fields": fields})
        return pause

    def _log_retry(self, error: ApiError, attempt: int, delay: float, idempotency_key: str) -> None:
        fields = {
            "event": "client_retry",
            "request_id": error.request_id,
            "idempotency_key": idempotency_key,
            "attempt": attempt + 1,
            "max_attempts": self.retry.max_attempts,
            "status": error.code.name,
            "reason": error.reason,
            "delay_s": round(delay, 3),
        }
        log.warning("retrying", extra={"fields": fields})

    # -- customer calls --------------------------------------------------------------------

    async def register(self, username: str, password: str, bank: str, account: str) -> Registration:
        """Links the customer's bank account to the gateway, once, before the first login."""
        request = gateway_pb2.RegisterRequest(
            username=username, password=password, bank=bank, account=account
        )
        message, request_id = await self._call(self.auth.Register, request)
        return Registration(
            message.username, message.account.bank, message.account.account, request_id
        )

    async def login(self, username: str, password: str) -> LoginResult:
        """Logs in; the token is kept for this client's later calls."""
        request = gateway_pb2.LoginRequest(username=username, password=password)
        message, request_id = await self._call(self.auth.Login, request)
        self.token = message.token
        return LoginResult(message.token, message.role, utc(message.expires_at), request_id)

    async def logout(self) -> LogoutResult:
        """Revokes the token at the gateway."""
        _, request_id = await self._call(self.auth.Logout, gateway_pb2.LogoutRequest())
        return LogoutResult(request_id)

    async def balance(self) -> Balance:
        message, request_id = await self._call(
            self.payments.GetBalance, gateway_pb2.GetBalanceRequest()
        )
        return Balance.from_message(message, request_id)

    async def pay(
        self,
        to_bank: str,
        to_account: str,
        amount_minor_units: int,
        currency: str = "USD",
        idempotency_key: str = "",
    ) -> Payment:
        """Pays AMOUNT_MINOR_UNITS (cents for USD) and returns the payment, COMMITTED or
        ABORTED with its reason. The same IDEMPOTENCY_KEY (default: a new UUID; give your own
        to be able to repeat the call) returns the first outcome instead of paying twice."""
        key = idempotency_key or str(uuid.uuid4())
        request = gateway_pb2.PayRequest(
            to=_account(to_bank, to_account),
            amount=_money(amount_minor_units, currency),
            idempotency_key=key,
        )
        message, request_id = await self._call(self.payments.Pay, request, idempotency_key=key)
        return Payment.from_message(message.payment, request_id, replayed=message.replayed)

    async def pay_split(
        self, shares: Sequence[SplitShare], currency: str = "USD", idempotency_key: str = ""
    ) -> Payment:
        """Pays 2 to 100 payees in one payment, all or nothing: one debit of the total, one
        credit per share, every bank involved votes, and if any votes no (or does not answer
        in time) nothing moves anywhere. Returns the payment (COMMITTED, or ABORTED with the
        first no's reason), with its ``shares``; the same IDEMPOTENCY_KEY (default: a new
        UUID) returns the first outcome.

        Sent as an atomic ``PayBatch`` (one item per share): a refusal names the share by its
        item, ``items[N].to`` or ``items[N].amount.currency``, say."""
        key = idempotency_key or str(uuid.uuid4())
        request = gateway_pb2.PayBatchRequest(
            items=[
                gateway_pb2.PayBatchItem(
                    to=_account(share.to_bank, share.to_account),
                    amount=_money(share.amount_minor_units, currency),
                )
                for share in shares
            ],
            atomic=True,
            idempotency_key=key,
        )
        message, request_id = await self._call(self.payments.PayBatch, request, idempotency_key=key)
        # Every result names the one payment; none is an error (a refusal refuses the call).
        if len(message.results) != len(shares) or not message.results[0].HasField("payment"):
            raise ClientError(
                f"the gateway's answer to an atomic batch of {len(shares)} payees is not one "
                "payment per payee"
            )
        first = message.results[0]
        return Payment.from_message(first.payment, request_id, replayed=first.replayed)

    async def pay_batch(self, items: Sequence[BatchItem]) -> BatchResults:
        """Pays 1 to MAX_BATCH_ITEMS ITEMS in one call, each its own payment with its own
        outcome, exactly as ``pay`` would pay it alone; returns their results in the items'
        order. An item the gateway refused (a bad field, a key reused for another payment)
        is a result with its ``error``, not an exception: the others were paid all the same.

        An item without a key gets a new UUID (see ``BatchResult.idempotency_key``). A retry
        after UNAVAILABLE or DEADLINE_EXCEEDED sends every item again with the same keys: no
        item's outcome is known until the answer comes, and a key already recorded replays
        its first outcome, so nothing is paid twice. To repeat a batch yourself (say, after
        GatewayUnreachable), send the same items with the same keys."""
        keyed = [item.idempotency_key or str(uuid.uuid4()) for item in items]
        request = gateway_pb2.PayBatchRequest(
            items=[
                gateway_pb2.PayBatchItem(
                    to=_account(item.to_bank, item.to_account),
                    amount=_money(item.amount_minor_units, item.currency),
                    idempotency_key=key,
                )
                for item, key in zip(items, keyed, strict=True)
            ]
        )
        message, request_id = await self._call(self.payments.PayBatch, request)
        if len(message.results) != len(keyed):  # never from a gateway that keeps the API
            raise ClientError(
                f"the gateway answered {len(message.results)} results for {len(keyed)} items"
            )
        return BatchResults(
            tuple(
                BatchResult.from_message(result, key, request_id)
                for result, key in zip(message.results, keyed, strict=True)
            ),
            request_id,
        )

    async def payment(self, payment_id: str) -> Payment:
        """One payment the caller made, or received once it committed, with the refunds of
        it the caller may see (``refunds``, oldest first)."""
        request = gateway_pb2.GetPaymentRequest(payment_id=payment_id)
        message, request_id = await self._call(self.payments.GetPayment, request)
        return Payment.from_message(message.payment, request_id, refunds=message.refunds)

    async def refund(
        self,
        payment_id: str,
        amount_minor_units: int | None = None,
        currency: str = "USD",
        idempotency_key: str = "",
    ) -> Payment:
        """Gives back a committed payment the caller received: AMOUNT_MINOR_UNITS in the
        payment's CURRENCY, or (None) all that is left to refund. Returns the refund, a
        payment of its own (``kind`` REFUND, ``refund_of`` PAYMENT_ID), COMMITTED or ABORTED
        with its reason (then nothing moved and the amount may be refunded again). The same
        IDEMPOTENCY_KEY (default: a new UUID) returns the first outcome."""
        key = idempotency_key or str(uuid.uuid4())
        request = gateway_pb2.RefundRequest(payment_id=payment_id, idempotency_key=key)
        if amount_minor_units is not None:
            request.amount.CopyFrom(_money(amount_minor_units, currency))
        message, request_id = await self._call(self.payments.Refund, request, idempotency_key=key)
        return Payment.from_message(message.refund, request_id, replayed=message.replayed)

    async def payment_trace(self, payment_id: str) -> PaymentTrace:
        """The story of one payment the caller made (every step) or received once it
        committed (without the payer's bank's votes and the payer's request details)."""
        request = gateway_pb2.GetPaymentTraceRequest(payment_id=payment_id)
        message, request_id = await self._call(self.payments.GetPaymentTrace, request)
        return PaymentTrace.from_message(message, request_id)

    async def history(
        self,
        page_size: int = DEFAULT_PAGE_SIZE,
        page_token: str = "",
        *,
        status: PaymentStatus | None = None,
        direction: Direction | None = None,
        created_from: datetime | None = None,
        created_before: datetime | None = None,
        kind: PaymentKind | None = None,
    ) -> HistoryPage:
        """The caller's payments, newest first, PAGE_SIZE (1-200) at a time; PAGE_TOKEN is a
        previous page's next_page_token, with the same filters. Times are aware datetimes
        (a naive one is taken as UTC): CREATED_FROM inclusive, CREATED_BEFORE exclusive.
        KIND picks payments or refunds."""
        request = gateway_pb2.ListHistoryRequest(page_size=page_size, page_token=page_token)
        if status is not None:
            request.status = _MESSAGE_OF_STATUS[status]
        if direction is not None:
            request.direction = _MESSAGE_OF_DIRECTION[direction]
        if created_from is not None:
            request.created_from.CopyFrom(_timestamp(created_from))
        if created_before is not None:
            request.created_before.CopyFrom(_timestamp(created_before))
        if kind is not None:
            request.kind = _MESSAGE_OF_KIND[kind]
        message, request_id = await self._call(self.payments.ListHistory, request)
        return HistoryPage.from_message(message, request_id)

    # -- admin calls -----------------------------------------------------------------------

    async def list_banks(self) -> BankList:
        message, request_id = await self._call(self.admin.ListBanks, admin_pb2.ListBanksRequest())
        banks = tuple(Bank(b.name, b.address, b.serving) for b in message.banks)
        return BankList(banks, request_id)

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
    ) -> User:
        """A customer with a new account at BANK (or, with ROLE "admin", an admin)."""
        request = admin_pb2.CreateUserRequest(
            username=username,
            name=name,
            password=password,
            role=role,
            account=_account(bank, account),
            initial_balance=_money(balance_minor_units, currency),
        )
        message, request_id = await self._call(self.admin.CreateUser, request)
        return User.from_message(message.user, request_id)

    async def admin_payment_trace(self, payment_id: str) -> PaymentTrace:
        """Any payment's story, every step (an admin's call)."""
        request = admin_pb2.AdminGetPaymentTraceRequest(payment_id=payment_id)
        message, request_id = await self._call(self.admin.GetPaymentTrace, request)
        return PaymentTrace.from_message(message, request_id)

    async def list_users(self, bank: str = "") -> UserList:
        """The customers of BANK, or of every bank."""
        message, request_id = await self._call(
            self.admin.ListUsers, admin_pb2.ListUsersRequest(bank=bank)
        )
        return UserList(tuple(User.from_message(u, request_id) for u in message.users), request_id)

    async def set_disabled(self, bank: str, username: str, disabled: bool) -> User:
        """Disables a customer (no login, no payment, every token refused) or enables them."""
        request = admin_pb2.SetUserDisabledRequest(bank=bank, username=username, disabled=disabled)
        message, request_id = await self._call(self.admin.SetUserDisabled, request)
        return User.from_message(message.user, request_id)

    async def deposit(
        self,
        bank: str,
        account: str,
        amount_minor_units: int,
        currency: str = "USD",
        idempotency_key: str = "",
    ) -> Deposit:
        """Adds money to an account; the same IDEMPOTENCY_KEY deposits once."""
        key = idempotency_key or str(uuid.uuid4())
        request = admin_pb2.DepositRequest(
            account=_account(bank, account),
            amount=_money(amount_minor_units, currency),
            idempotency_key=key,
        )
        message, request_id = await self._call(self.admin.Deposit, request, idempotency_key=key)
        balance = message.balance.minor_units
        return Deposit(bank, account, amount_minor_units, currency, balance, key, request_id)

    async def admin_refund(
        self,
        payment_id: str,
        amount_minor_units: int | None = None,
        currency: str = "USD",
        idempotency_key: str = "",
        payee: AccountRef | None = None,
    ) -> Payment:
        """Refunds a committed payment on its payee's behalf (the money comes from the
        payee's account), with the same rules as ``refund``; IDEMPOTENCY_KEY is the admin's
        own. PAYEE, if given, must be the payment's payee; for a split payment it is required,
        and names the payee whose share is refunded."""
        key = idempotency_key or str(uuid.uuid4())
        request = admin_pb2.AdminRefundRequest(payment_id=payment_id, idempotency_key=key)
        if amount_minor_units is not None:
            request.amount.CopyFrom(_money(amount_minor_units, currency))
        if payee is not None:
            request.payee.CopyFrom(_account(payee.bank, payee.account))
        message, request_id = await self._call(self.admin.Refund, request, idempotency_key=key)
        return Payment.from_message(message.refund, request_id, replayed=message.replayed)

    async def admin_payment(self, payment_id: str) -> Payment:
        """Any payment, all of it (reasons included), with all its refunds."""
        request = admin_pb2.AdminGetPaymentRequest(payment_id=payment_id)
        message, request_id = await self._call(self.admin.GetPayment, request)
        return Payment.from_message(message.payment, request_id, refunds=message.refunds)

    async def reconcile(self, older_than_seconds: int = 0) -> ReconcileReport:
        """Compares the gateway with every bank (what is in flight for less than
        OLDER_THAN_SECONDS, 0: 60, is not a mismatch) and returns the stored report."""
        request = admin_pb2.ReconcileRequest(older_than_seconds=older_than_seconds)
        message, request_id = await self._call(
            self.admin.Reconcile, request, patience=RECONCILE_PATIENCE
        )
        return ReconcileReport.from_message(message.report, request_id)

    async def last_reconcile(self) -> ReconcileReport | None:
        """The report of the last reconcile any replica ran (None if none ran)."""
        message, request_id = await self._call(
            self.admin.GetLastReconcile, admin_pb2.GetLastReconcileRequest()
        )
        if not message.HasField("report"):
            return None
        return ReconcileReport.from_message(message.report, request_id)

    async def overview(self) -> Overview:
        """The system at a glance: banks, replicas, payments per 10 s, payments open."""
        message, request_id = await self._call(
            self.admin.GetOverview, admin_pb2.GetOverviewRequest()
        )
        return Overview.from_message(message, request_id)

    async def list_payments(
        self,
        page_size: int = 20,
        page_token: str = "",
        *,
        bank: str = "",
        account: str = "",
        status: PaymentStatus | None = None,
        kind: PaymentKind | None = None,
        created_from: datetime | None = None,
        created_before: datetime | None = None,
    ) -> HistoryPage:
        """Every payment, newest first, PAGE_SIZE (1-200) at most per page: those paid from
        or to BANK (and ACCOUNT there), with STATUS, of KIND, in the time range. A page may
        hold fewer (even none) and still name a next page: follow next_page_token."""
        request = admin_pb2.ListPaymentsRequest(
            page_size=page_size, page_token=page_token, bank=bank, account=account
        )
        if status is not None:
            request.status = _MESSAGE_OF_STATUS[status]
        if kind is not None:
            request.kind = _MESSAGE_OF_KIND[kind]
        if created_from is not None:
            request.created_from.CopyFrom(_timestamp(created_from))
        if created_before is not None:
            request.created_before.CopyFrom(_timestamp(created_before))
        message, request_id = await self._call(self.admin.ListPayments, request)
        return HistoryPage.from_message(message, request_id)

    # -- the event stream and the audit chain (customers: their own account's events) -------

    async def events(
        self, after_sequence: int = 0, page_size: int = 100, types: Sequence[str] = ()
    ) -> EventPage:
        """One page of events after the cursor AFTER_SEQUENCE (0: from the oldest kept), of
        TYPES ("payment.committed"...; empty: every type)."""
        request = events_pb2.EventsListRequest(
            after_sequence=after_sequence, page_size=page_size, types=_event_types(types)
        )
        message, request_id = await self._call(self.event_stream.List, request)
        return EventPage(
            tuple(Event.from_message(e, request_id) for e in message.events),
            message.next_after_sequence,
            request_id,
        )

    async def watch_events(
        self, after_sequence: int = 0, types: Sequence[str] = ()
    ) -> AsyncIterator[EventPage]:
        """Events after the cursor, then live ones as they happen, for as long as the caller
        iterates: each page as it arrives (an empty one is a heartbeat that moves the
        cursor). A stream the gateway ends (a replica stopping, a watcher too slow) is opened
        again from the cursor, on any replica: no event is missed or seen twice."""
        cursor = after_sequence
        attempt = 1
        while True:
            request = events_pb2.EventsWatchRequest(
                after_sequence=cursor, types=_event_types(types)
            )
            metadata = [(REQUEST_ID_HEADER, uuid.uuid4().hex)]
            if self.token:
                metadata.append(("authorization", f"Bearer {self.token}"))
            call = self.event_stream.Watch(request, metadata=metadata)
            try:
                async for message in call:
                    attempt = 1
                    cursor = message.next_after_sequence
                    request_id = header(await call.initial_metadata(), REQUEST_ID_HEADER)
                    yield EventPage(
                        tuple(Event.from_message(e, request_id) for e in message.events),
                        cursor,
                        request_id,
                    )
            except grpc.aio.AioRpcError as rpc_error:
                error = ApiError.from_rpc_error(rpc_error, "")
                resumable = error.code in RETRYABLE or error.reason in (
                    ErrorReason.WATCHER_TOO_SLOW,
                    ErrorReason.TOO_MANY_REQUESTS,
                )
                if not resumable or attempt >= self.retry.max_attempts:
                    raise error from rpc_error
                await self.retry.sleep(self.retry.delay(attempt, error.retry_after))
                attempt += 1
            finally:
                call.cancel()

    async def audit_page(self, after_sequence: int = 0, page_size: int = 1000) -> AuditPage:
        """Records of the audit chain after AFTER_SEQUENCE, and its head (an admin's call)."""
        request = admin_pb2.ListAuditRequest(after_sequence=after_sequence, page_size=page_size)
        message, request_id = await self._call(self.admin.ListAudit, request)
        return AuditPage(
            tuple(Record(r.sequence, r.prev_hash, r.hash, r.body) for r in message.records),
            message.head_sequence,
            message.head_hash,
            request_id,
        )

    async def verify_audit(self, expect_head: Head | None = None) -> Verdict:
        """Reads the whole audit chain, a page at a time, and recomputes it here (see
        ``minipay.audit.verify``): nothing the gateway says is taken on trust but the
        records themselves."""
        records: list[Record] = []
        after, declared = 0, Head(0, GENESIS)
        while True:
            page = await self.audit_page(after)
            records.extend(page.records)
            declared = Head(page.head_sequence, page.head_hash or GENESIS)
            if not page.records or page.records[-1].sequence >= page.head_sequence:
                break
            after = page.records[-1].sequence
        return verify(records, expect_head, declared)


def _event_types(types: Sequence[str]) -> list[events_pb2.EventType]:
    try:
        return [EVENT_TYPES[name] for name in types]
    except KeyError as unknown:
        known = ", ".join(sorted(EVENT_TYPES))
        raise ClientError(f"unknown event type {unknown}; the types are: {known}") from None
