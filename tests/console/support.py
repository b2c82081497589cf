"""What the console's tests share: the console served in-process (uvicorn in a thread, on a
loopback socket bound first), calls through the client library from a thread of their own,
people made for one test, and reading what the console's memory holds."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette

from console.app import create_app
from console.settings import ConsoleSettings
from console.web import Console
from devtools.cluster import Cluster
from tests.helpers import Client, admin

T = TypeVar("T")


class LiveConsole:
    """The console app under a real uvicorn, in a thread; ``stop`` ends open event streams
    first, as ``python -m console`` does on SIGTERM."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.app: Starlette = create_app(settings)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        self.url = f"{'https' if settings.https else 'http'}://127.0.0.1:{port}"
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=2,
            ssl_certfile=str(settings.https_cert) if settings.https else None,
            ssl_keyfile=str(settings.https_key) if settings.https else None,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def state(self) -> Console:
        console: Console = self.app.state.console
        return console

    def start(self) -> LiveConsole:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the console did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> float:
        started = time.monotonic()
        self.state.streams.stopping.set()
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "the console did not stop"
        return time.monotonic() - started

    def token_of(self, username: str) -> str:
        """The gateway token the console keeps for USERNAME's (one) session."""
        tokens = [
            s.token for s in list(self.state.sessions._sessions.values()) if s.username == username
        ]
        assert len(tokens) == 1, f"{len(tokens)} sessions for {username}"
        return tokens[0]


def console_settings(cluster: Cluster, certs: Path, **values: Any) -> ConsoleSettings:
    return ConsoleSettings(
        listen="127.0.0.1:0",
        gateway=cluster.gateway_address,
        ca=certs / "services-ca.pem",
        cert=certs / "console.pem",
        key=certs / "console-key.pem",
        timeout=15,
        **values,
    ).check()


class Api:
    """The client library, called from a thread of its own: Playwright's synchronous API
    keeps an event loop in the test's thread, where asyncio.run is refused."""

    def __init__(self, cluster: Cluster, certs: Path) -> None:
        self.cluster = cluster
        self.certs = certs
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="api")
        self._admin: Client | None = None

    def run(self, work: Callable[[], T]) -> T:
        return self._pool.submit(work).result(timeout=120)

    def admin(self) -> Client:
        if self._admin is None:
            self._admin = self.run(lambda: admin(self.cluster, self.certs))
        return self._admin

    def client(self, cert: str = "client-1", token: str = "") -> Client:
        return Client(self.cluster, self.certs, cert, token=token)

    def call(self, client: Client, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.run(lambda: getattr(client, method)(*args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown()


@dataclass(frozen=True)
class Person:
    username: str
    password: str
    bank: str
    account: str


def new_customer(api: Api, balance_minor_units: int = 10000, bank: str = "alpha") -> Person:
    """A customer made for one test (created by the admin, registered), with BALANCE."""
    tag = uuid.uuid4().hex[:8]
    person = Person(f"c-{tag}", f"pass-{tag}", bank, f"{bank[0].upper()}-T{tag}")
    api.call(
        api.admin(),
        "create_user",
        username=person.username,
        name=f"Test {tag}",
        password=person.password,
        bank=bank,
        account=person.account,
        balance_minor_units=balance_minor_units,
    )
    api.call(api.client(), "register", person.username, person.password, bank, person.account)
    return person


def logged_in(api: Api, person: Person, cert: str = "client-1") -> Client:
    client = api.client(cert)
    api.call(client, "login", person.username, person.password)
    return client
