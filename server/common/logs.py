"""Log set-up for every process: JSON lines (or text) to standard error and to a file per
component, with secrets redacted wherever they would appear."""

from __future__ import annotations

import atexit
import contextvars
import functools
import json
import logging
import logging.handlers
import queue
import re
import sys
import time
from typing import Any

from server.common.errors import ConfigError
from server.common.settings import ProcessSettings

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("minipay_request_id", default="")

SECRET_KEYS = re.compile(r"password|token|secret|authorization|private|hash|key$", re.I)
# Bearer tokens and JWTs, wherever they appear in free text.
SECRET_TEXT = re.compile(r"(Bearer\s+)?eyJ[\w-]+\.[\w-]+\.[\w-]*|\$2[aby]\$\d\d\$[./\w]{53}")
REDACTED = "[redacted]"

# Request fields worth a log line: identifiers and amounts, never credentials.
_LOGGED_FIELDS = ("payment_id", "idempotency_key", "username", "bank", "account")
# A field taken from a request before it is validated is cut to this many characters.
MAX_LOGGED_TEXT = 80
# Control characters (a newline in a username...) never reach a text log as they are.
_ESCAPED = {code: f"\\x{code:02x}" for code in [*range(32), 127]}


@functools.lru_cache(maxsize=1024)
def _is_secret_key(key: str) -> bool:
    return key != "idempotency_key" and bool(SECRET_KEYS.search(key))


def redact(value: Any, key: str = "") -> Any:
    """VALUE with the values of secret-looking keys replaced (free text: ``redact_text``)."""
    if key and _is_secret_key(key):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redact_text(text: str) -> str:
    """TEXT with tokens and password hashes removed; cheap when there are none."""
    if "eyJ" in text or "$2" in text:
        return SECRET_TEXT.sub(REDACTED, text)
    return text


def bounded(text: str, limit: int = MAX_LOGGED_TEXT) -> str:
    """TEXT cut to LIMIT characters: what a caller sends is logged, but never without end."""
    return text if len(text) <= limit else text[:limit] + f"...[{len(text)} chars]"


def describe_request(request: Any) -> dict[str, Any]:
    """The identifiers and amount in a request message, for the call's log record; every
    text is bounded, since nothing is validated yet."""
    fields: dict[str, Any] = {}
    for name in _LOGGED_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            fields[name] = bounded(value)
    for name in ("amount", "initial_balance"):
        money = getattr(request, name, None)
        if money is not None and hasattr(money, "minor_units") and request.HasField(name):
            fields["amount_minor_units"] = money.minor_units
            fields["currency"] = bounded(money.currency, 8)
    to = getattr(request, "to", None)
    if to is not None and hasattr(to, "bank") and request.HasField("to"):
        fields["to"] = bounded(f"{to.bank}/{to.account}")
    ids = getattr(request, "payment_ids", None)
    if ids:
        fields["payment_ids"] = [bounded(pid) for pid in ids]
    legs = getattr(request, "legs", None)
    if legs:
        fields["payment_ids"] = sorted({bounded(leg.payment_id) for leg in legs})
    return fields


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class _FormatOnce(logging.Formatter):
    """Both writers (standard error and the file) format each record: do it once."""

    def format(self, record: logging.LogRecord) -> str:
        formatted = getattr(record, "_minipay_formatted", None)
        if formatted is None:
            formatted = self._format(record)
            record._minipay_formatted = formatted
        return str(formatted)

    def _format(self, record: logging.LogRecord) -> str:
        raise NotImplementedError


class JsonFormatter(_FormatOnce):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def _format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_second(int(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "event": record.getMessage(),
        }
        if REQUEST_ID.get():
            entry["request_id"] = REQUEST_ID.get()
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(redact(entry), default=str))


class TextFormatter(_FormatOnce):
    def __init__(self, component: str) -> None:
        super().__init__("%(asctime)s %(levelname)s " + component + " %(message)s")

    def _format(self, record: logging.LogRecord) -> str:
        text = logging.Formatter.format(self, record)
        fields = redact(getattr(record, "fields", {}))
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        # One record, one line: a newline in a field must not forge another record.
        return redact_text(text).translate(_ESCAPED)


class _FormatThenEnqueue(logging.handlers.QueueHandler):
    """Formats in the caller's thread (tracebacks and request ids are there), then queues."""

    def __init__(
        self, records: queue.SimpleQueue[logging.LogRecord], formatter: logging.Formatter
    ) -> None:
        super().__init__(records)
        self.setFormatter(formatter)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        self.format(record)  # cached on the record for the writing handlers
        return record


_listener: logging.handlers.QueueListener | None = None


def stop_log_writer() -> None:
    """Writes every queued record and stops the writer (before exit, or a crash point)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def configure_logging(settings: ProcessSettings) -> None:
    """Logs of a server process, as its settings say: to standard error and to its file."""
    component, fmt, log_dir = settings.process_name, settings.log_format, settings.log_dir
    level, stderr_level = settings.log_level, settings.stderr_log_level
    if fmt not in ("json", "text"):
        raise ConfigError(f"log format {fmt!r}: expected json or text")
    formatter: logging.Formatter = (
        JsonFormatter(component) if fmt == "json" else TextFormatter(component)
    )
    to_stderr = logging.StreamHandler(sys.stderr)
    if stderr_level:
        to_stderr.setLevel(stderr_level.upper())
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_dir / f"{component}.log")
    except OSError as exc:
        raise ConfigError(f"cannot write logs in {log_dir}: {exc.strerror or exc}") from None
    handlers: list[logging.Handler] = [to_stderr, to_file]
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level.upper())
    # The caller only formats and enqueues; a thread of its own writes. Writing in the
    # event loop's thread costs a system call per record and hands the interpreter lock to
    # the database thread each time, which made logging half of the gateway's cost.
    global _listener
    stop_log_writer()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root.addHandler(_FormatThenEnqueue(records, formatter))
    _listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    _listener.start()
    atexit.register(stop_log_writer)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def event(logger: logging.Logger, name: str, **fields: Any) -> None:
    """Logs one named event (a 2PC step, a recovery action) with its fields."""
    logger.info(name, extra={"fields": fields})
