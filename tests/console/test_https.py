"""The console over HTTPS: the session cookie becomes ``__Host-`` and ``Secure`` (the browser
then keeps it for this host only, and sends it only over HTTPS)."""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import expect

from devtools.cluster import Cluster
from tests.console.support import Api, LiveConsole, console_settings, new_customer


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (minipay's service certificates name no address)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "minipay console (test)")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "https.pem", folder / "https-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def https_console(
    console_cluster: Cluster, console_certs: Path, tmp_path: Path
) -> Iterator[LiveConsole]:
    cert, key = self_signed(tmp_path)
    settings = console_settings(console_cluster, console_certs, https_cert=cert, https_key=key)
    server = LiveConsole(settings).start()
    yield server
    server.stop()


def test_over_https_the_session_cookie_is_host_only_and_secure(
    https_console: LiveConsole, new_page: Callable[..., Any], api: Api
) -> None:
    assert https_console.url.startswith("https://")
    page = new_page(https_console.url, ignore_https_errors=True)
    person = new_customer(api)
    page.goto("/login")
    page.get_by_label("Username").fill(person.username)
    page.get_by_label("Password").fill(person.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/account$"))
    expect(page.locator("#live-status")).to_have_text("live")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert set(cookies) == {"__Host-minipay_session"}
    session = cookies["__Host-minipay_session"]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
    assert session["path"] == "/"
