"""The client library and CLIs stand alone: what a customer installs (the ``minipay``
distribution in clients/python/) imports nothing of the servers and declares none of their
dependencies.

The fast tests run the client side in a subprocess whose imports of the servers' packages
and dependencies fail, as they would where only the client is installed. The slow one
(``MINIPAY_TEST_PACKAGING=1``, needs the package registry) builds the wheel and installs it
into a fresh virtual environment.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLIENT_DIST = REPO / "clients" / "python"
CLIENT_PACKAGES = ("client", "admin", "minipay")
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
        "minipay-server",
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
        "client",
        "client.api",
        "client.cli",
        "client.logs",
        "client.__main__",
        "admin",
        "admin.__main__",
        "minipay",
        "minipay.money",
        "minipay.balancing",
        "minipay.identity",
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
    for package in CLIENT_PACKAGES:
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
    """The installed client's metadata (computed by clients/python/setup.py) as pip sees it."""
    config = tomllib.loads((CLIENT_DIST / "pyproject.toml").read_text(encoding="utf-8"))
    project = config["project"]
    assert project["name"] == "minipay"
    assert importlib.metadata.version("minipay") == project["version"]
    declared = _unconditional(importlib.metadata.requires("minipay"))
    assert declared == CLIENT_DISTRIBUTIONS
    assert not declared & SERVER_ONLY_DISTRIBUTIONS
    assert "optional-dependencies" not in project
    # Only the client's packages; every one of them is a folder of this repository.
    packages = config["tool"]["setuptools"]["packages"]
    assert {p.split(".")[0] for p in packages} == set(CLIENT_PACKAGES)
    for top in CLIENT_PACKAGES:
        assert (CLIENT_DIST / top).resolve() == REPO / top
    # Building needs the generator, and nothing of the servers either.
    building = {_name(r) for r in config["build-system"]["requires"]}
    assert "grpcio-tools" in building
    assert not building & (SERVER_ONLY_DISTRIBUTIONS - {"grpcio-tools"})


def test_server_distribution_requires_this_client() -> None:
    """minipay-server ships only the servers and pins the client at the same version."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg", encoding="utf-8")
    assert setup["metadata"]["name"] == "minipay-server"
    found = setup["options.packages.find"]["include"].split()
    assert not {p.rstrip("*").split(".")[0] for p in found} & set(CLIENT_PACKAGES)
    version = importlib.metadata.version("minipay")
    requires = importlib.metadata.requires("minipay-server") or []
    assert f"minipay=={version}" in [r.replace(" ", "") for r in requires]
    assert {"sqlalchemy", "alembic", "bcrypt"} <= _unconditional(requires)


@pytest.mark.skipif(
    not os.environ.get("MINIPAY_TEST_PACKAGING"),
    reason="builds and installs the client wheel from the package registry (about 15 s): "
    "set MINIPAY_TEST_PACKAGING=1",
)
def test_wheel_installs_alone(tmp_path: Path) -> None:
    """The client wheel, built from clients/python, installs into a fresh venv without any of
    the servers' dependencies, and its CLIs run outside the repository."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, CLIENT_DIST],
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("minipay-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "minipay/v1/gateway_pb2_grpc.py" in names
    assert "minipay/v1/gateway_pb2.pyi" in names
    assert not {n.split("/")[0] for n in names} & SERVER_ONLY_MODULES

    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", wheel], check=True, timeout=600)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for tool in ("client", "admin"):
        done = subprocess.run(
            [python, "-m", tool, "--help"], cwd=outside, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {_name(line) for line in listed.split()}
    assert not installed & SERVER_ONLY_DISTRIBUTIONS
    assert CLIENT_DISTRIBUTIONS | {"minipay"} <= installed
    for module in ("sqlalchemy", "server", "certificate"):
        missing = subprocess.run(
            [python, "-c", f"import {module}"], cwd=outside, capture_output=True
        )
        assert missing.returncode != 0, module
