"""The minipay development PKI: one self-signed CA and the leaf certificates it signs.

This module owns the files in ``certificate/dev/`` (or any folder passed as ``out``): their
names, how they are generated, and when an existing file is kept rather than regenerated.
It is for development and tests only; a real deployment gets its certificates elsewhere.

Layout of a folder: ``ca.pem`` + ``ca-key.pem`` for the CA, ``NAME.pem`` + ``NAME-key.pem``
for each leaf. Every leaf is both a TLS server and a TLS client certificate, because every
minipay process both serves and calls, and carries localhost / 127.0.0.1 / ::1 as SANs.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "ADMIN",
    "CA_CERT",
    "CA_COMMON_NAME",
    "CA_KEY",
    "CREATED",
    "DEFAULT_BANKS",
    "DEFAULT_CLIENTS",
    "DEV_DIR",
    "GATEWAY",
    "KEPT",
    "CertificateError",
    "InvalidNameError",
    "NoCAError",
    "check_name",
    "ensure_dev_pki",
    "ensure_leaf",
    "issue_leaf",
    "leaf_files",
    "make_ca",
]

DEV_DIR = Path(__file__).parent / "dev"
DEFAULT_BANKS: tuple[str, ...] = ("alpha", "beta", "gamma")
DEFAULT_CLIENTS: tuple[str, ...] = ("client-1", "client-2")
GATEWAY = "gateway"
ADMIN = "admin"

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
CA_COMMON_NAME = "minipay dev CA"
CA_VALIDITY = datetime.timedelta(days=3650)
# 825 days is the longest lifetime that macOS/iOS still accept for a TLS server certificate.
LEAF_VALIDITY = datetime.timedelta(days=825)
# Backdated so that a peer whose clock is a little behind still accepts a fresh certificate.
CLOCK_SKEW = datetime.timedelta(minutes=5)

CERT_MODE = 0o644
KEY_MODE = 0o600

CREATED = "created"
KEPT = "kept"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SANS: tuple[x509.GeneralName, ...] = (
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
)
_FORCE_HINT = "rerun with --force to regenerate it"


class CertificateError(Exception):
    """An expected failure; the message is one line a person can act on, no traceback needed."""

    exit_code = 1


class NoCAError(CertificateError):
    """A leaf was requested from a folder that has no CA yet."""

    exit_code = 2


class InvalidNameError(CertificateError, ValueError):
    """A certificate name that is not safe to use as a CN and a file name."""

    exit_code = 2


@dataclass(frozen=True)
class _Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path


def check_name(name: str) -> str:
    """Returns NAME if it may be used as a leaf's CN and file name; raises InvalidNameError."""
    # fullmatch, not match with "$": "$" would also accept a trailing newline.
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"invalid name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    # NAME.pem / NAME-key.pem must not land on the CA's or another leaf's key file; lower()
    # because on a case-insensitive filesystem "CA.pem" would overwrite ca.pem.
    folded = name.lower()
    if folded == "ca" or folded.endswith("-key"):
        raise InvalidNameError(
            f"invalid name {name!r}: 'ca' and names ending in '-key' would overwrite other files"
        )
    return name


def leaf_files(out: Path, name: str) -> tuple[Path, Path]:
    """The (certificate, private key) paths of leaf NAME in folder OUT."""
    check_name(name)
    return Path(out) / f"{name}.pem", Path(out) / f"{name}-key.pem"


def make_ca(out: Path) -> None:
    """Creates a new, independent CA in OUT (``ca.pem``, ``ca-key.pem``), replacing any CA there.

    Leaves already in OUT are left alone and no longer verify; use
    ``ensure_dev_pki(out, force=True)`` to regenerate a whole folder consistently.
    """
    out = Path(out)
    _make_dir(out)
    with _locked(out):
        _create_ca(out)


def ensure_dev_pki(
    out: Path,
    banks: Sequence[str] = DEFAULT_BANKS,
    clients: Sequence[str] = DEFAULT_CLIENTS,
    force: bool = False,
) -> list[tuple[str, Path]]:
    """Makes sure OUT holds the CA and a leaf for the gateway, each bank, admin and each client.

    Existing files are kept (and checked: a leaf not signed by the CA, or whose key does not
    match, is an error rather than being silently replaced). A missing CA, or ``force``,
    creates a new CA and therefore regenerates every leaf. A leaf with only one of its two
    files present is regenerated. Returns ``(CREATED | KEPT, path)`` for every file.
    """
    names = _leaf_names(banks, clients)
    out = Path(out)
    _make_dir(out)
    with _locked(out):
        ca = None if force else _load_ca(out)
        if ca is None:
            ca = _create_ca(out)
            actions = [(CREATED, out / CA_CERT), (CREATED, out / CA_KEY)]
            # Leaves signed by the previous CA would no longer verify against the new one.
            regenerate = True
        else:
            actions = [(KEPT, out / CA_CERT), (KEPT, out / CA_KEY)]
            regenerate = False
        for name in names:
            actions += _ensure_leaf(out, ca, name, force=regenerate)
    return actions


