"""Settings for every process: one dataclass per component, filled from flags, then
``MINIPAY_*`` environment variables, then the documented defaults.

This module is the one place where a setting's name, flag, variable, default and help are
written. Each field documents itself through ``setting()``: the flag is the field name in kebab
case; the variable is ``MINIPAY_`` plus the field name in capitals, or, for a field that each
component has separately (``scoped``), ``MINIPAY_<COMPONENT>_`` plus the field name. Anything
that starts processes (the cluster launcher, the benchmark, the tests) derives variable names
with ``variable()`` and ``environment()`` instead of spelling them out.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from server.common import validation
from server.common.errors import ConfigError, InvalidArgument

REPO_ROOT = Path(__file__).resolve().parents[2]
DEV_CERTS = REPO_ROOT / "certificate" / "dev"
DEFAULT_DATA_DIR = Path("data")
DEFAULT_GATEWAY = "127.0.0.1:50051"
DEFAULT_BANKS = "alpha=127.0.0.1:50061,beta=127.0.0.1:50062,gamma=127.0.0.1:50063"
DEFAULT_SEED = REPO_ROOT / "server" / "seed.yaml"

S = TypeVar("S", bound="ProcessSettings")


def setting(default: Any, help: str, *, scoped: bool = False) -> Any:
    """A settings field; ``scoped``: each component reads its own ``MINIPAY_<COMPONENT>_*``."""
    return dataclasses.field(default=default, metadata={"help": help, "scoped": scoped})


def variable(cls: type[ProcessSettings], name: str) -> str:
    """The environment variable of field NAME of settings class CLS."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    return _variable(cls, field)


def _variable(cls: type[ProcessSettings], field: dataclasses.Field[Any]) -> str:
    scope = f"{cls.COMPONENT.upper()}_" if field.metadata.get("scoped") else ""
    return f"MINIPAY_{scope}{field.name.upper()}"


def environment(cls: type[ProcessSettings], **values: Any) -> dict[str, str]:
    """The variables that give a process of class CLS these settings (for launchers)."""
    return {variable(cls, name): str(value) for name, value in values.items()}


def _convert(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, Path):
        return Path(raw)
    return raw


def _checked(raw: str, field: dataclasses.Field[Any], source: str) -> Any:
    """``_convert``, with a start-up error naming the flag or variable when RAW does not fit."""
    try:
        return _convert(raw, field.default)
    except ValueError:
        kind = "a whole number" if isinstance(field.default, int) else "a number"
        raise ConfigError(f"{source} {raw!r}: expected {kind}") from None


def _flag(field: dataclasses.Field[Any]) -> str:
    return "--" + field.name.replace("_", "-")


def _names(cls: type[ProcessSettings], name: str) -> str:
    """Field NAME's flag and variable, for an error message."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f"{_flag(field)}, {_variable(cls, field)}"


def add_arguments(parser: argparse.ArgumentParser, cls: type[ProcessSettings]) -> None:
    """Adds one flag per settings field, with its variable and default in the help."""
    for field in dataclasses.fields(cls):
        default = f"; default {field.default}" if str(field.default) not in {"", "."} else ""
        help_text = f"{field.metadata['help']} [env {_variable(cls, field)}{default}]"
        if isinstance(field.default, bool):
            parser.add_argument(
                _flag(field),
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                _flag(field),
                dest=field.name,
                default=None,
                metavar=field.name.upper(),
                help=help_text,
            )


def from_namespace(
    cls: type[S],
    args: argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> S:
    """Builds settings: explicit overrides, then flags, then environment, then defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        flag_value = getattr(args, field.name, None) if args is not None else None
        name = _variable(cls, field)
        if field.name in overrides:
            values[field.name] = overrides[field.name]
        elif flag_value is not None:
            values[field.name] = _checked(str(flag_value), field, _flag(field))
        elif name in env:
            values[field.name] = _checked(env[name], field, name)
    return cls(**values)


def parse_settings(cls: type[S], argv: Sequence[str] | None, prog: str, description: str) -> S:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser, cls)
    return from_namespace(cls, parser.parse_args(argv))


def parse_bank_map(text: str) -> dict[str, str]:
    """Parses ``name=host:port,name=host:port`` into a mapping."""
    banks: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, address = item.partition("=")
        if not sep or not name.strip() or not address.strip():
            raise ConfigError(f"bad bank entry {item!r}: expected NAME=HOST:PORT")
        try:
            banks[validation.bank_name(name.strip(), "a bank's name")] = address.strip()
        except InvalidArgument as error:
            raise ConfigError(f"bad bank entry {item!r}: {error.message}") from None
    return banks


def _given(path: Path) -> bool:
    return str(path) not in {"", "."}


