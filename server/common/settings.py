"""Settings for every process: one dataclass per component, filled from flags, then
``MINIPAY_*`` environment variables, then the documented defaults.

Each field documents itself through ``setting()``: the flag is the field name in kebab case,
the environment variable is ``MINIPAY_`` plus the field name in capitals (unless ``env`` says
otherwise), and the help text is what ``--help`` prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from server.common.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEV_CERTS = REPO_ROOT / "certificate" / "dev"
DEFAULT_DATA_DIR = Path("data")
DEFAULT_GATEWAY = "127.0.0.1:50051"
DEFAULT_BANKS = "alpha=127.0.0.1:50061,beta=127.0.0.1:50062,gamma=127.0.0.1:50063"
DEFAULT_SEED = REPO_ROOT / "server" / "seed.yaml"

S = TypeVar("S")


def setting(default: Any, help: str, env: str | None = None) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, "env": env})


def env_name(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get("env") or "MINIPAY_" + field.name.upper())


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


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """Adds one flag per settings field, with its variable and default in the help."""
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        help_text = f"{field.metadata['help']} [env {env_name(field)}; default {field.default}]"
        if isinstance(field.default, bool):
            parser.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag, dest=field.name, default=None, metavar=field.name.upper(), help=help_text
            )


def _checked(raw: str, field: dataclasses.Field[Any], source: str) -> Any:
    """``_convert``, with a start-up error naming the flag or variable when RAW does not fit."""
    try:
        return _convert(raw, field.default)
    except ValueError:
        kind = "a whole number" if isinstance(field.default, int) else "a number"
        raise ConfigError(f"{source} {raw!r}: expected {kind}") from None


def from_namespace(cls: type[S], args: argparse.Namespace | None = None, **overrides: Any) -> S:
    """Builds settings: explicit overrides, then flags, then environment, then defaults."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        flag_value = getattr(args, field.name, None) if args is not None else None
        if field.name in overrides:
            values[field.name] = overrides[field.name]
        elif flag_value is not None:
            flag = "--" + field.name.replace("_", "-")
            values[field.name] = _checked(str(flag_value), field, flag)
        elif env_name(field) in os.environ:
            values[field.name] = _checked(os.environ[env_name(field)], field, env_name(field))
    return cls(**values)


def parse_bank_map(text: str) -> dict[str, str]:
    """Parses ``name=host:port,name=host:port`` into a mapping."""
    banks: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, address = item.partition("=")
        if not sep or not name or not address:
            raise ValueError(f"bad bank entry {item!r}: expected NAME=HOST:PORT")
        banks[name.strip()] = address.strip()
    return banks


@dataclasses.dataclass(frozen=True)
class BankSettings:
    name: str = setting(
        "alpha", "the bank's unique name (its certificate's CN)", env="MINIPAY_BANK_NAME"
    )
    listen: str = setting(
        "", "address to serve on (default: this bank's entry in --banks)", env="MINIPAY_BANK_LISTEN"
    )
    banks: str = setting(DEFAULT_BANKS, "every bank as NAME=HOST:PORT, comma separated")
    gateway: str = setting(DEFAULT_GATEWAY, "the gateway's address, for asking 2PC decisions")
    data_dir: Path = setting(DEFAULT_DATA_DIR, "folder for databases and logs")
    database_url: str = setting(
        "",
        "SQLAlchemy URL (default: sqlite file in the data folder)",
        env="MINIPAY_BANK_DATABASE_URL",
    )
    seed: Path = setting(DEFAULT_SEED, "YAML seed file; only this bank's rows are loaded")
    txn_timeout: float = setting(5.0, "seconds a yes vote waits before asking the coordinator")
    recovery_interval: float = setting(2.0, "seconds between checks for undecided yes votes")
    bcrypt_rounds: int = setting(12, "bcrypt cost for new passwords")
    ca: Path = setting(DEV_CERTS / "ca.pem", "CA certificate that signs every peer")
    cert: Path = setting(Path(""), "certificate (default: certificate/dev/NAME.pem)")
    key: Path = setting(Path(""), "private key (default: certificate/dev/NAME-key.pem)")
    faults: str = setting("", "test-only fault injection points, comma separated (off by default)")
    log_level: str = setting("INFO", "log level")
    log_format: str = setting("json", "log format: json or text")
    stderr_log_level: str = setting(
        "", "log level on standard error (default: --log-level; the file gets --log-level)"
    )
    metrics_port: int = setting(
        0, "Prometheus metrics port (0: off)", env="MINIPAY_BANK_METRICS_PORT"
    )

    @property
    def listen_address(self) -> str:
        if self.listen:
            return self.listen
        banks = parse_bank_map(self.banks)
        if self.name not in banks:
            raise ConfigError(
                f"bank {self.name!r} is not in the bank list {self.banks!r}; add it there "
                "(--banks, MINIPAY_BANKS) or give its address with --listen"
            )
        return banks[self.name]

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / f'bank-{self.name}.db'}"

    @property
    def cert_path(self) -> Path:
        return self.cert if str(self.cert) not in {"", "."} else DEV_CERTS / f"{self.name}.pem"

    @property
    def key_path(self) -> Path:
        return self.key if str(self.key) not in {"", "."} else DEV_CERTS / f"{self.name}-key.pem"


