"""Certificates a careless or stolen clients CA key could sign: a customer's certificate that
claims a service's SPIFFE id, and even its DNS name. Only the CA that signed one tells it apart
from the real service's, which is what the tests that use these prove the code checks."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certificate.ca import CLIENTS_CA, SERVICES_CA
from server.common.tls import TlsFiles


def forged_client_certificate(
    certs: Path, folder: Path, common_name: str, uri: str, dns_name: str = ""
) -> TlsFiles:
    """A certificate signed by the clients CA in CERTS with a service's names, written to
    FOLDER as forged.pem and forged-key.pem."""
    ca_cert = x509.load_pem_x509_certificate((certs / CLIENTS_CA).read_bytes())
    ca_key = serialization.load_pem_private_key(
        (certs / CLIENTS_CA.replace(".pem", "-key.pem")).read_bytes(), password=None
    )
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    if dns_name:
        names.append(x509.DNSName(dns_name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "forged.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "forged-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(certs / SERVICES_CA, folder / "forged.pem", folder / "forged-key.pem")
