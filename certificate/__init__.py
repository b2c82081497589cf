"""Development certificates for minipay's mutual TLS: a local CA and the leaves it signs.

``python -m certificate init`` fills ``certificate/dev/``; the logic and the Python API live in
certificate.ca and are re-exported here.
"""

from certificate.ca import (
    CA_CERT,
    CA_KEY,
    DEFAULT_BANKS,
    DEFAULT_CLIENTS,
    DEV_DIR,
    CertificateError,
    InvalidNameError,
    NoCAError,
    ensure_dev_pki,
    ensure_leaf,
    issue_leaf,
    leaf_files,
    make_ca,
)

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "DEFAULT_BANKS",
    "DEFAULT_CLIENTS",
    "DEV_DIR",
    "CertificateError",
    "InvalidNameError",
    "NoCAError",
    "ensure_dev_pki",
    "ensure_leaf",
    "issue_leaf",
    "leaf_files",
    "make_ca",
]
