"""The foundation every other feature stands on: mutual TLS refuses what it must (plaintext,
no client certificate, a certificate from another CA), health and reflection answer, the
migrations go up and down on SQLite and PostgreSQL, seed loading is idempotent across a
restart, bad start-up input ends the process with one ``error:`` line and no traceback, and
every command-line entry point answers ``--help``.

The servers run as real processes on loopback (see ``devtools/cluster.py``). The start-up
errors call a server's own ``main(argv)`` in this process (the settings, the checks and the
``error:`` line are the same; a second of imports per case is not), a sample of them runs as
processes, and so does every start-up error of the launcher (``test_devtools.py``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from alembic.config import Config
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import MetaData, create_engine, func, inspect, select

from alembic import command
from certificate.ca import SERVICES_CA, ensure_dev_pki
from devtools.cluster import GATEWAY, SETTINGS_PREFIX, Cluster
from devtools.scratch import free_port
from server.bank.models import Base as BankBase
from server.bank.models import Customer
from server.common.logs import stop_log_writer
from server.common.settings import (
    BankSettings,
    GatewaySettings,
    ProcessSettings,
    environment,
    variable,
)
from server.common.tls import TlsFiles, channel_credentials, channel_options
from server.gateway.models import Admin
from server.gateway.models import Base as GatewayBase
from tests import test_permissions as permissions
from tests.conftest import TEST_ENV, ClusterFactory
from tests.helpers import (
    COMMITTED,
    SEED_BALANCES,
    assert_books_balance,
    bank_state,
    bank_url,
    certificate_files,
    channel,
    customer,
    gateway_url,
    only_variables,
    postgres_databases,
    running_cluster,
    server_name,
    settle,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVING = health_pb2.HealthCheckResponse.SERVING
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
GATEWAY_SERVICES = (
    "minipay.v1.Auth",
    "minipay.v1.Payments",
    "minipay.v1.Coordinator",
    "minipay.v1.Admin",
    "minipay.v1.Events",
)
BANK_SERVICES = ("minipay.v1.Participant", "minipay.v1.Accounts", "minipay.v1.Ledger")
SERVICES = {GATEWAY: GATEWAY_SERVICES, "alpha": BANK_SERVICES, "beta": BANK_SERVICES}
TARGETS = (GATEWAY, "alpha")
METADATA: dict[str, MetaData] = {"gateway": GatewayBase.metadata, "bank": BankBase.metadata}
PROBE_TIMEOUT = 10.0


# --- a cluster shared by the TLS, health and reflection tests ------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[Cluster]:
    """One cluster for the read-only probes of this module (starting one takes seconds)."""
    with running_cluster(tmp_path_factory.mktemp("foundation"), certs, TEST_ENV) as cluster:
        yield cluster


# One call of each kind (allowed, refused for want of a token, refused for the caller's kind,
# refused at a bank's handshake; each service) against real processes: test_permissions.py
# runs the whole matrix against the same servers in its own process (tests/inprocess.py).
PERMISSION_SAMPLE = [
    ("/minipay.v1.Payments/GetBalance", "customer-a"),
    ("/minipay.v1.Payments/GetBalance", "anonymous"),
    ("/minipay.v1.Payments/Pay", "admin"),
    ("/minipay.v1.Admin/ListUsers", "admin"),
    ("/minipay.v1.Admin/ListUsers", "customer-b"),
    ("/minipay.v1.Auth/Logout", "customer-a"),
    ("/minipay.v1.Coordinator/GetDecision", "bank"),
    ("/minipay.v1.Coordinator/GetDecision", "gateway"),
    ("/minipay.v1.Participant/Prepare", "gateway"),
    ("/minipay.v1.Participant/Prepare", "admin"),
    ("/minipay.v1.Accounts/VerifyCredentials", "bank"),
    ("/minipay.v1.Events/List", "anonymous"),
    ("/grpc.health.v1.Health/Check", "anonymous"),
]


@pytest.fixture(scope="module")
def permission_callers(running: Cluster, certs: Path) -> Iterator[permissions.Callers]:
    permissions.register_customers(running, certs)
    made = permissions.Callers(running, certs)
    try:
        yield made
    finally:
        made.close()


@pytest.mark.parametrize(
    ("method", "who"), PERMISSION_SAMPLE, ids=[f"{w}{m}" for m, w in PERMISSION_SAMPLE]
)
def test_permissions_hold_on_real_processes(
    permission_callers: permissions.Callers, method: str, who: str
) -> None:
    caller = next(c for c in permissions.CALLERS if c.name == who)
    for server, descriptor in permissions.targets(method):
        code, details = permission_callers.call(server, descriptor, caller)
        if who in permissions.ALLOWED[method]:
            assert code not in permissions.REFUSALS, f"{who} refused: {server}{method} {details}"
        else:
            refusals = permissions.refusals(server, caller)
            assert code in refusals, f"{who} on {server}{method}: {code.name}"


def caller_of(target: str) -> str:
    """A certificate TARGET serves: customers call the gateway, only services call banks."""
    return "client-1" if target == GATEWAY else GATEWAY


def health_check(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=PROBE_TIMEOUT)
    return int(answer.status)


def refused(channel: grpc.Channel) -> grpc.RpcError:
    """The error the health probe must end with on a channel the server refuses."""
    with pytest.raises(grpc.RpcError) as caught:
        health_check(channel)
    return caught.value


# --- 1. mutual TLS ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_plaintext_channel_is_refused(running: Cluster, target: str) -> None:
    with grpc.insecure_channel(running.address(target)) as opened:
        error = refused(opened)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error


@pytest.mark.parametrize("target", TARGETS)
def test_client_without_certificate_is_refused(running: Cluster, certs: Path, target: str) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=(certs / SERVICES_CA).read_bytes())
    with grpc.secure_channel(
        running.address(target), credentials, channel_options(server_name(target))
    ) as opened:
        error = refused(opened)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error


@pytest.mark.parametrize("target", TARGETS)
def test_client_certificate_from_another_ca_is_refused(
    running: Cluster, certs: Path, tmp_path: Path, target: str
) -> None:
    other = tmp_path / "other-pki"
    ensure_dev_pki(other)
    # Trusts our CA (so the server is accepted) but presents certificates our CAs never
    # signed: another PKI's client and its "gateway".
    for name in ("client-1", "gateway"):
        files = TlsFiles(certs / SERVICES_CA, other / f"{name}.pem", other / f"{name}-key.pem")
        with grpc.secure_channel(
            running.address(target),
            channel_credentials(files),
            channel_options(server_name(target)),
        ) as opened:
            error = refused(opened)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error


@pytest.mark.parametrize("target", TARGETS)
def test_a_server_must_prove_its_name(running: Cluster, certs: Path, target: str) -> None:
    """Asking for another service's name at this address: TLS itself refuses."""
    other = "alpha" if target != "alpha" else GATEWAY
    files = certificate_files(certs, "gateway")
    with grpc.secure_channel(
        running.address(target), channel_credentials(files), channel_options(server_name(other))
    ) as opened:
        error = refused(opened)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error


