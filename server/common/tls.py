"""Mutual TLS: loading credentials for servers and channels, and reading the caller's
identity (certificate CN and SHA-256 thumbprint) from a verified peer certificate."""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from server.common.errors import ConfigError


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _checked_pair(files: TlsFiles) -> tuple[bytes, bytes]:
    """The key and certificate, checked to parse and to belong together."""
    key_pem, cert_pem = _read(files.key, "private key"), _read(files.cert, "certificate")
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ConfigError(f"{files.cert} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{files.key} is not an unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != (
        certificate.public_key().public_bytes(serialization.Encoding.PEM, public)
    ):
        raise ConfigError(f"private key {files.key} does not belong to {files.cert}")
    return key_pem, cert_pem


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that require and verify a client certificate from our CA."""
    return grpc.ssl_server_credentials(
        [_checked_pair(files)],
        root_certificates=_read(files.ca, "CA certificate"),
        require_client_auth=True,
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Channel credentials that present our certificate and trust only our CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(files.ca, "CA certificate"),
        private_key=_read(files.key, "private key"),
        certificate_chain=_read(files.cert, "certificate"),
    )


# Servers are reached by IP; the dev certificates carry localhost and 127.0.0.1 as SANs.
CHANNEL_OPTIONS: list[tuple[str, object]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
]


@dataclass(frozen=True)
class PeerIdentity:
    """Who is on the other end of a verified TLS connection."""

    common_name: str
    thumbprint: str  # base64url SHA-256 of the DER certificate (RFC 8705 x5t#S256)
    address: str


@functools.lru_cache(maxsize=1024)
def thumbprint_of_pem(pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def peer_identity(context: grpc.aio.ServicerContext) -> PeerIdentity | None:
    """The verified client certificate's identity, or None (which mTLS should make impossible)."""
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    pems = auth.get("x509_pem_cert") or []
    if not names or not pems:
        return None
    return PeerIdentity(
        common_name=names[0].decode(),
        thumbprint=thumbprint_of_pem(pems[0]),
        address=context.peer(),
    )
