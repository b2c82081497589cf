"""Fixtures that start real clusters: real processes on free loopback ports, real
certificates from a CA made for the test run, real databases in a temporary folder (and
PostgreSQL databases when MINIPAY_TEST_POSTGRES_URL points at a server)."""

from __future__ import annotations

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
from tests.helpers import postgres_available, postgres_databases, server_env
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
        banks = options.pop("bank_names", ("alpha", "beta", "gamma"))
        urls: dict[str, str] = {}
        if backend == "postgres":
            urls = stack.enter_context(postgres_databases([GATEWAY, *banks]))
        cluster = kind(
            tmp_path / f"cluster-{count}",
            bank_names=banks,
            database_urls=urls,
            env={**TEST_ENV, **(env or {})},
            certs=certs,
            **options,
        )
        stack.callback(cluster.stop)
        if started:
            cluster.start(faults)
        return cluster

    with stack:
        yield start


@pytest.fixture
def cluster(make_cluster: ClusterFactory) -> Cluster:
    return make_cluster()