@pytest.mark.parametrize("target", TARGETS)
def test_a_caller_with_our_certificate_is_served(
    running: Cluster, certs: Path, target: str
) -> None:
    with channel(running, certs, target, caller_of(target)) as opened:
        assert health_check(opened) == SERVING


@pytest.mark.parametrize("bank", ["alpha", "beta"])
def test_a_bank_refuses_a_customer_certificate_at_the_handshake(
    running: Cluster, certs: Path, bank: str
) -> None:
    with channel(running, certs, bank, "client-1") as opened:
        error = refused(opened)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error


# --- 2. health and reflection ----------------------------------------------------------------


@pytest.mark.parametrize("target", [GATEWAY, "alpha", "beta"])
def test_health_serving_for_every_service(running: Cluster, certs: Path, target: str) -> None:
    with channel(running, certs, target, caller_of(target)) as opened:
        for service in ["", *SERVICES[target]]:
            assert health_check(opened, service) == SERVING, service
        with pytest.raises(grpc.RpcError) as caught:
            health_check(opened, "minipay.v1.NoSuchService")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("target", [GATEWAY, "alpha", "beta"])
def test_reflection_lists_services(running: Cluster, certs: Path, target: str) -> None:
    with channel(running, certs, target, caller_of(target)) as opened:
        stub = reflection_pb2_grpc.ServerReflectionStub(opened)
        requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        answers = list(stub.ServerReflectionInfo(requests, timeout=PROBE_TIMEOUT))
    assert len(answers) == 1
    listed = {service.name for service in answers[0].list_services_response.service}
    assert listed == {*SERVICES[target], HEALTH_SERVICE, REFLECTION_SERVICE}


# --- 3. migrations ---------------------------------------------------------------------------


