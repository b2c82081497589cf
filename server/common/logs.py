"""Log set-up for every process: JSON lines (or text) to standard error and to a file per
component, with secrets redacted wherever they would appear."""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import json
import logging
import queue
import re
import sys
import threading
import time
from typing import Any, TextIO

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
# One record, one line, whoever reads it: control characters (C0, DEL, C1) and every other
# character str.splitlines splits on (NEL, U+2028, U+2029...) never reach a text log as they
# are, so that no field can start a forged record.
LINE_BREAKS = "\n\v\f\r\x1c\x1d\x1e\x85\u2028\u2029"  # str.splitlines' own list
_ESCAPED = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in sorted({*range(0x20), *range(0x7F, 0xA0), *map(ord, LINE_BREAKS)})
}


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
        # Lists of ids are the long ones (a round's payments): strings need no walk.
        if all(type(v) is str for v in value):
            return value
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
    items = getattr(request, "items", None)
    if items is not None and not callable(items):  # a batch: how many, not each
        fields["items"] = len(items)
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


_JSON = json.JSONEncoder(default=str)  # made once: json.dumps with options makes one a call


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
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
        return redact_text(_JSON.encode(redact(entry)))


class TextFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__("%(asctime)s %(levelname)s " + component + " %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = redact(getattr(record, "fields", {}))
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return redact_text(text).translate(_ESCAPED)


class _FormatThenEnqueue(logging.Handler):
    """Formats in the caller's thread (tracebacks and request ids are there), then queues the
    line for the writer."""

    def __init__(self, writer: _Writer, formatter: logging.Formatter) -> None:
        super().__init__()
        self._writer = writer
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self._writer.lines.put((record.levelno, self.format(record)))

    def handle(self, record: logging.LogRecord) -> bool:
        # No lock: formatting touches only the record, and the queue is thread-safe.
        self.emit(record)
        return True


class _Writer(threading.Thread):
    """Writes queued lines to standard error and the log file from a thread of its own, as
    many as are waiting in one write and one flush per stream."""

    _STOP = (0, "")

    def __init__(self, outputs: list[tuple[TextIO, int]]) -> None:
        super().__init__(name="log-writer", daemon=True)
        self.lines: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        self._outputs = outputs

    def run(self) -> None:
        while True:
            batch = [self.lines.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 1000:
                    batch.append(self.lines.get_nowait())
            stopping = self._STOP in batch
            for stream, level in self._outputs:
                text = "".join(line + "\n" for levelno, line in batch if line and levelno >= level)
                if text:
                    with contextlib.suppress(OSError, ValueError):
                        stream.write(text)
                        stream.flush()
            if stopping:
                return

    def stop(self) -> None:
        self.lines.put(self._STOP)
        self.join(timeout=5)


_writer: _Writer | None = None


def stop_log_writer() -> None:
    """Writes every queued record and stops the writer (before exit, or a crash point)."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None


def configure_logging(settings: ProcessSettings) -> None:
    """Logs of a server process, as its settings say: to standard error and to its file."""
    component, fmt, log_dir = settings.process_name, settings.log_format, settings.log_dir
    level = logging.getLevelName(settings.log_level.upper())
    stderr_level = logging.getLevelName((settings.stderr_log_level or settings.log_level).upper())
    if fmt not in ("json", "text"):
        raise ConfigError(f"log format {fmt!r}: expected json or text")
    if not isinstance(level, int) or not isinstance(stderr_level, int):
        raise ConfigError(f"log level {settings.log_level!r}: expected DEBUG, INFO, WARNING...")
    formatter: logging.Formatter = (
        JsonFormatter(component) if fmt == "json" else TextFormatter(component)
    )
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = (log_dir / f"{component}.log").open("a", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write logs in {log_dir}: {exc.strerror or exc}") from None
    # A record needs no caller's file and line, thread or process: finding them costs more
    # than writing the record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level)
    # The caller only formats and enqueues; a thread of its own writes. Writing in the
    # event loop's thread costs a system call per record and hands the interpreter lock to
    # the database thread each time, which made logging half of the gateway's cost.
    global _writer
    stop_log_writer()
    _writer = _Writer([(sys.stderr, stderr_level), (log_file, level)])
    _writer.start()
    root.addHandler(_FormatThenEnqueue(_writer, formatter))
    atexit.register(stop_log_writer)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def event(logger: logging.Logger, name: str, **fields: Any) -> None:
    """Logs one named event (a 2PC step, a recovery action) with its fields."""
    logger.info(name, extra={"fields": fields})
