"""The console's settings: one dataclass, filled from flags, then ``MINIPAY_CONSOLE_*``
variables, then the documented defaults (the same pattern as the servers' settings, kept
here because the console, like the CLIs, imports nothing from ``server/``).

Each field documents itself through ``setting()``: the flag is the field name in kebab case,
the variable ``MINIPAY_CONSOLE_`` plus the field name in capitals. ``check()`` refuses what
would be unsafe or cannot work, before anything listens: a listen address off loopback
without ``--allow-remote`` and an HTTPS certificate, unreadable certificate files, numbers
out of range.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from minipay.client import ClientConfig
from minipay.client.api import DEFAULT_GATEWAY, DEV_CERTS, dev_certificate

PREFIX = "MINIPAY_CONSOLE_"
DEFAULT_LISTEN = "127.0.0.1:8080"
# The certificate the console presents to the gateway: every console user's token is bound to it.
DEFAULT_CERT_NAME = "console"


class SettingsError(Exception):
    """A setting that cannot be used: one line for the operator, exit status 2."""


def setting(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class ConsoleSettings:
    listen: str = setting(DEFAULT_LISTEN, "host:port to serve the console on (port 0: any free)")
    allow_remote: bool = setting(
        False, "serve on an address other than loopback (needs --https-cert and --https-key)"
    )
    gateway: str = setting(
        DEFAULT_GATEWAY, "the gateway's address, or several replicas' separated by commas"
    )
    # The dev certificates in a checkout; elsewhere they must be given.
    ca: Path = setting(
        dev_certificate("services-ca.pem") or Path(""), "CA that signs the gateway's certificate"
    )
    cert: Path = setting(
        dev_certificate(f"{DEFAULT_CERT_NAME}.pem") or Path(""),
        "the console's own client certificate",
    )
    key: Path = setting(
        dev_certificate(f"{DEFAULT_CERT_NAME}-key.pem") or Path(""), "the console's private key"
    )
    https_cert: Path = setting(Path(""), "serve HTTPS with this certificate (PEM)")
    https_key: Path = setting(Path(""), "the HTTPS certificate's private key (PEM)")
    session_lifetime: float = setting(
        900.0, "most seconds a sign-in lasts (never longer than the gateway's token)"
    )
    timeout: float = setting(10.0, "seconds to wait for the gateway, per attempt")
    attempts: int = setting(3, "attempts per gateway call when it is unavailable")
    login_max_failures: int = setting(
        5, "failed sign-ins for one username per window before a cool-down (as the gateway)"
    )
    login_client_max_failures: int = setting(
        10, "failed sign-ins from one browser address per window before a cool-down"
    )
    login_window: float = setting(300.0, "seconds over which failed sign-ins are counted")
    login_cooldown: float = setting(60.0, "seconds a throttled username or address waits")
    max_sessions: int = setting(10000, "most sign-ins kept at once")
    log_level: str = setting("INFO", "log level of the console's log on standard error")

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def https(self) -> bool:
        return _given(self.https_cert)

    def client_config(self) -> ClientConfig:
        """How the console's one channel reaches the gateway."""
        return ClientConfig(
            gateway=self.gateway,
            ca=self.ca,
            cert=self.cert,
            key=self.key,
            timeout=self.timeout,
            max_attempts=self.attempts,
        )

    def check(self) -> ConsoleSettings:
        """Raises SettingsError unless these settings can be served safely."""
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise SettingsError(f"--listen {self.listen!r}: expected host:port")
        if not is_loopback(self.host) and not self.allow_remote:
            raise SettingsError(
                f"--listen {self.listen!r} is not a loopback address: the console serves "
                "loopback only unless given --allow-remote (with --https-cert and --https-key)"
            )
        if not is_loopback(self.host) and not self.https:
            raise SettingsError(
                f"--listen {self.listen!r}: off loopback the console serves HTTPS only "
                "(passwords cross the network); give --https-cert and --https-key"
            )
        if _given(self.https_cert) != _given(self.https_key):
            raise SettingsError("--https-cert and --https-key go together")
        positive = {
            "session-lifetime": self.session_lifetime,
            "timeout": self.timeout,
            "attempts": self.attempts,
            "login-max-failures": self.login_max_failures,
            "login-client-max-failures": self.login_client_max_failures,
            "login-window": self.login_window,
            "login-cooldown": self.login_cooldown,
            "max-sessions": self.max_sessions,
        }
        for flag, value in positive.items():
            if value <= 0:
                raise SettingsError(f"--{flag} {value}: must be greater than zero")
        files = [(self.ca, "CA certificate"), (self.cert, "certificate"), (self.key, "key")]
        if self.https:
            files += [(self.https_cert, "HTTPS certificate"), (self.https_key, "HTTPS key")]
        for path, what in files:
            if not os.access(path, os.R_OK):
                raise SettingsError(f"cannot read the console's {what} {path}{_hint(path)}")
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _given(path: Path) -> bool:
    return str(path) not in ("", ".")


def _hint(path: Path) -> str:
    if DEV_CERTS is not None and path.parent == DEV_CERTS:
        return " (make certs writes the dev certificates)"
    return ""


def variable(name: str) -> str:
    return PREFIX + name.upper()


def _convert(raw: str, default: Any, source: str) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        kind = "a whole number" if isinstance(default, int) else "a number"
        raise SettingsError(f"{source} {raw!r}: expected {kind}") from None
    if isinstance(default, Path):
        return Path(raw)
    return raw


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog="python -m console",
        description="The minipay web console: a browser client of the gateway.",
        epilog=f"Every flag is also a {PREFIX}* variable, e.g. {variable('listen')}.",
    )
    for field in dataclasses.fields(ConsoleSettings):
        flag = "--" + field.name.replace("_", "-")
        help = f"{field.metadata['help']} ({variable(field.name)}; default: {field.default})"
        if isinstance(field.default, bool):
            result.add_argument(flag, action="store_true", default=None, help=help)
        else:
            result.add_argument(flag, default=None, metavar=field.name.upper(), help=help)
    return result


def from_arguments(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> ConsoleSettings:
    """Flags first, then variables, then defaults; checked. Raises SettingsError."""
    args = parser().parse_args(argv)
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for field in dataclasses.fields(ConsoleSettings):
        given = getattr(args, field.name)
        if given is not None and given is not False:
            flag = "--" + field.name.replace("_", "-")
            values[field.name] = given if given is True else _convert(given, field.default, flag)
        elif env.get(variable(field.name)):
            raw = env[variable(field.name)]
            values[field.name] = _convert(raw, field.default, variable(field.name))
    return ConsoleSettings(**values).check()
