"""The minipay development PKI: two independent CAs and the leaf certificates they sign.

This module owns the files in ``certificate/dev/`` (or any folder passed as ``out``): their
names, what each certificate carries, how they are generated, and when an existing file is
kept rather than regenerated. It is for development and tests only; a real deployment gets
its certificates elsewhere (they must carry what is described here and in minipay.service_names).

Layout of a folder:

- ``services-ca.pem`` + ``services-ca-key.pem``: the *services CA*, which signs only the
  certificates of services (the gateway and the banks);
- ``clients-ca.pem`` + ``clients-ca-key.pem``: the *clients CA*, which signs only the
  certificates of customers and admins;
- ``NAME.pem`` + ``NAME-key.pem`` for each leaf.

Because the two CAs are separate, a customer's certificate can never carry a service's
identity, whatever its name. A service certificate carries exactly the service's DNS name and
SPIFFE id (minipay.service_names) and both the serverAuth and clientAuth usages: services serve and
call each other. It carries no ``localhost`` or IP address: a name that every service shared
would let any service answer for any other. A client certificate carries only its client SPIFFE
id and the clientAuth usage, so it can never be used to serve.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from minipay.service_names import (
    GATEWAY_ID,
    GATEWAY_SERVER_NAME,
    bank_id,
    bank_of,
    bank_server_name,
    client_id,
)

__all__ = [
    "ADMIN",
    "CLIENTS_CA",
    "CLIENTS_CA_COMMON_NAME",
    "CLIENTS_CA_KEY",
    "CREATED",
    "DEFAULT_BANKS",
    "DEFAULT_CLIENTS",
    "DEV_DIR",
    "GATEWAY",
    "KEPT",
    "OBSOLETE_FILES",
    "SERVICES_CA",
    "SERVICES_CA_COMMON_NAME",
    "SERVICES_CA_KEY",
    "CertificateError",
    "InvalidNameError",
    "NoCAError",
    "ReservedNameError",
    "check_bank_name",
    "check_client_name",
    "check_name",
    "ensure_dev_pki",
    "issue_client",
    "issue_service",
    "leaf_files",
    "obsolete_files",
]

DEV_DIR = Path(__file__).parent / "dev"
DEFAULT_BANKS: tuple[str, ...] = ("alpha", "beta", "gamma")
DEFAULT_CLIENTS: tuple[str, ...] = ("client-1", "client-2")
GATEWAY = "gateway"
ADMIN = "admin"  # always issued by ensure_dev_pki, like the gateway

SERVICES_CA = "services-ca.pem"
SERVICES_CA_KEY = "services-ca-key.pem"
SERVICES_CA_COMMON_NAME = "minipay services CA"
CLIENTS_CA = "clients-ca.pem"
CLIENTS_CA_KEY = "clients-ca-key.pem"
CLIENTS_CA_COMMON_NAME = "minipay clients CA"
# The single CA of the previous layout: never written or read any more, only pointed out.
_OLD_CA = "ca.pem"
OBSOLETE_FILES: tuple[str, ...] = (_OLD_CA, "ca-key.pem")

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
# A bank's name becomes a DNS label (minipay.service_names.bank_server_name). Lower case only: DNS
# names compare case-insensitively, so "Alpha" would answer for "alpha".
_BANK_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Leaf names whose files would land on a CA's files (the old single CA's included).
_CA_STEMS = frozenset(name.removesuffix(".pem") for name in (SERVICES_CA, CLIENTS_CA, _OLD_CA))
_CLIENT_ID_PREFIX = client_id("")
_FORCE_HINT = "rerun with --force to regenerate it"


class CertificateError(Exception):
    """An expected failure; the message is one line a person can act on, no traceback needed."""

    exit_code = 1


class NoCAError(CertificateError):
    """A leaf was requested from a folder that does not have the CA that would sign it."""

    exit_code = 2


class InvalidNameError(CertificateError, ValueError):
    """A certificate name that is not safe to use as a CN, a file name and an identity."""

    exit_code = 2


class ReservedNameError(InvalidNameError):
    """A client asked for a service's name, or a service for a client's."""


@dataclass(frozen=True)
class _CA:
    """One of the two CAs: its files, its name, and what kind of leaf it signs."""

    cert_file: str
    key_file: str
    common_name: str
    title: str  # "services CA", for messages
    signs: str  # "service", for messages

    @property
    def files(self) -> tuple[str, str]:
        return self.cert_file, self.key_file


_SERVICES = _CA(SERVICES_CA, SERVICES_CA_KEY, SERVICES_CA_COMMON_NAME, "services CA", "service")
_CLIENTS = _CA(CLIENTS_CA, CLIENTS_CA_KEY, CLIENTS_CA_COMMON_NAME, "clients CA", "client")


@dataclass(frozen=True)
class _Authority:
    """A CA loaded from (or just written to) a folder."""

    spec: _CA
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path


@dataclass(frozen=True)
class _Leaf:
    """What one leaf certificate must carry."""

    name: str  # CN and file name
    ca: _CA
    dns: str | None  # services only
    uri: str  # the SPIFFE id

    @property
    def sans(self) -> list[x509.GeneralName]:
        names: list[x509.GeneralName] = []
        if self.dns is not None:
            names.append(x509.DNSName(self.dns))
        names.append(x509.UniformResourceIdentifier(self.uri))
        return names

    @property
    def usages(self) -> list[x509.ObjectIdentifier]:
        if self.ca is _SERVICES:
            # Services both serve and call each other (gateway -> bank, bank -> gateway).
            return [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        return [ExtendedKeyUsageOID.CLIENT_AUTH]


def check_name(name: str) -> str:
    """Returns NAME if it may be used as a leaf's CN and file name; raises InvalidNameError."""
    # fullmatch, not match with "$": "$" would also accept a trailing newline.
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"invalid name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    # NAME.pem / NAME-key.pem must not land on a CA's or another leaf's key file; lower()
    # because on a case-insensitive filesystem "Services-CA.pem" would overwrite services-ca.pem.
    folded = name.lower()
    if folded in _CA_STEMS or folded.endswith("-key"):
        raise InvalidNameError(
            f"invalid name {name!r}: {', '.join(sorted(map(repr, _CA_STEMS)))} and names "
            "ending in '-key' would overwrite other files"
        )
    return name


