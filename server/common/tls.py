"""Mutual TLS: loading credentials for servers and channels, checking the name of the server a
channel reaches, and reading who the caller is from its verified certificate.

Two CAs (see ``minipay.service_names``): the services CA signs the gateway's and the banks'
certificates; the clients CA signs customers' and admins'. Every channel trusts only the
services CA and asks TLS to check the service's DNS name (a target name override), so a
server with any other certificate is refused before a byte of the call is sent. A server
trusts the services CA for callers, and the gateway the clients CA too; a caller is a service
only if the services CA signed its certificate, and which service it is comes from its SPIFFE
URI, never from its common name.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from server.common.errors import ConfigError


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the services CA: trusted for servers, and for calling services
    cert: Path
    key: Path
    client_ca: Path | None = None  # the clients CA, for a server that customers call


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _certificate(pem: bytes, path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ConfigError(f"{path} is not a PEM certificate") from None


def _checked_pair(files: TlsFiles) -> tuple[bytes, bytes]:
    """The key and certificate, checked to parse and to belong together."""
    key_pem, cert_pem = _read(files.key, "private key"), _read(files.cert, "certificate")
    certificate = _certificate(cert_pem, files.cert)
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


def _trusted_callers(files: TlsFiles) -> bytes:
    roots = _read(files.ca, "CA certificate")
    services = _certificate(roots, files.ca)
    if files.client_ca is not None:
        clients = _read(files.client_ca, "clients CA certificate")
        if _certificate(clients, files.client_ca).subject == services.subject:
            # One CA for both would let a customer's certificate carry a service's identity.
            raise ConfigError(
                f"the clients CA {files.client_ca} must not be the services CA {files.ca}"
            )
        roots = roots.rstrip(b"\n") + b"\n" + clients
    return roots


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate from a CA this server trusts."""
    return grpc.ssl_server_credentials(
        [_checked_pair(files)], root_certificates=_trusted_callers(files), require_client_auth=True
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Channel credentials that present our certificate and trust only the services CA."""
    key_pem, cert_pem = _checked_pair(files)
    return grpc.ssl_channel_credentials(
        root_certificates=_read(files.ca, "CA certificate"),
        private_key=key_pem,
        certificate_chain=cert_pem,
    )


CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
]


def channel_options(server_name: str) -> list[tuple[str, Any]]:
    """Options for a channel to the service whose certificate carries SERVER_NAME: TLS itself
    refuses a server that cannot prove that name, whatever address it listens on."""
    return [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", server_name)]


def secure_channel(address: str, files: TlsFiles, server_name: str) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        address, channel_credentials(files), channel_options(server_name)
    )


@dataclass(frozen=True)
class PeerIdentity:
    """Who is on the other end of a verified TLS connection."""

    common_name: str
    thumbprint: str  # base64url SHA-256 of the DER certificate (RFC 8705 x5t#S256)
    address: str
    spiffe_id: str = ""  # the certificate's URI SAN, if any
    is_service: bool = False  # signed by the services CA


@dataclass(frozen=True)
class _Certified:
    common_name: str
    thumbprint: str
    spiffe_id: str
    is_service: bool


def thumbprint_of_pem(pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


class Peers:
    """Reads callers' identities from their verified certificates, knowing the services CA."""

    def __init__(self, services_ca: Path) -> None:
        self._services_ca = _certificate(_read(services_ca, "CA certificate"), services_ca)
        # A certificate is parsed once, however many calls present it.
        self._certified = functools.lru_cache(maxsize=1024)(self._certify)

    def identify(self, context: grpc.aio.ServicerContext) -> PeerIdentity | None:
        """The caller's identity, or None (which mutual TLS should make impossible)."""
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            return None
        known = self._certified(pems[0])
        return PeerIdentity(
            known.common_name, known.thumbprint, context.peer(), known.spiffe_id, known.is_service
        )

    def _certify(self, pem: bytes) -> _Certified:
        certificate = x509.load_pem_x509_certificate(pem)
        names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        try:
            sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            uris = sans.value.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        return _Certified(
            common_name=str(names[0].value) if names else "",
            thumbprint=thumbprint_of_pem(pem),
            spiffe_id=uris[0] if len(uris) == 1 else "",
            is_service=self._signed_by_services_ca(certificate),
        )

    def _signed_by_services_ca(self, certificate: x509.Certificate) -> bool:
        if certificate.issuer != self._services_ca.subject:
            return False
        try:
            certificate.verify_directly_issued_by(self._services_ca)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def peer_common_name(context: grpc.aio.ServicerContext) -> str:
    """The caller's certificate CN, for a log record (not for deciding anything)."""
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode(errors="replace") if names else ""
