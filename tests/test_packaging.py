"""The client library and CLIs stand alone: what a customer installs (the ``minipay``
distribution, the repository's own pyproject.toml) lives under the one import root
``minipay``, imports nothing of the servers and declares none of their dependencies.

The fast tests run the client side in a subprocess whose imports of the servers' packages
and dependencies fail, as they would where only the client is installed. The slow ones
(``MINIPAY_TEST_PACKAGING=1``, need the package registry) build the wheel and install it
into a fresh virtual environment: its commands name themselves ``minipay`` and
``minipay-admin``, and the README's "Paying from a script" runs there, paying against a real
cluster with the certificates given, and saying in one line which settings to give without.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from devtools.cluster import Cluster
from tests.helpers import customer
from tests.test_readme_examples import client_environment, readme_script

REPO = Path(__file__).resolve().parents[1]
# The installed packages' sources, and the checkout's entry points (python -m client / admin).
CLIENT_SOURCES = ("minipay", "client", "admin")
# Import names that only the servers' distribution brings, and the servers' own packages.
SERVER_ONLY_MODULES = frozenset(
    {
        "sqlalchemy",
        "alembic",
        "bcrypt",
        "psycopg",
        "jwt",
        "prometheus_client",
        "yaml",
        "cryptography",
        "grpc_tools",
        "grpc_health",
        "grpc_reflection",
        "server",
        "certificate",
        "devtools",
    }
)
SERVER_ONLY_DISTRIBUTIONS = frozenset(
    {
        "sqlalchemy",
        "alembic",
        "bcrypt",
        "psycopg",
        "pyjwt",
        "prometheus-client",
        "pyyaml",
        "cryptography",
        "grpcio-tools",
        "grpcio-health-checking",
        "grpcio-reflection",
    }
)
CLIENT_DISTRIBUTIONS = frozenset({"grpcio", "grpcio-status", "protobuf"})

# Runs first in the subprocess: any import of a server-only module fails like a missing one.
BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {sorted(SERVER_ONLY_MODULES)!r}

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: server-only)")
        return None

for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
sys.meta_path.insert(0, Refuse())
"""