def alembic(kind: str, url: str, *arguments: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-n", kind, "-x", f"url={url}", *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def alembic_here(kind: str, url: str, step: str, revision: str) -> None:
    """alembic's STEP (upgrade, downgrade) to REVISION in this process, on a connection of
    its own as the servers migrate (alembic/env.py then leaves this process's logging be)."""
    config = Config(str(REPO_ROOT / "alembic.ini"), ini_section=kind)
    config.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            getattr(command, step)(config, revision)
    finally:
        engine.dispose()


def table_columns(url: str) -> dict[str, set[str]]:
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        return {
            table: {column["name"] for column in inspector.get_columns(table)}
            for table in inspector.get_table_names()
        }
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["gateway", "bank"])
def test_migrations_up_and_down(backend: str, kind: str, tmp_path: Path) -> None:
    expected = {
        name: {column.name for column in table.columns}
        for name, table in METADATA[kind].tables.items()
    }
    sqlite = nullcontext({kind: f"sqlite:///{tmp_path / f'{kind}.db'}"})
    with postgres_databases([kind]) if backend == "postgres" else sqlite as urls:
        url = urls[kind]
        alembic(kind, url, "upgrade", "head")  # by hand, as make migrate does
        upgraded = table_columns(url)
        assert set(upgraded) == {*expected, "alembic_version"}
        for name, columns in expected.items():
            assert upgraded[name] == columns, name

        alembic_here(kind, url, "downgrade", "base")
        assert set(table_columns(url)) <= {"alembic_version"}

        # And back up again: the downgrade left nothing behind that blocks a new upgrade.
        alembic_here(kind, url, "upgrade", "head")
        assert set(table_columns(url)) == {*expected, "alembic_version"}


# --- 4. seed loading is idempotent -----------------------------------------------------------


def count_rows(url: str, model: type[Customer] | type[Admin]) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(model.username, func.count()).group_by(model.username)
            ).all()
    finally:
        engine.dispose()
    return {str(username): int(count) for username, count in rows}


def test_restart_does_not_reseed(make_cluster: ClusterFactory, certs: Path, backend: str) -> None:
    cluster = make_cluster(backend)
    customers_before = count_rows(bank_url(cluster, "alpha"), Customer)
    admins_before = count_rows(gateway_url(cluster), Admin)
    assert customers_before == {"alice": 1, "bob": 1, "amir": 1}
    assert admins_before == {"admin": 1}

    alice = customer(cluster, certs, "alice")
    answer = alice.pay("beta", "B-2001", 1234)
    assert answer.status == COMMITTED, answer
    settle(cluster)  # the answer comes once the decision is stored; the banks apply it after
    paid = bank_state(cluster, "alpha")["accounts"]
    assert paid["A-1001"] == (SEED_BALANCES["alpha", "A-1001"] - 1234, 0)

    cluster.restart("alpha")
    cluster.restart(GATEWAY)

    assert count_rows(bank_url(cluster, "alpha"), Customer) == customers_before
    assert count_rows(gateway_url(cluster), Admin) == admins_before
    assert bank_state(cluster, "alpha")["accounts"] == paid
    assert alice.balance().balance_minor_units == SEED_BALANCES["alpha", "A-1001"] - 1234
    assert_books_balance(cluster)


# --- 5. bad input at start-up ----------------------------------------------------------------


@pytest.fixture
def idle(tmp_path: Path, certs: Path) -> Cluster:
    """A cluster that is never started: only its ports and environment are used."""
    return Cluster(tmp_path / "idle", env=dict(TEST_ENV), certs=certs)


def settings_class(name: str) -> type[ProcessSettings]:
    return GatewaySettings if name == GATEWAY else BankSettings


def start_fails_in_a_process(
    cluster: Cluster, name: str, *arguments: str, **settings: object
) -> str:
    """Runs NAME (plus ARGUMENTS) with these SETTINGS (given as its environment); it must
    exit non-zero with one ``error:`` line last and no traceback. Returns that line."""
    env = {**cluster.environment(name), **environment(settings_class(name), **settings)}
    result = subprocess.run(
        [*cluster.command(name), *arguments],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    return one_error_line(result.returncode, result.stdout)


def start_fails(cluster: Cluster, name: str, *arguments: str, **settings: object) -> str:
    """As ``start_fails_in_a_process``, with the server's own ``main(argv)`` called in this
    process: the same settings (its environment's MINIPAY_* variables), the same checks in
    the same order, the same ``error:`` line and exit status, without a second of imports
    per case. What main() changes in its process is put back after (the umask, the logging
    set-up); a server that started after all returns at once instead of waiting for a
    signal, and exits 0."""
    given = {
        **{k: v for k, v in cluster.environment(name).items() if k.startswith(SETTINGS_PREFIX)},
        **environment(settings_class(name), **settings),
    }
    module = importlib.import_module(cluster.command(name)[2] + ".__main__")
    argv = [*cluster.command(name)[3:], *arguments]
    output = io.StringIO()
    with (
        only_variables(given),
        process_state_kept(),
        replaced(module, "wait_for_signal", started_after_all),
        contextlib.redirect_stdout(output),
        contextlib.redirect_stderr(output),
    ):
        code = module.main(argv)
    return one_error_line(code, output.getvalue())


def one_error_line(code: int, output: str) -> str:
    """The server ended non-zero with one ``error:`` line last and no traceback: that line."""
    assert code != 0, output
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert lines, "no output at all"
    assert lines[-1].startswith("error:"), output
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], output
    return lines[-1]