@dataclasses.dataclass(frozen=True)
class ProcessSettings:
    """What every server process has: where its data, certificates and peers are, how it
    logs, and the 2PC timing both sides of a payment must agree on."""

    COMPONENT: ClassVar[str] = ""

    banks: str = setting(DEFAULT_BANKS, "every bank as NAME=HOST:PORT, comma separated")
    data_dir: Path = setting(DEFAULT_DATA_DIR, "folder for databases and logs")
    database_url: str = setting(
        "", "SQLAlchemy URL (default: a SQLite file in the data folder)", scoped=True
    )
    seed: Path = setting(DEFAULT_SEED, "YAML seed file of dev users and accounts")
    txn_timeout: float = setting(
        5.0,
        "seconds phase one may take before a payment aborts; also how long a bank waits after "
        "a yes vote before asking the coordinator",
    )
    recovery_interval: float = setting(2.0, "seconds between recovery passes")
    bcrypt_rounds: int = setting(12, "bcrypt cost for new passwords")
    ca: Path = setting(
        DEV_CERTS / "services-ca.pem",
        "the services CA: signs the gateway's and the banks' certificates; trusted for servers "
        "and for services calling",
    )
    cert: Path = setting(Path(""), "this process's certificate (default: the dev certificate)")
    key: Path = setting(Path(""), "this process's private key (default: the dev key)")
    faults: str = setting("", "test-only fault injection points, comma separated (off by default)")
    log_level: str = setting("INFO", "log level")
    log_format: str = setting("json", "log format: json or text")
    stderr_log_level: str = setting(
        "", "log level on standard error (default: --log-level; the file gets --log-level)"
    )
    metrics_port: int = setting(0, "Prometheus metrics port on 127.0.0.1 (0: off)", scoped=True)

    @property
    def process_name(self) -> str:
        """The name of this process's log file and of its dev certificate."""
        raise NotImplementedError

    @property
    def dev_certificate(self) -> str:
        raise NotImplementedError

    @property
    def bank_addresses(self) -> dict[str, str]:
        return parse_bank_map(self.banks)

    @property
    def default_database_file(self) -> str:
        raise NotImplementedError

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / self.default_database_file}"

    @property
    def cert_path(self) -> Path:
        return self.cert if _given(self.cert) else DEV_CERTS / f"{self.dev_certificate}.pem"

    @property
    def key_path(self) -> Path:
        return self.key if _given(self.key) else DEV_CERTS / f"{self.dev_certificate}-key.pem"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"


@dataclasses.dataclass(frozen=True)
class BankSettings(ProcessSettings):
    COMPONENT: ClassVar[str] = "bank"

    name: str = setting("alpha", "the bank's unique name (its certificate's CN)", scoped=True)
    listen: str = setting(
        "", "address to serve on (default: this bank's entry in --banks)", scoped=True
    )
    gateway: str = setting(
        DEFAULT_GATEWAY,
        "the gateway's address, or every replica's, comma separated (for asking 2PC decisions)",
    )

    @property
    def process_name(self) -> str:
        return f"bank-{self.name}"

    @property
    def dev_certificate(self) -> str:
        return self.name

    @property
    def default_database_file(self) -> str:
        return f"bank-{self.name}.db"

    @property
    def listen_address(self) -> str:
        if self.listen:
            return self.listen
        banks = self.bank_addresses
        if self.name not in banks:
            raise ConfigError(
                f"bank {self.name!r} is not in the bank list {self.banks!r}; add it there "
                "(--banks, MINIPAY_BANKS) or give its address with --listen"
            )
        return banks[self.name]


@dataclasses.dataclass(frozen=True)
class GatewaySettings(ProcessSettings):
    COMPONENT: ClassVar[str] = "gateway"

    name: str = setting(
        "gateway",
        "this replica's stable name (unique among the replicas; its log file and token key)",
        scoped=True,
    )
    listen: str = setting(DEFAULT_GATEWAY, "address to serve on", scoped=True)
    lease: float = setting(
        3.0, "seconds a replica's lease lasts; a replica silent this long loses its payments"
    )
    client_ca: Path = setting(
        DEV_CERTS / "clients-ca.pem",
        "the clients CA: signs customers' and admins' certificates; trusted for callers",
    )
    batch_max: int = setting(256, "most payments in one 2PC round (1: one round per payment)")
    token_ttl: int = setting(900, "seconds a login token is valid")
    token_key: Path = setting(Path(""), "Ed25519 key that signs tokens (default: in data folder)")
    login_max_failures: int = setting(
        5, "password checks (login, register) for one user per window; the next locks it"
    )
    login_client_max_failures: int = setting(
        30, "failed password checks from one client certificate per window; the next locks it"
    )
    login_window: float = setting(
        300.0, "seconds over which password checks are counted (from a key's first check)"
    )
    login_cooldown: float = setting(
        60.0, "seconds a locked user or certificate waits at least (it waits for its window)"
    )
    idempotency_ttl: int = setting(86400, "seconds an idempotency key is remembered")
    event_retention: float = setting(
        30 * 86400.0, "seconds events are kept (Events/List and Watch: older cursors are refused)"
    )
    pay_rate: float = setting(
        2000.0,
        "payments (Pay, Refund, PayBatch items) one customer may make a second, over every "
        "replica together; inf: no limit",
    )
    pay_burst: float = setting(
        4000.0, "payments one customer may make at once before the rate applies (at least 1)"
    )
    trace: bool = setting(
        True, "write each payment's story (off only to measure what it costs: benchmarks)"
    )
    journal: bool = setting(
        True,
        "write each round's events and audit record (off only to measure what they cost: "
        "benchmarks; the event stream and the audit chain then miss those decisions)",
    )

    def __post_init__(self) -> None:
        if not self.pay_rate > 0:  # NaN too
            raise ConfigError(
                f"the pay rate {self.pay_rate!r} ({_names(GatewaySettings, 'pay_rate')}) must be "
                "above 0 payments a second (inf: no limit)"
            )
        if not self.pay_burst >= 1:
            raise ConfigError(
                f"the pay burst {self.pay_burst!r} ({_names(GatewaySettings, 'pay_burst')}) must "
                "be at least 1 payment"
            )

    @property
    def process_name(self) -> str:
        return self.name

    @property
    def dev_certificate(self) -> str:
        return "gateway"  # every replica is the gateway

    @property
    def default_database_file(self) -> str:
        return "gateway.db"

    @property
    def token_key_path(self) -> Path:
        default = self.data_dir / f"{self.name}-token-key.pem"
        return self.token_key if _given(self.token_key) else default
