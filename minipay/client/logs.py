"""The client's own log: one JSON line per call attempt and per retry, in
MINIPAY_HOME/logs/client.log (and on standard error with --verbose).

Only metadata is logged: identifiers, amounts, status codes and timings. Request fields are
picked from a short list (never a password), and any field whose name looks secret is
dropped before writing, as a second line of defence. Nothing here imports the servers' code:
the client is installed on its own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

LOGGER = "minipay.client"
# A library logs nowhere until its user says where: without this, Python's last-resort
# handler would print a bare "call" on stderr for every failed call of a script.
logging.getLogger(LOGGER).addHandler(logging.NullHandler())

# The request fields worth a log line: identifiers only, never credentials.
_LOGGED_FIELDS = ("payment_id", "idempotency_key", "username", "bank", "account")
_MONEY_FIELDS = ("amount", "initial_balance")
_SECRET_KEY = re.compile(r"password|token|secret|authorization|private|key$", re.IGNORECASE)
_PUBLIC_KEYS = frozenset({"idempotency_key"})


def describe_request(request: Any) -> dict[str, Any]:
    """The identifiers and the amount of a request message, for its call's log record."""
    fields: dict[str, Any] = {}
    for name in _LOGGED_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            fields[name] = value
    for name in _MONEY_FIELDS:
        money = getattr(request, name, None)
        if money is not None and hasattr(money, "minor_units") and request.HasField(name):
            fields["amount_minor_units"] = money.minor_units
            fields["currency"] = money.currency
    account = getattr(request, "account", None)
    if account is not None and hasattr(account, "bank") and request.HasField("account"):
        fields["account"] = f"{account.bank}/{account.account}"
    to = getattr(request, "to", None)
    if to is not None and hasattr(to, "bank") and request.HasField("to"):
        fields["to"] = f"{to.bank}/{to.account}"
    items = getattr(request, "items", None)
    if items is not None and not callable(items):  # a batch: how many, not each
        fields["items"] = len(items)
    return fields


def _is_secret(key: str) -> bool:
    return key not in _PUBLIC_KEYS and bool(_SECRET_KEY.search(key))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, component, event and the record's fields."""

    def __init__(self, component: str = "client") -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "time": f"{created}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields: dict[str, Any] = getattr(record, "fields", {})
        entry.update({k: v for k, v in fields.items() if not _is_secret(k)})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_client_logging(home: Path, verbose: bool) -> None:
    """JSON lines to HOME/logs/client.log; to standard error too when VERBOSE. Calling it
    again replaces the handlers it added before."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_minipay_client", False):
            logger.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = []
    try:
        (home / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
        path = home / "logs" / "client.log"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # owner only
        handlers.append(logging.FileHandler(path))
    except OSError:
        pass  # logging must never stop a command
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in handlers:
        handler._minipay_client = True  # type: ignore[attr-defined]
        handler.setFormatter(JsonFormatter("client"))
        logger.addHandler(handler)
