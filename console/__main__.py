"""python -m console: serves the web console under uvicorn until Ctrl-C or SIGTERM.

Prints one line with the address it serves on (the real port when given port 0). A setting
that cannot be used is one line on standard error and exit status 2, before anything listens.
The log (one JSON object per line on standard error) has a record per request and never a
password, a token or a cookie.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn

from console.app import create_app
from console.settings import ConsoleSettings, SettingsError, from_arguments
from console.web import Console
from minipay.client.logs import LOGGER as CLIENT_LOGGER
from minipay.client.logs import JsonFormatter

EXIT_SETTINGS = 2


class ConsoleServer(uvicorn.Server):
    """uvicorn, saying where it serves once it does; and since uvicorn waits for open
    responses before it stops, telling the event streams first."""

    def __init__(self, config: uvicorn.Config, console: Console, address: str) -> None:
        super().__init__(config)
        self.console = console
        self.address = address

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"console: serving on {self.address} (gateway {self.console.settings.gateway})")
            sys.stdout.flush()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.console.streams.stopping.set()
        super().handle_exit(sig, frame)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component="console"))
    for name, wanted in (("console", level), (CLIENT_LOGGER, "WARNING"), ("uvicorn", "WARNING")):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(wanted.upper())
        logger.propagate = False


def bind(settings: ConsoleSettings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    return sock


def serve(settings: ConsoleSettings) -> None:
    app = create_app(settings)
    sock = bind(settings)
    host, port = sock.getsockname()[:2]
    scheme = "https" if settings.https else "http"
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,  # the console logs each request itself, without its query
        server_header=False,
        timeout_graceful_shutdown=2,  # a stream that ignores the stop flag cannot hold us
        ssl_certfile=str(settings.https_cert) if settings.https else None,
        ssl_keyfile=str(settings.https_key) if settings.https else None,
        log_config=None,
    )
    ConsoleServer(config, app.state.console, f"{scheme}://{shown}:{port}").run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = from_arguments(argv)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_SETTINGS
    configure_logging(settings.log_level)
    try:
        serve(settings)
    except OSError as error:
        print(
            f"error: cannot serve on {settings.listen}: {error.strerror or error}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
