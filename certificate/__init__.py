"""Development certificates for minipay's mutual TLS: a services CA and a clients CA, and the
leaves they sign.

``python -m certificate init`` fills ``certificate/dev/``; the logic and the Python API live in
certificate.ca and are re-exported here.
"""

from certificate.ca import (
    ADMIN,
    CLIENTS_CA,
    CLIENTS_CA_KEY,
    DEFAULT_BANKS,
    DEFAULT_CLIENTS,
    DEV_DIR,
    GATEWAY,
    SERVICES_CA,
    SERVICES_CA_KEY,
    CertificateError,
    InvalidNameError,
    NoCAError,
    ReservedNameError,
    ensure_dev_pki,
    issue_client,
    issue_service,
    leaf_files,
)

__all__ = [
    "ADMIN",
    "CLIENTS_CA",
    "CLIENTS_CA_KEY",
    "DEFAULT_BANKS",
    "DEFAULT_CLIENTS",
    "DEV_DIR",
    "GATEWAY",
    "SERVICES_CA",
    "SERVICES_CA_KEY",
    "CertificateError",
    "InvalidNameError",
    "NoCAError",
    "ReservedNameError",
    "ensure_dev_pki",
    "issue_client",
    "issue_service",
    "leaf_files",
]