async def started_after_all() -> None:
    """In place of the wait for SIGTERM: the server started, so it stops at once."""


@contextlib.contextmanager
def replaced(module: Any, name: str, value: object) -> Iterator[None]:
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


LOGGING_FLAGS = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")


@contextlib.contextmanager
def process_state_kept() -> Iterator[None]:
    """What a server's main() sets for its whole process (keep_files_private's umask,
    configure_logging's root handlers, levels and record flags, its writer thread), put
    back as it was once main() returns."""
    umask = os.umask(0o077)
    os.umask(umask)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    flags = {name: getattr(logging, name) for name in LOGGING_FLAGS}
    quieted = {name: logging.getLogger(name).level for name in ("sqlalchemy", "alembic")}
    try:
        yield
    finally:
        stop_log_writer()  # what it still held is written, before the output is read
        os.umask(umask)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, value in flags.items():
            setattr(logging, name, value)
        for name, value in quieted.items():
            logging.getLogger(name).setLevel(value)


def write_seed(path: Path, customers: list[dict[str, str]]) -> Path:
    admins = [{"username": "admin", "password": "admin-dev-pass"}]
    path.write_text(yaml.safe_dump({"admins": admins, "customers": customers}))
    return path


GOOD_ROW = {
    "bank": "alpha",
    "username": "alice",
    "name": "Alice Archer",
    "password": "alice-dev-pass",
    "account": "A-1001",
    "balance": "1000.00",
}


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_missing_certificate(idle: Cluster, tmp_path: Path, name: str) -> None:
    missing = tmp_path / "no-such-cert.pem"
    line = start_fails(idle, name, cert=str(missing))
    assert str(missing) in line


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_missing_ca(idle: Cluster, tmp_path: Path, name: str) -> None:
    missing = tmp_path / "no-such-ca.pem"
    line = start_fails(idle, name, ca=str(missing))
    assert str(missing) in line


