"""Fixtures that start real clusters: real processes on free loopback ports, real
certificates from a CA made for the test run, real databases in a temporary folder (and
PostgreSQL databases when MINIPAY_TEST_POSTGRES_URL points at a server)."""

from __future__ import annotations

import asyncio
import json
import os

# gRPC's own log lines (a refused TLS handshake in an in-process server, by design in the
# identity tests) would land among pytest's dots: errors only. Set before grpc loads.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from certificate.ca import ensure_dev_pki
from devtools.cluster import GATEWAY, Cluster
from tests.helpers import (
    client_config,
    log_in_everyone,
    postgres_available,
    postgres_databases,
    server_env,
)
from tests.inprocess import InProcessCluster

# Prints the console tests' render times and screenshot folder at the end of a run.
pytest_plugins = ("tests.console.report",)

# Fast enough for tests; production keeps the default bcrypt cost of 12.
TEST_ENV = server_env(bcrypt_rounds=4, log_format="json", txn_timeout=3, recovery_interval=0.5)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "in_process: make_cluster and cluster start the servers in the test's own process "
        "(tests/inprocess.py), for tests of the gRPC surface rather than of processes, logs, "
        "signals or crashes",
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bank-test-seconds", type=float, default=20.0, help="length of the randomized bank test"
    )
    parser.addoption("--bank-test-seed", type=int, default=0, help="seed (0: random)")


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    ensure_dev_pki(folder, clients=("client-1", "client-2", "client-3"))
    return folder


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and not postgres_available():
        pytest.skip("no PostgreSQL server: set MINIPAY_TEST_POSTGRES_URL to run these")
    return str(request.param)


ClusterFactory = Callable[..., Cluster]


def new_cluster(
    stack: ExitStack,
    kind: type[Cluster],
    folder: Path,
    certs: Path,
    backend: str = "sqlite",
    env: dict[str, str] | None = None,
    **options: Any,
) -> Cluster:
    """A cluster (not started) in FOLDER with the tests' settings and ENV, its databases on
    BACKEND; STACK stops it (and drops its PostgreSQL databases)."""
    banks = options.pop("bank_names", ("alpha", "beta", "gamma"))
    urls: dict[str, str] = {}
    if backend == "postgres":
        urls = stack.enter_context(postgres_databases([GATEWAY, *banks]))
    cluster = kind(
        folder,
        bank_names=banks,
        database_urls=urls,
        env={**TEST_ENV, **(env or {})},
        certs=certs,
        **options,
    )
    stack.callback(cluster.stop)
    return cluster


@pytest.fixture
def make_cluster(
    request: pytest.FixtureRequest, tmp_path: Path, certs: Path
) -> Iterator[ClusterFactory]:
    """Starts clusters on demand; every one is stopped (and its databases dropped) after.
    Real processes, unless the test is marked ``in_process``."""
    stack = ExitStack()
    count = 0
    kind = InProcessCluster if request.node.get_closest_marker("in_process") else Cluster

    def start(
        backend: str = "sqlite",
        env: dict[str, str] | None = None,
        faults: dict[str, str] | None = None,
        started: bool = True,
        **options: Any,
    ) -> Cluster:
        nonlocal count
        count += 1
        cluster = new_cluster(
            stack, kind, tmp_path / f"cluster-{count}", certs, backend, env, **options
        )
        if started:
            cluster.start(faults)
        return cluster

    with stack:
        yield start


@pytest.fixture
def cluster(make_cluster: ClusterFactory) -> Cluster:
    return make_cluster()


class ModuleClusters:
    """The clusters the tests of a module share, one per set of settings: started when first
    asked for, stopped after the module's last test (or as soon as a test using one fails)."""

    def __init__(self, folder: Path, certs: Path) -> None:
        self.folder, self.certs = folder, certs
        self.clusters: dict[str, tuple[Cluster, ExitStack]] = {}
        self.started = 0

    def get(self, backend: str, env: dict[str, str] | None, options: dict[str, Any]) -> str:
        """The key of the cluster with these settings, started (every seed customer
        registered) and every process of it serving."""
        key = json.dumps([backend, env or {}, options], sort_keys=True)
        if key not in self.clusters:
            self.started += 1
            folder = self.folder / f"shared-{self.started}"
            with ExitStack() as stack:  # stopped at once if it does not start
                cluster = new_cluster(stack, Cluster, folder, self.certs, backend, env, **options)
                cluster.start()
                asyncio.run(log_in_everyone(client_config(cluster, self.certs)))
                self.clusters[key] = (cluster, stack.pop_all())
        cluster = self.clusters[key][0]
        for name in cluster.names:  # a test that passed left each one serving; make sure
            process = cluster.processes.get(name)
            if process is None or process.poll() is not None:
                cluster.start_process(name)
            cluster.wait_ready(name)
        return key

    def discard(self, key: str) -> None:
        self.clusters.pop(key)[1].close()

    def close(self) -> None:
        for key in list(self.clusters):
            self.discard(key)


@pytest.fixture(scope="module")
def module_clusters(
    tmp_path_factory: pytest.TempPathFactory, certs: Path
) -> Iterator[ModuleClusters]:
    shared = ModuleClusters(tmp_path_factory.mktemp("shared"), certs)
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def shared_cluster(
    request: pytest.FixtureRequest, module_clusters: ModuleClusters
) -> Iterator[ClusterFactory]:
    """A started cluster of real processes, shared by the tests of this module that ask for
    the same settings (``backend``, ``env``, Cluster's options): for tests that each kill a
    process (at a crash point, or with kill -9) and start it again, whose cluster's start
    would be most of their time. Every seed customer is registered (log in with
    ``customer(..., register=False)``); payments and balances are what earlier tests left,
    so a test judges what it changed itself. Each process serves when the test gets it; a
    cluster whose test failed is stopped, and the next test asking gets a new one."""
    failures = request.session.testsfailed
    used: list[str] = []

    def get(backend: str = "sqlite", env: dict[str, str] | None = None, **options: Any) -> Cluster:
        used.append(module_clusters.get(backend, env, options))
        return module_clusters.clusters[used[-1]][0]

    yield get
    if request.session.testsfailed > failures:
        for key in dict.fromkeys(used):
            module_clusters.discard(key)