def check_bank_name(name: str) -> str:
    """Returns NAME if it may name a bank; raises InvalidNameError (ReservedNameError)."""
    check_name(name)
    if not _BANK_NAME.fullmatch(name):
        raise InvalidNameError(
            f"invalid bank name {name!r}: it becomes a DNS label, so use 1-63 lower-case "
            "letters, digits or '-', starting and ending with a letter or digit"
        )
    if name == GATEWAY:
        raise ReservedNameError(f"{name!r} is the gateway's name; a bank may not carry it")
    if name in (ADMIN, *DEFAULT_CLIENTS):
        which = "the admin" if name == ADMIN else "a default client"
        raise ReservedNameError(
            f"{name!r} is a client's name ({which}); a service certificate may not carry it"
        )
    return name


def check_client_name(name: str) -> str:
    """Returns NAME if it may name a customer's or admin's certificate; raises InvalidNameError.

    The names of the gateway and of the default banks are refused, in any case: a client
    certificate named like a service would at best confuse logs and people.
    """
    check_name(name)
    folded = name.lower()
    if folded == GATEWAY:
        raise ReservedNameError(
            f"{name!r} is a service's name (the gateway); a client certificate may not carry it"
        )
    if folded in DEFAULT_BANKS:
        raise ReservedNameError(
            f"{name!r} is a service's name (a default bank); a client certificate may not carry it"
        )
    return name


def leaf_files(out: Path, name: str) -> tuple[Path, Path]:
    """The (certificate, private key) paths of leaf NAME in folder OUT."""
    check_name(name)
    return Path(out) / f"{name}.pem", Path(out) / f"{name}-key.pem"


def obsolete_files(out: Path) -> list[Path]:
    """The files of the previous single-CA layout that are still in OUT (nothing uses them)."""
    return [path for path in (Path(out) / name for name in OBSOLETE_FILES) if _exists(path)]


def ensure_dev_pki(
    out: Path,
    banks: Sequence[str] = DEFAULT_BANKS,
    clients: Sequence[str] = DEFAULT_CLIENTS,
    force: bool = False,
) -> list[tuple[str, Path]]:
    """Makes sure OUT holds both CAs, a service certificate for the gateway and each bank, and
    a client certificate for admin and each client.

    Existing files are kept, and checked first: a leaf not issued by the right CA, whose key
    does not match, or that does not carry its identity is an error (and nothing is written)
    rather than being silently replaced. A missing CA, or ``force``, creates a new CA and
    therefore regenerates every leaf it signs. A leaf with only one of its two files present is
    regenerated. Returns ``(CREATED | KEPT, path)`` for every file: the services CA, the
    service leaves, the clients CA, the client leaves.
    """
    services, customers = _leaves(banks, clients)
    out = Path(out)
    _make_dir(out)
    with _locked(out):
        _check_not_taken(out, [*services, *customers])
        # Everything is loaded and checked before anything is written: an error leaves the
        # folder as it was.
        plan = []
        for spec, leaves in ((_SERVICES, services), (_CLIENTS, customers)):
            ca = None if force else _load_ca(out, spec)
            # With a new CA every leaf is new: those signed by the previous CA would no longer
            # verify against it.
            kept = {
                leaf.name for leaf in leaves if ca is not None and _existing_leaf(out, ca, leaf)
            }
            plan.append((spec, leaves, ca, kept))
        actions: list[tuple[str, Path]] = []
        for spec, leaves, ca, kept in plan:
            if ca is None:
                ca = _create_ca(out, spec)
                actions += [(CREATED, out / name) for name in spec.files]
            else:
                actions += [(KEPT, out / name) for name in spec.files]
            for leaf in leaves:
                if leaf.name in kept:
                    actions += [(KEPT, path) for path in leaf_files(out, leaf.name)]
                else:
                    actions += _create_leaf(out, ca, leaf)
    return actions