def test_one_ca_for_services_and_clients_is_refused(idle: Cluster, certs: Path) -> None:
    line = start_fails(idle, GATEWAY, client_ca=certs / SERVICES_CA)
    assert "must not be the services CA" in line


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_garbage_certificate(idle: Cluster, tmp_path: Path, name: str) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    line = start_fails(idle, name, cert=str(garbage))
    assert "not a PEM certificate" in line


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_key_of_another_certificate(idle: Cluster, name: str) -> None:
    other_key = idle.certs / "client-2-key.pem"
    line = start_fails(idle, name, key=str(other_key))
    assert "does not belong" in line


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_unknown_log_format(idle: Cluster, name: str) -> None:
    line = start_fails(idle, name, log_format="xml")
    assert "xml" in line


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_port_in_use(idle: Cluster, name: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        address = f"127.0.0.1:{port}"
        if name == GATEWAY:
            line = start_fails(idle, name, listen=address)
        else:
            banks = idle.banks_setting.replace(idle.address("alpha"), address)
            line = start_fails(idle, name, banks=banks)
    assert str(port) in line
    assert "in use" in line


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_a_second_server_on_a_taken_port_is_refused(
    running: Cluster, tmp_path: Path, name: str
) -> None:
    # Its own data folder: only the port is shared (gRPC would allow that by default).
    line = start_fails(running, name, data_dir=tmp_path / "second")
    assert str(running.ports[name]) in line and "in use" in line
    running.wait_ready(name)  # the first one is untouched


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_a_second_server_on_the_same_database_is_refused(running: Cluster, name: str) -> None:
    # Another port, the same data folder and so the same SQLite database.
    line = start_fails(running, name, listen=f"127.0.0.1:{free_port()}")
    assert "in use by another process" in line
    running.wait_ready(name)


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_unreachable_database(idle: Cluster, name: str) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/x"
    line = start_fails(idle, name, database_url=url)
    assert "database" in line
    assert "127.0.0.1:1" in line


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_unusable_database_url(idle: Cluster, name: str) -> None:
    line = start_fails(idle, name, database_url="nosuch://somewhere/x")
    assert "database" in line
    assert "nosuch" in line


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_sqlite_folder_cannot_be_made(idle: Cluster, tmp_path: Path, name: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    url = f"sqlite:///{blocker / 'sub' / 'x.db'}"
    line = start_fails(idle, name, database_url=url)
    assert str(blocker) in line


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_data_dir_is_a_file(idle: Cluster, tmp_path: Path, name: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = start_fails(idle, name, data_dir=str(blocker))
    assert str(blocker) in line


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_setting_that_is_not_a_number(idle: Cluster, name: str) -> None:
    line = start_fails(idle, name, txn_timeout="soon")
    assert variable(ProcessSettings, "txn_timeout") in line
    assert "soon" in line
    line = start_fails(idle, name, "--bcrypt-rounds", "many")
    assert "--bcrypt-rounds" in line
    assert "many" in line


@pytest.mark.parametrize("name", [GATEWAY, "alpha"])
def test_unknown_log_level(idle: Cluster, name: str) -> None:
    line = start_fails(idle, name, log_level="loud")
    assert "loud" in line.lower()


def test_bank_name_not_in_banks(idle: Cluster) -> None:
    line = start_fails(idle, "alpha", "--name", "zeta")
    assert "zeta" in line
    assert not (idle.data_dir / "bank-zeta.db").exists()


def test_gateway_token_key_cannot_be_made(idle: Cluster, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = start_fails(idle, GATEWAY, token_key=str(blocker / "token-key.pem"))
    assert str(blocker) in line


def test_gateway_seed_that_is_not_a_mapping(idle: Cluster, tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text("- admin\n- alice\n")
    line = start_fails(idle, GATEWAY, seed=str(seed))
    assert str(seed) in line


def test_seed_row_missing_account(idle: Cluster, tmp_path: Path) -> None:
    row = {key: value for key, value in GOOD_ROW.items() if key != "account"}
    seed = write_seed(tmp_path / "seed.yaml", [row])
    line = start_fails(idle, "alpha", seed=str(seed))
    assert "account" in line
    assert "#1" in line


def test_seed_row_naming_unknown_bank(idle: Cluster, tmp_path: Path) -> None:
    rows = [GOOD_ROW, {**GOOD_ROW, "bank": "zeta", "username": "zed", "account": "Z-9001"}]
    seed = write_seed(tmp_path / "seed.yaml", rows)
    line = start_fails(idle, "alpha", seed=str(seed))
    assert "unknown bank" in line
    assert "zeta" in line


def test_seed_file_missing(idle: Cluster, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-seed.yaml"
    for name in (GATEWAY, "alpha"):
        line = start_fails(idle, name, seed=str(missing))
        assert str(missing) in line


def test_start_up_errors_as_real_processes(idle: Cluster, running: Cluster, tmp_path: Path) -> None:
    """The tests above call the servers' main() in this process; a sample runs as the
    processes they are (exit status, the one line last, no traceback): a bank's setting
    that is not a number (read before anything else), a gateway's missing certificate (once
    its logging and its database are set up), and a second bank on the database of one
    that runs."""
    line = start_fails_in_a_process(idle, "alpha", txn_timeout="soon")
    assert variable(ProcessSettings, "txn_timeout") in line and "soon" in line
    missing = tmp_path / "no-such-cert.pem"
    assert str(missing) in start_fails_in_a_process(idle, GATEWAY, cert=str(missing))
    line = start_fails_in_a_process(running, "alpha", listen=f"127.0.0.1:{free_port()}")
    assert "in use by another process" in line
    running.wait_ready("alpha")


# --- 6. every entry point answers --help -----------------------------------------------------

MAIN_MODULES = {
    "server.gateway": "server.gateway.__main__",
    "server.bank": "server.bank.__main__",
    "client": "minipay.client.__main__",
    "admin": "minipay.admin.__main__",
}


@pytest.mark.parametrize("module", list(MAIN_MODULES))
def test_help(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each entry point's main(["--help"]), in this process (test_cli.py runs the command
    lines' --help as processes too; every test with a cluster runs the servers)."""
    main = importlib.import_module(MAIN_MODULES[module]).main
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "usage:" in capsys.readouterr().out