def _blocked_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` after the blocker, from the repository root (its working tree)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")}
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _name(requirement: str) -> str:
    """The normalized distribution name a requirement string starts with."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _unconditional(requirements: list[str] | None) -> set[str]:
    """Names of what a plain install brings: requirements without an extra marker."""
    return {_name(r) for r in requirements or [] if "extra ==" not in r.replace('"', "")}


def test_blocker_blocks() -> None:
    done = _blocked_python("import sqlalchemy")
    assert done.returncode != 0
    assert "blocked: server-only" in done.stderr


def test_client_side_imports_without_the_servers() -> None:
    modules = [
        "minipay.client",
        "minipay.client.api",
        "minipay.client.commandline",
        "minipay.client.logs",
        "minipay.client.__main__",
        "minipay.admin",
        "minipay.admin.__main__",
        "client.__main__",
        "admin.__main__",
        "minipay",
        "minipay.money",
        "minipay.balancing",
        "minipay.service_names",
        *(f"minipay.v1.{p.stem}" for p in sorted((REPO / "minipay" / "v1").glob("*_pb2*.py"))),
    ]
    assert "minipay.v1.gateway_pb2_grpc" in modules, "no generated code: run make protos"
    done = _blocked_python(
        "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n",
        *modules,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("tool", ["client", "admin"])
def test_cli_help_runs_without_the_servers(tool: str) -> None:
    done = _blocked_python(
        "import runpy, sys\n"
        f"sys.argv = ['python -m {tool}', '--help']\n"
        f"runpy.run_module('{tool}', run_name='__main__', alter_sys=True)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_client_sources_never_import_the_servers() -> None:
    """Every import statement, lazy ones in functions included, names client-side modules."""
    offenders = []
    for package in CLIENT_SOURCES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                offenders += [
                    f"{path.relative_to(REPO)}:{node.lineno}: {name}"
                    for name in names
                    if name.split(".")[0] in SERVER_ONLY_MODULES
                ]
    assert not offenders


def test_client_distribution_declares_only_client_dependencies() -> None:
    """The installed distribution's metadata (computed by setup.py) as pip sees it: a plain
    install brings grpcio, grpcio-status and protobuf; the servers' needs are the server
    extra."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    project = config["project"]
    assert project["name"] == "minipay"
    assert importlib.metadata.version("minipay") == project["version"]
    requires = importlib.metadata.requires("minipay") or []
    declared = _unconditional(requires)
    assert declared == CLIENT_DISTRIBUTIONS
    assert not declared & SERVER_ONLY_DISTRIBUTIONS
    server_extra = {_name(r) for r in requires if 'extra == "server"' in r}
    assert {"sqlalchemy", "alembic", "bcrypt", "pyjwt"} <= server_extra
    # One import root, and a console script for each CLI.
    packages = config["tool"]["setuptools"]["packages"]
    assert {p.split(".")[0] for p in packages} == {"minipay"}
    assert set(project["scripts"]) == {"minipay", "minipay-admin"}
    # Building needs the generator, and nothing of the servers either.
    building = {_name(r) for r in config["build-system"]["requires"]}
    assert "grpcio-tools" in building
    assert not building & (SERVER_ONLY_DISTRIBUTIONS - {"grpcio-tools"})


PACKAGING = pytest.mark.skipif(
    not os.environ.get("MINIPAY_TEST_PACKAGING"),
    reason="builds and installs the client wheel from the package registry (about 15 s): "
    "set MINIPAY_TEST_PACKAGING=1",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client wheel, built from a copy of the files git tracks in this checkout: what a
    clone builds, without what the working tree holds besides (a build/ folder of an earlier
    build would lend the wheel files that are gone)."""
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(
        ["git", "-C", REPO, "ls-files", "-z"], capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, source],
        check=True,
        timeout=600,
    )
    (built,) = wheels.glob("minipay-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with only the wheel (and what it requires); its python."""
    folder = tmp_path_factory.mktemp("venv")
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", wheel], check=True, timeout=600)
    return python


@PACKAGING
def test_wheel_installs_alone(wheel: Path, installed: Path, tmp_path: Path) -> None:
    """The wheel installs into a fresh venv without any of the servers' dependencies, puts
    nothing but ``minipay`` in site-packages, and its CLIs run outside the repository, naming
    themselves as installed."""
    names = zipfile.ZipFile(wheel).namelist()
    assert "minipay/v1/gateway_pb2_grpc.py" in names
    assert "minipay/v1/gateway_pb2.pyi" in names
    assert {n.split("/")[0] for n in names if not n.startswith("minipay-")} == {"minipay"}

    python = installed
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for command in ("minipay", "minipay-admin"):
        done = subprocess.run(
            [python.parent / command, "--help"], cwd=outside, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: {command} "), done.stdout
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed_names = {_name(line) for line in listed.split()}
    assert not installed_names & SERVER_ONLY_DISTRIBUTIONS
    assert CLIENT_DISTRIBUTIONS | {"minipay"} <= installed_names
    for module in ("sqlalchemy", "server", "certificate", "client", "admin"):
        missing = subprocess.run(
            [python, "-c", f"import {module}"], cwd=outside, capture_output=True
        )
        assert missing.returncode != 0, module


def _without_settings(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")}
    return {**env, "HOME": str(home), "MINIPAY_HOME": str(home / ".minipay")}


@PACKAGING
def test_readme_script_without_certificates_says_which_to_give(
    installed: Path, tmp_path: Path
) -> None:
    """Installed alone, with no certificate settings: the README's script ends in one line
    that names the settings to give (no traceback, no path inside site-packages), and so do
    the CLIs."""
    script = tmp_path / "pay.py"
    script.write_text(readme_script())
    done = subprocess.run(
        [installed, script],
        cwd=tmp_path,
        env=_without_settings(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: no certificate given: set MINIPAY_CA ("), line
    for name in ("MINIPAY_CERT", "MINIPAY_KEY", "--ca", "--cert", "--key"):
        assert name in line
    assert "site-packages" not in line
    cli = subprocess.run(
        [installed.parent / "minipay", "login", "--username", "alice", "--password-stdin"],
        input="pw\n",
        cwd=tmp_path,
        env=_without_settings(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 2, cli.stderr
    assert cli.stderr.startswith("error: no certificate given: set MINIPAY_CA ("), cli.stderr
    assert "site-packages" not in cli.stderr


@PACKAGING
@pytest.mark.in_process
def test_readme_script_pays_from_the_wheel(
    installed: Path, cluster: Cluster, certs: Path, tmp_path: Path
) -> None:
    customer(cluster, certs, "alice")
    script = tmp_path / "pay.py"
    script.write_text(readme_script())
    done = subprocess.run(
        [installed, script],
        cwd=tmp_path,
        env=client_environment(cluster, certs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"pay_[0-9a-f]{32} COMMITTED  [0-9a-f]{32}\n", done.stdout), done.stdout