def issue_service(
    out: Path, name: str, *, bank: bool, force: bool = False
) -> list[tuple[str, Path]]:
    """Issues the service certificate of the gateway (``bank=False``, NAME must be "gateway")
    or of bank NAME from the services CA in OUT, unless it already exists (or ``force``).

    Returns ``(CREATED | KEPT, path)`` for the certificate and the key. Raises NoCAError if
    OUT has no services CA (a CA is never created or replaced here), and ReservedNameError if
    NAME is a client's.
    """
    if bank:
        leaf = _bank_leaf(name)
    elif name == GATEWAY:
        leaf = _gateway_leaf()
    else:
        raise InvalidNameError(
            f"the only service that is not a bank is {GATEWAY!r}, not {name!r}; "
            "pass bank=True to issue a bank's certificate"
        )
    return _issue(out, leaf, force)


def issue_client(out: Path, name: str, force: bool = False) -> list[tuple[str, Path]]:
    """Issues the client certificate NAME (a customer's or an admin's) from the clients CA in
    OUT, unless it already exists (or ``force``).

    Returns ``(CREATED | KEPT, path)`` for the certificate and the key. Raises NoCAError if
    OUT has no clients CA, and ReservedNameError if NAME is a service's: the gateway, a default
    bank, or any name with a service certificate in OUT.
    """
    return _issue(out, _client_leaf(name), force)


def _issue(out: Path, leaf: _Leaf, force: bool) -> list[tuple[str, Path]]:
    out = Path(out)
    if not _exists(out):
        raise _no_ca(out, leaf.ca)
    with _locked(out):
        ca = _load_ca(out, leaf.ca)
        if ca is None:
            raise _no_ca(out, leaf.ca)
        _check_not_taken(out, [leaf])
        return _ensure_leaf(out, ca, leaf, force=force)


def _no_ca(out: Path, spec: _CA) -> NoCAError:
    return NoCAError(
        f"no {spec.title} in {out} ({spec.cert_file}); run 'python -m certificate init' first"
    )


def _gateway_leaf() -> _Leaf:
    return _Leaf(GATEWAY, _SERVICES, GATEWAY_SERVER_NAME, GATEWAY_ID)


def _bank_leaf(name: str) -> _Leaf:
    check_bank_name(name)
    return _Leaf(name, _SERVICES, bank_server_name(name), bank_id(name))


def _client_leaf(name: str) -> _Leaf:
    check_client_name(name)
    return _Leaf(name, _CLIENTS, None, client_id(name))


def _leaves(banks: Sequence[str], clients: Sequence[str]) -> tuple[list[_Leaf], list[_Leaf]]:
    """The service leaves and the client leaves of a folder, their names checked."""
    # A bare string is a Sequence[str] too, and would silently become one leaf per character.
    if isinstance(banks, str) or isinstance(clients, str):
        raise TypeError("banks and clients must be sequences of names, not a single string")
    services = [_gateway_leaf(), *(_bank_leaf(name) for name in dict.fromkeys(banks))]
    customers = [_client_leaf(name) for name in dict.fromkeys([ADMIN, *clients])]
    service_names = {leaf.name.lower() for leaf in services}
    for leaf in customers:
        if leaf.name.lower() in service_names:
            raise ReservedNameError(
                f"{leaf.name!r} is both a bank and a client; a name is one or the other"
            )
    return services, customers


def _check_not_taken(out: Path, leaves: Iterable[_Leaf]) -> None:
    """Raises ReservedNameError if a leaf's name has a certificate of the other kind in OUT."""
    for leaf in leaves:
        for path in _certificates_named(out, leaf.name):
            other = _kind_of(path)
            if other is not None and other is not leaf.ca:
                raise ReservedNameError(
                    f"{leaf.name!r} is a {other.signs}'s name ({path} is a {other.signs} "
                    f"certificate); a {leaf.ca.signs} certificate may not carry it"
                )


def _certificates_named(out: Path, name: str) -> list[Path]:
    """The certificate files in OUT for leaf NAME, compared as a case-insensitive filesystem
    would: on one, "Alpha.pem" is alpha.pem."""
    wanted = f"{name}.pem".lower()
    try:
        return [path for path in out.iterdir() if path.name.lower() == wanted]
    except OSError as exc:
        raise CertificateError(f"cannot list {out}: {exc.strerror or exc}") from None