def ensure_leaf(out: Path, name: str, force: bool = False) -> list[tuple[str, Path]]:
    """Issues leaf NAME from the CA in OUT unless it already exists (or ``force``).

    Returns ``(CREATED | KEPT, path)`` for the certificate and the key. Raises NoCAError if
    OUT has no CA; the CA itself is never created or replaced here.
    """
    check_name(name)
    out = Path(out)
    if not _exists(out):
        raise _no_ca(out)
    with _locked(out):
        ca = _load_ca(out)
        if ca is None:
            raise _no_ca(out)
        return _ensure_leaf(out, ca, name, force=force)


def issue_leaf(out: Path, name: str, force: bool = False) -> Path:
    """Like ensure_leaf, but returns just the path of NAME's certificate."""
    ensure_leaf(out, name, force=force)
    return leaf_files(out, name)[0]


def _no_ca(out: Path) -> NoCAError:
    return NoCAError(f"no CA in {out}; run 'python -m certificate init' first")


def _leaf_names(banks: Sequence[str], clients: Sequence[str]) -> list[str]:
    # A bare string is a Sequence[str] too, and would silently become one leaf per character.
    if isinstance(banks, str) or isinstance(clients, str):
        raise TypeError("banks and clients must be sequences of names, not a single string")
    names = [GATEWAY, *banks, ADMIN, *clients]
    for name in names:
        check_name(name)
    return list(dict.fromkeys(names))


def _ensure_leaf(out: Path, ca: _Authority, name: str, force: bool) -> list[tuple[str, Path]]:
    cert_path, key_path = leaf_files(out, name)
    if not force and _exists(cert_path) and _exists(key_path):
        _check_leaf(ca, cert_path, key_path)
        return [(KEPT, cert_path), (KEPT, key_path)]
    _create_leaf(ca, name, cert_path, key_path)
    return [(CREATED, cert_path), (CREATED, key_path)]


def _create_ca(out: Path) -> _Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        # path_length=0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    path = out / CA_CERT
    _write_key(out / CA_KEY, key)
    _write_cert(path, cert)
    return _Authority(cert=cert, key=key, path=path)


def _create_leaf(ca: _Authority, name: str, cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    # A leaf cannot be valid for longer than the CA that vouches for it.
    not_after = min(now + LEAF_VALIDITY, ca.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(list(_SANS)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _load_ca(out: Path) -> _Authority | None:
    """The CA in OUT, None if it has none, or CertificateError if it is unusable."""
    cert_path, key_path = out / CA_CERT, out / CA_KEY
    have_cert, have_key = _exists(cert_path), _exists(key_path)
    if not have_cert and not have_key:
        return None
    if not (have_cert and have_key):
        # Guessing here could replace a CA that other folders or processes already trust.
        present, missing = (cert_path, key_path) if have_cert else (key_path, cert_path)
        raise CertificateError(
            f"{missing} is missing but {present} exists; "
            "run 'python -m certificate init --force' to make a new CA"
        )
    cert = _load_cert(cert_path)
    key = _load_key(key_path)
    if not _same_public_key(cert, key):
        raise CertificateError(f"{key_path} is not the private key of {cert_path}")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertificateError(f"{cert_path} is not a CA certificate")
    if cert.not_valid_after_utc <= _now():
        raise CertificateError(
            f"{cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
            "run 'python -m certificate init --force'"
        )
    return _Authority(cert=cert, key=key, path=cert_path)


def _check_leaf(ca: _Authority, cert_path: Path, key_path: Path) -> None:
    """Raises CertificateError unless the leaf on disk is usable with this CA."""
    cert = _load_cert(cert_path)
    key = _load_key(key_path)
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(f"{cert_path} was not issued by {ca.path}; {_FORCE_HINT}") from None
    if not _same_public_key(cert, key):
        raise CertificateError(f"{key_path} is not the private key of {cert_path}; {_FORCE_HINT}")
    if cert.not_valid_after_utc <= _now():
        raise CertificateError(
            f"{cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; {_FORCE_HINT}"
        )


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError:
        raise CertificateError(f"{path} is not a PEM certificate") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # TypeError is what an encrypted key raises when no password is given.
        raise CertificateError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{path} is not an EC private key")
    return key


def _same_public_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, KEY_MODE)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write(path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Writes DATA to PATH with exactly MODE, atomically.

    The file is created by os.open with MODE, so a key is never readable by others, not even
    for an instant; it is written under a temporary name and renamed, so an interrupted run
    never leaves a truncated PEM that the next run would keep.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise CertificateError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            # The umask may have stripped bits from 0644; set the intended mode exactly.
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CertificateError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror or exc}") from None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError as exc:
        raise CertificateError(f"cannot access {path}: {exc.strerror or exc}") from None


def _make_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CertificateError(f"cannot create folder {out}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Holds an exclusive lock on folder OUT for the duration.

    Two runs on one folder (pytest-xdist workers, two shells) could otherwise interleave, e.g.
    one signing leaves with a CA that the other is replacing. The lock is taken on the folder
    itself, so no lock file is left behind and a read-only folder can still be checked.
    """
    try:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise CertificateError(f"cannot open folder {out}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # also releases the lock


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
