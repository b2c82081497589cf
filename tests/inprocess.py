"""A cluster whose servers run in the test's own process: the middle layer of tests.

Each server is the real one (``server.gateway.app.run_server``, ``server.bank.app.run_server``)
with the settings a process of ``devtools.cluster.Cluster`` would read from its environment:
mutual TLS with the test run's certificates, its own SQLite database, the same interceptors,
servicers and permission table, on loopback. They share one asyncio event loop on a thread of
their own; the tests call them over gRPC from the main thread, exactly as a client process
would. What is left out is the process: no interpreter start-up and imports per server (the
bulk of a cluster's start), no log files, no kill -9. Tests about processes, logs, signals,
crashes or PostgreSQL keep ``make_cluster``; a test that asks this one for a kill fails.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from devtools.cluster import Cluster
from server.bank import app as bank_app
from server.common.settings import BankSettings, GatewaySettings, from_namespace
from server.gateway import app as gateway_app

T = TypeVar("T")
START_TIMEOUT = 60.0


class Server(Protocol):
    async def stop(self, grace: float = ...) -> None: ...


@dataclass
class InProcessCluster(Cluster):
    """``Cluster``'s addresses, settings and database files, its servers in this process."""

    servers: dict[str, Server] = field(default_factory=dict, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop, init=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def _run(self, work: Coroutine[Any, Any, T], timeout: float = START_TIMEOUT) -> T:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="in-process servers", daemon=True
            )
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)

    def start_process(self, name: str, faults: str = "") -> None:
        if "crash" in faults:
            raise ValueError("a crash point ends its process: use make_cluster, unmarked")
        settings = from_namespace(self.settings_class(name), env=self.environment(name, faults))
        if isinstance(settings, GatewaySettings):
            self.servers[name] = self._run(gateway_app.run_server(settings))
        else:
            assert isinstance(settings, BankSettings)
            self.servers[name] = self._run(bank_app.run_server(settings))

    def kill(self, name: str) -> None:
        raise NotImplementedError("kill -9 needs a process: use make_cluster")

    def stop(self) -> None:
        """Stops every server (the gateway first, as its calls to the banks end), then the
        event loop."""
        for name in sorted(self.servers, key=self.is_gateway, reverse=True):
            self._run(self.servers.pop(name).stop(), timeout=30.0)
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30.0)
            self._thread = None
        self._loop.close()


@contextmanager
def in_process_cluster(folder: Path, certs: Path, env: dict[str, str]) -> Iterator[Cluster]:
    """An in-process cluster started in FOLDER for a module's tests, stopped whatever
    happens."""
    cluster = InProcessCluster(folder, env=dict(env), certs=certs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