def _kind_of(path: Path) -> _CA | None:
    """Which kind of certificate PATH is, by the identity it carries; None if it carries none
    (not a certificate, or one from the old layout)."""
    try:
        cert = x509.load_pem_x509_certificate(_read(path))
    except ValueError:
        return None
    for uri in _uris(cert):
        if uri == GATEWAY_ID or bank_of(uri) is not None:
            return _SERVICES
        if uri.startswith(_CLIENT_ID_PREFIX):
            return _CLIENTS
    return None


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(sans.get_values_for_type(x509.UniformResourceIdentifier))


def _ensure_leaf(out: Path, ca: _Authority, leaf: _Leaf, force: bool) -> list[tuple[str, Path]]:
    if not force and _existing_leaf(out, ca, leaf):
        return [(KEPT, path) for path in leaf_files(out, leaf.name)]
    return _create_leaf(out, ca, leaf)


def _existing_leaf(out: Path, ca: _Authority, leaf: _Leaf) -> bool:
    """True if LEAF's two files exist and are fine to keep, False if it must be (re)created;
    raises CertificateError if they exist but are not right."""
    cert_path, key_path = leaf_files(out, leaf.name)
    if not (_exists(cert_path) and _exists(key_path)):
        return False
    _check_leaf(ca, leaf, cert_path, key_path)
    return True


def _create_ca(out: Path, spec: _CA) -> _Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name)])
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
    path = out / spec.cert_file
    _write_key(out / spec.key_file, key)
    _write_cert(path, cert)
    return _Authority(spec=spec, cert=cert, key=key, path=path)


def _create_leaf(out: Path, ca: _Authority, leaf: _Leaf) -> list[tuple[str, Path]]:
    assert ca.spec is leaf.ca, f"{leaf.name} must be signed by the {leaf.ca.title}"
    cert_path, key_path = leaf_files(out, leaf.name)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    # A leaf cannot be valid for longer than the CA that vouches for it.
    not_after = min(now + LEAF_VALIDITY, ca.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, leaf.name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(leaf.usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(leaf.sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return [(CREATED, cert_path), (CREATED, key_path)]


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


def _load_ca(out: Path, spec: _CA) -> _Authority | None:
    """The CA SPEC in OUT, None if OUT has none, or CertificateError if it is unusable."""
    cert_path, key_path = out / spec.cert_file, out / spec.key_file
    have_cert, have_key = _exists(cert_path), _exists(key_path)
    if not have_cert and not have_key:
        return None
    if not (have_cert and have_key):
        # Guessing here could replace a CA that other folders or processes already trust.
        present, missing = (cert_path, key_path) if have_cert else (key_path, cert_path)
        raise CertificateError(
            f"{missing} is missing but {present} exists; "
            "run 'python -m certificate init --force' to make new CAs"
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
    # The two CAs must stay two: the services tell them apart by their names, and a copy of one
    # in the other's files would let it sign the other kind of certificate.
    if cert.subject != x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name)]):
        raise CertificateError(
            f"{cert_path} is not the {spec.title} (its subject is "
            f"{cert.subject.rfc4514_string()!r}, not CN={spec.common_name}); "
            "run 'python -m certificate init --force' to make new CAs"
        )
    if cert.not_valid_after_utc <= _now():
        raise CertificateError(
            f"{cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
            "run 'python -m certificate init --force'"
        )
    return _Authority(spec=spec, cert=cert, key=key, path=cert_path)


def _check_leaf(ca: _Authority, leaf: _Leaf, cert_path: Path, key_path: Path) -> None:
    """Raises CertificateError unless the leaf on disk is LEAF, usable with this CA."""
    cert = _load_cert(cert_path)
    key = _load_key(key_path)
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(f"{cert_path} was not issued by {ca.path}; {_FORCE_HINT}") from None
    if not _same_public_key(cert, key):
        raise CertificateError(f"{key_path} is not the private key of {cert_path}; {_FORCE_HINT}")
    try:
        sans = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    try:
        usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = []
    same_sans = len(sans) == len(leaf.sans) and set(sans) == set(leaf.sans)
    if not same_sans or set(usages) != set(leaf.usages):
        raise CertificateError(
            f"{cert_path} is not {leaf.name}'s {leaf.ca.signs} certificate (it must carry "
            f"exactly {', '.join(_describe(name) for name in leaf.sans)}); {_FORCE_HINT}"
        )
    if cert.not_valid_after_utc <= _now():
        raise CertificateError(
            f"{cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; {_FORCE_HINT}"
        )


def _describe(name: x509.GeneralName) -> str:
    kind = "DNS" if isinstance(name, x509.DNSName) else "URI"
    return f"{kind}:{name.value}"


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