@dataclasses.dataclass(frozen=True)
class GatewaySettings:
    listen: str = setting(DEFAULT_GATEWAY, "address to serve on", env="MINIPAY_GATEWAY_LISTEN")
    banks: str = setting(DEFAULT_BANKS, "every bank as NAME=HOST:PORT, comma separated")
    data_dir: Path = setting(DEFAULT_DATA_DIR, "folder for databases, the token key and logs")
    database_url: str = setting(
        "",
        "SQLAlchemy URL (default: sqlite file in the data folder)",
        env="MINIPAY_GATEWAY_DATABASE_URL",
    )
    txn_timeout: float = setting(5.0, "seconds phase one may take before the payment aborts")
    recovery_interval: float = setting(2.0, "seconds between passes that finish open payments")
    batch_max: int = setting(256, "most payments in one 2PC round (1: one round per payment)")
    seed: Path = setting(DEFAULT_SEED, "YAML seed file; its admins are added if missing")
    token_ttl: int = setting(900, "seconds a login token is valid")
    token_key: Path = setting(Path(""), "Ed25519 key that signs tokens (default: in data folder)")
    login_max_failures: int = setting(5, "failed logins for one username before a cool-down")
    login_window: float = setting(300.0, "seconds over which failed logins are counted")
    login_cooldown: float = setting(60.0, "seconds a throttled username must wait")
    idempotency_ttl: int = setting(86400, "seconds an idempotency key is remembered")
    bcrypt_rounds: int = setting(12, "bcrypt cost for admin passwords")
    ca: Path = setting(DEV_CERTS / "ca.pem", "CA certificate that signs every peer")
    cert: Path = setting(DEV_CERTS / "gateway.pem", "the gateway's certificate")
    key: Path = setting(DEV_CERTS / "gateway-key.pem", "the gateway's private key")
    faults: str = setting("", "test-only fault injection points, comma separated (off by default)")
    log_level: str = setting("INFO", "log level")
    log_format: str = setting("json", "log format: json or text")
    stderr_log_level: str = setting(
        "", "log level on standard error (default: --log-level; the file gets --log-level)"
    )
    metrics_port: int = setting(
        0, "Prometheus metrics port (0: off)", env="MINIPAY_GATEWAY_METRICS_PORT"
    )

    @property
    def bank_addresses(self) -> dict[str, str]:
        return parse_bank_map(self.banks)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'gateway.db'}"

    @property
    def token_key_path(self) -> Path:
        return (
            self.token_key
            if str(self.token_key) not in {"", "."}
            else (self.data_dir / "gateway-token-key.pem")
        )


def parse_settings(cls: type[S], argv: Sequence[str] | None, prog: str, description: str) -> S:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser, cls)
    return from_namespace(cls, parser.parse_args(argv))
