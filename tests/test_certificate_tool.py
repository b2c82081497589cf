"""Tests of the dev certificate tool (certificate/): the files it writes, what the certificates
contain, that they work for mutual TLS (and that a certificate of one kind never passes for the
other), when files are kept or regenerated, and its errors.

Everything is written under tmp_path; certificate/dev/ is never touched.
"""

from __future__ import annotations

import argparse
import datetime
import os
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certificate.__main__ import build_parser
from certificate.ca import (
    CLIENTS_CA,
    CLIENTS_CA_COMMON_NAME,
    CLIENTS_CA_KEY,
    DEFAULT_BANKS,
    SERVICES_CA,
    SERVICES_CA_COMMON_NAME,
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
from minipay.service_names import (
    GATEWAY_ID,
    GATEWAY_SERVER_NAME,
    bank_id,
    bank_server_name,
    client_id,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("gateway", *DEFAULT_BANKS)
CLIENTS = ("admin", "client-1", "client-2")
LEAVES = (*SERVICES, *CLIENTS)
CAS = {SERVICES_CA: SERVICES_CA_KEY, CLIENTS_CA: CLIENTS_CA_KEY}


def expected_files(
    services: tuple[str, ...] = SERVICES, clients: tuple[str, ...] = CLIENTS
) -> set[str]:
    names = {*CAS, *CAS.values()}
    for leaf in (*services, *clients):
        names |= {f"{leaf}.pem", f"{leaf}-key.pem"}
    return names


def service_identity(name: str) -> tuple[str, str]:
    """The DNS name and SPIFFE id that service NAME's certificate must carry."""
    if name == "gateway":
        return GATEWAY_SERVER_NAME, GATEWAY_ID
    return bank_server_name(name), bank_id(name)


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certificate", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int | None = None) -> None:
    assert result.returncode != 0
    if code is not None:
        assert result.returncode == code
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.glob("*.pem")}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def assert_issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> None:
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert leaf.signature_hash_algorithm is not None
    # Raises InvalidSignature if the CA's key did not sign this certificate.
    public.verify(
        leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm)
    )
    assert leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)


def assert_not_issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> None:
    assert leaf.issuer != ca.subject
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert leaf.signature_hash_algorithm is not None
    with pytest.raises(InvalidSignature):
        public.verify(
            leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm)
        )


class Refused(Exception):
    """A handshake that one side refused: which side, and OpenSSL's reason."""

    def __init__(self, side: str, error: ssl.SSLError) -> None:
        super().__init__(f"{side}: {error}")
        self.side = side
        self.error = error


def tls_handshake(
    folder: Path,
    *,
    server: str,
    server_trusts: tuple[str, ...],
    client: str,
    client_trusts: tuple[str, ...],
    server_hostname: str,
) -> dict[str, object]:
    """A mutual TLS handshake in memory, verified by OpenSSL as gRPC's peers would do it: the
    client checks the server's certificate against SERVER_HOSTNAME, the server requires a
    client certificate. Returns the client certificate the server saw; raises Refused."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*leaf_files(folder, server))
    for ca in server_trusts:
        server_ctx.load_verify_locations(folder / ca)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    client_ctx.load_cert_chain(*leaf_files(folder, client))
    for ca in client_trusts:
        client_ctx.load_verify_locations(folder / ca)

    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_conn = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server_conn = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, conn in (("client", client_conn), ("server", server_conn)):
            if not done[side]:
                try:
                    conn.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    raise Refused(side, exc) from exc
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    peer = server_conn.getpeercert()
    assert peer is not None
    return dict(peer)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default folder, for the tests that only read it."""
    folder = tmp_path_factory.mktemp("pki")
    ensure_dev_pki(folder)
    return folder


# --- init: files -----------------------------------------------------------------------------


def test_init_creates_every_file_with_private_keys_0600(tmp_path: Path) -> None:
    actions = ensure_dev_pki(tmp_path)

    assert {p.name for p in tmp_path.iterdir()} == expected_files()
    assert {action for action, _ in actions} == {"created"}
    assert [path.name for _, path in actions] == [
        "services-ca.pem",
        "services-ca-key.pem",
        *(f for name in SERVICES for f in (f"{name}.pem", f"{name}-key.pem")),
        "clients-ca.pem",
        "clients-ca-key.pem",
        *(f for name in CLIENTS for f in (f"{name}.pem", f"{name}-key.pem")),
    ]
    for path in tmp_path.iterdir():
        assert mode(path) == (0o600 if path.name.endswith("-key.pem") else 0o644), path.name
    assert not (tmp_path / "ca.pem").exists()


def test_key_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ensure_dev_pki(tmp_path)
    finally:
        os.umask(old)
    for name in ("alpha-key.pem", "client-1-key.pem", SERVICES_CA_KEY, CLIENTS_CA_KEY):
        assert mode(tmp_path / name) == 0o600, name
    for name in ("alpha.pem", "client-1.pem", SERVICES_CA, CLIENTS_CA):
        assert mode(tmp_path / name) == 0o644, name


# --- what the certificates contain -----------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "cn"), [(SERVICES_CA, SERVICES_CA_COMMON_NAME), (CLIENTS_CA, CLIENTS_CA_COMMON_NAME)]
)
def test_each_ca_is_a_self_signed_ten_year_ca(pki: Path, file: str, cn: str) -> None:
    ca = load_cert(pki / file)

    assert cn == ("minipay services CA" if file == SERVICES_CA else "minipay clients CA")
    assert ca.subject == ca.issuer
    assert common_name(ca) == cn
    assert_issued_by(ca, ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert not usage.digital_signature
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert datetime.timedelta(days=3650) <= lifetime <= datetime.timedelta(days=3651)
    # Backdated by five minutes, for peers whose clock is a little behind.
    backdated = datetime.datetime.now(datetime.UTC) - ca.not_valid_before_utc
    assert datetime.timedelta(minutes=5) <= backdated <= datetime.timedelta(minutes=15)
    key = serialization.load_pem_private_key((pki / CAS[file]).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == ca.public_key()


def test_the_two_cas_are_independent(pki: Path) -> None:
    services, clients = load_cert(pki / SERVICES_CA), load_cert(pki / CLIENTS_CA)

    assert services.public_key() != clients.public_key()
    assert services.subject != clients.subject
    assert_not_issued_by(services, clients)
    assert_not_issued_by(clients, services)


def assert_leaf_basics(folder: Path, name: str, ca_file: str, other_ca_file: str) -> None:
    leaf = load_cert(folder / f"{name}.pem")
    assert_issued_by(leaf, load_cert(folder / ca_file))
    assert_not_issued_by(leaf, load_cert(folder / other_ca_file))
    assert common_name(leaf) == name
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert datetime.timedelta(days=825) <= lifetime <= datetime.timedelta(days=826)
    # A certificate carries no localhost and no IP address: every service would share them.
    assert not [san for san in sans(leaf) if isinstance(san, x509.IPAddress)]
    assert "localhost" not in [san.value for san in sans(leaf)]

    key_bytes = (folder / f"{name}-key.pem").read_bytes()
    key = serialization.load_pem_private_key(key_bytes, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == leaf.public_key()
    assert b"BEGIN PRIVATE KEY" in key_bytes  # PKCS8


@pytest.mark.parametrize("name", SERVICES)
def test_service_certificate_carries_exactly_its_dns_name_and_id(pki: Path, name: str) -> None:
    assert_leaf_basics(pki, name, SERVICES_CA, CLIENTS_CA)
    leaf = load_cert(pki / f"{name}.pem")
    dns, uri = service_identity(name)

    assert sans(leaf) == [x509.DNSName(dns), x509.UniformResourceIdentifier(uri)]
    assert sorted(usages(leaf), key=lambda oid: oid.dotted_string) == sorted(
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        key=lambda oid: oid.dotted_string,
    )


def test_service_names_come_from_minipay_identity() -> None:
    # The checks above compute the expected names with minipay.service_names; pin them once here.
    assert service_identity("gateway") == ("gateway.minipay.internal", "spiffe://minipay/gateway")
    assert service_identity("alpha") == (
        "alpha.bank.minipay.internal",
        "spiffe://minipay/bank/alpha",
    )
    assert client_id("client-1") == "spiffe://minipay/client/client-1"


@pytest.mark.parametrize("name", CLIENTS)
def test_client_certificate_carries_only_its_id_and_client_usage(pki: Path, name: str) -> None:
    assert_leaf_basics(pki, name, CLIENTS_CA, SERVICES_CA)
    leaf = load_cert(pki / f"{name}.pem")

    assert sans(leaf) == [x509.UniformResourceIdentifier(client_id(name))]
    assert usages(leaf) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_no_certificate_carries_localhost_or_an_ip(pki: Path) -> None:
    # A name every service shared would let any service answer for any other.
    for name in LEAVES:
        names = sans(load_cert(pki / f"{name}.pem"))
        assert not [n for n in names if isinstance(n, x509.IPAddress)], name
        assert not [n for n in names if "localhost" in str(n.value)], name
        assert len([n for n in names if isinstance(n, x509.UniformResourceIdentifier)]) == 1


# --- mutual TLS ------------------------------------------------------------------------------


def test_a_client_reaches_the_gateway(pki: Path) -> None:
    peer = tls_handshake(
        pki,
        server="gateway",
        server_trusts=(CLIENTS_CA,),
        client="client-1",
        client_trusts=(SERVICES_CA,),
        server_hostname=GATEWAY_SERVER_NAME,
    )
    assert peer["subject"] == ((("commonName", "client-1"),),)
    assert peer["subjectAltName"] == (("URI", client_id("client-1")),)


@pytest.mark.parametrize("impostor", ["alpha", "client-1"])
def test_a_client_refuses_anyone_but_the_gateway(pki: Path, impostor: str) -> None:
    # alpha's certificate is from the trusted CA but carries another name; client-1's is from
    # a CA that a client does not trust for servers.
    with pytest.raises(Refused) as refused:
        tls_handshake(
            pki,
            server=impostor,
            server_trusts=(CLIENTS_CA,),
            client="client-1",
            client_trusts=(SERVICES_CA,),
            server_hostname=GATEWAY_SERVER_NAME,
        )
    assert refused.value.side == "client"
    assert isinstance(refused.value.error, ssl.SSLCertVerificationError)
    if impostor == "alpha":
        assert "Hostname mismatch" in str(refused.value.error.verify_message)
    else:
        # 19: the server sent its chain up to a CA the client does not trust; 20: it did not.
        assert refused.value.error.verify_code in (19, 20), refused.value.error.verify_message


def test_a_client_certificate_cannot_serve_even_if_its_ca_is_trusted(pki: Path) -> None:
    # No serverAuth usage and no DNS name: refused whatever the client trusts.
    with pytest.raises(Refused) as refused:
        tls_handshake(
            pki,
            server="client-1",
            server_trusts=(CLIENTS_CA,),
            client="client-2",
            client_trusts=(SERVICES_CA, CLIENTS_CA),
            server_hostname=GATEWAY_SERVER_NAME,
        )
    assert refused.value.side == "client"
    assert isinstance(refused.value.error, ssl.SSLCertVerificationError)


def test_the_gateway_reaches_a_bank_that_refuses_clients(pki: Path) -> None:
    def call_alpha(client: str, server: str = "alpha") -> dict[str, object]:
        return tls_handshake(
            pki,
            server=server,
            server_trusts=(SERVICES_CA,),
            client=client,
            client_trusts=(SERVICES_CA,),
            server_hostname=bank_server_name("alpha"),
        )

    peer = call_alpha("gateway")
    assert peer["subjectAltName"] == (("DNS", GATEWAY_SERVER_NAME), ("URI", GATEWAY_ID))
    # A customer's certificate is from the clients CA, which a bank does not trust.
    with pytest.raises(Refused) as refused:
        call_alpha("client-1")
    assert refused.value.side == "server"
    # And the gateway, asking for alpha, refuses beta.
    with pytest.raises(Refused) as refused:
        call_alpha("gateway", server="beta")
    assert refused.value.side == "client"


def test_other_cas_are_independent_and_rejected(tmp_path: Path) -> None:
    ours, foreign = tmp_path / "ours", tmp_path / "foreign"
    ensure_dev_pki(ours)
    ensure_dev_pki(foreign)

    for ca, leaf in ((SERVICES_CA, "gateway"), (CLIENTS_CA, "client-1")):
        assert (foreign / ca).read_bytes() != (ours / ca).read_bytes()
        # Same CA name, different key: the signature check is what tells them apart.
        with pytest.raises(InvalidSignature):
            load_cert(foreign / f"{leaf}.pem").verify_directly_issued_by(load_cert(ours / ca))

    def connect(gateway_from: Path, client_from: Path) -> Refused:
        """Our CAs, with the gateway's and client-1's files from the folders given."""
        mixed = tmp_path / f"{gateway_from.name}-{client_from.name}"
        mixed.mkdir()
        for ca, key in CAS.items():
            (mixed / ca).write_bytes((ours / ca).read_bytes())
            (mixed / key).write_bytes((ours / key).read_bytes())
        for folder, name in ((gateway_from, "gateway"), (client_from, "client-1")):
            for path in leaf_files(folder, name):
                (mixed / path.name).write_bytes(path.read_bytes())
        with pytest.raises(Refused) as refused:
            tls_handshake(
                mixed,
                server="gateway",
                server_trusts=(CLIENTS_CA,),
                client="client-1",
                client_trusts=(SERVICES_CA,),
                server_hostname=GATEWAY_SERVER_NAME,
            )
        return refused.value

    # Our gateway refuses their client; our client refuses their gateway.
    assert connect(gateway_from=ours, client_from=foreign).side == "server"
    assert connect(gateway_from=foreign, client_from=ours).side == "client"


# --- keep and regenerate ---------------------------------------------------------------------


def test_rerun_keeps_every_file(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    before = snapshot(tmp_path)

    actions = ensure_dev_pki(tmp_path)

    assert {action for action, _ in actions} == {"kept"}
    assert len(actions) == len(before)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["beta", "client-2"])
def test_rerun_regenerates_only_a_half_present_leaf(tmp_path: Path, name: str) -> None:
    ensure_dev_pki(tmp_path)
    (tmp_path / f"{name}-key.pem").unlink()
    before = snapshot(tmp_path)

    actions = dict((path.name, action) for action, path in ensure_dev_pki(tmp_path))

    assert actions[f"{name}.pem"] == actions[f"{name}-key.pem"] == "created"
    assert {a for n, a in actions.items() if not n.startswith(name)} == {"kept"}
    after = snapshot(tmp_path)
    assert after[f"{name}.pem"] != before[f"{name}.pem"]
    assert {n: v for n, v in after.items() if not n.startswith(name)} == {
        n: v for n, v in before.items() if not n.startswith(name)
    }
    ca = SERVICES_CA if name in SERVICES else CLIENTS_CA
    assert_issued_by(load_cert(tmp_path / f"{name}.pem"), load_cert(tmp_path / ca))


def test_force_regenerates_everything(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    before = snapshot(tmp_path)

    actions = ensure_dev_pki(tmp_path, force=True)

    assert {action for action, _ in actions} == {"created"}
    after = snapshot(tmp_path)
    assert after.keys() == before.keys()
    for name in after:
        assert after[name][1] != before[name][1], name
    for leaf in SERVICES:
        assert_issued_by(load_cert(tmp_path / f"{leaf}.pem"), load_cert(tmp_path / SERVICES_CA))
    for leaf in CLIENTS:
        assert_issued_by(load_cert(tmp_path / f"{leaf}.pem"), load_cert(tmp_path / CLIENTS_CA))


@pytest.mark.parametrize(("ca", "signed"), [(SERVICES_CA, SERVICES), (CLIENTS_CA, CLIENTS)])
def test_a_new_ca_regenerates_the_leaves_it_signs_only(
    tmp_path: Path, ca: str, signed: tuple[str, ...]
) -> None:
    ensure_dev_pki(tmp_path)
    (tmp_path / ca).unlink()
    (tmp_path / CAS[ca]).unlink()
    before = snapshot(tmp_path)

    actions = {path.name: action for action, path in ensure_dev_pki(tmp_path)}

    renewed = {ca, CAS[ca], *(f"{n}.pem" for n in signed), *(f"{n}-key.pem" for n in signed)}
    assert {n for n, a in actions.items() if a == "created"} == renewed
    assert {n for n, a in actions.items() if a == "kept"} == expected_files() - renewed
    after = snapshot(tmp_path)
    unchanged = expected_files() - renewed
    assert {n: after[n] for n in unchanged} == {n: before[n] for n in unchanged}
    for name in renewed - {ca, CAS[ca]}:
        assert after[name][1] != before[name][1], name
    for leaf in signed:
        assert_issued_by(load_cert(tmp_path / f"{leaf}.pem"), load_cert(tmp_path / ca))


def test_banks_and_clients_can_be_chosen(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path, banks=("delta",), clients=("client-3",))
    assert {p.name for p in tmp_path.iterdir()} == expected_files(
        ("gateway", "delta"), ("admin", "client-3")
    )
    dns, uri = bank_server_name("delta"), bank_id("delta")
    assert sans(load_cert(tmp_path / "delta.pem")) == [
        x509.DNSName(dns),
        x509.UniformResourceIdentifier(uri),
    ]
    assert sans(load_cert(tmp_path / "client-3.pem")) == [
        x509.UniformResourceIdentifier(client_id("client-3"))
    ]


def test_cli_init_prints_one_line_per_file_and_honours_bank_and_client(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    args = ("init", "--out", str(out), "--bank", "delta", "--bank", "epsilon", "--client", "c-9")
    first = run_tool(*args)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    files = expected_files(("gateway", "delta", "epsilon"), ("admin", "c-9"))
    assert {p.name for p in out.iterdir()} == files
    lines = first.stdout.splitlines()
    assert len(lines) == len(files)
    assert all(line.startswith(f"created {out}/") for line in lines)

    again = run_tool(*args)
    assert again.returncode == 0, again.stderr
    assert len(again.stdout.splitlines()) == len(files)
    assert all(line.startswith("kept ") for line in again.stdout.splitlines())

    forced = run_tool("init", "--out", str(out), "--force", "--bank", "delta")
    assert forced.returncode == 0, forced.stderr
    assert all(line.startswith("created ") for line in forced.stdout.splitlines())


def test_cli_init_points_out_the_old_single_ca(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("the old CA\n")
    (tmp_path / "ca-key.pem").write_text("the old CA's key\n")

    result = run_tool("init", "--out", str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"note: {tmp_path / 'ca.pem'} and {tmp_path / 'ca-key.pem'} are left from the old single "
        "CA and nothing uses them any more; you may delete them"
    ]
    assert (tmp_path / "ca.pem").read_text() == "the old CA\n"  # left to the user


@pytest.mark.parametrize("name", ["alpha", "client-1"])
def test_a_leaf_from_another_ca_is_reported_not_kept(tmp_path: Path, name: str) -> None:
    ensure_dev_pki(tmp_path / "ours")
    ensure_dev_pki(tmp_path / "other")
    for suffix in (".pem", "-key.pem"):
        (tmp_path / "ours" / f"{name}{suffix}").write_bytes(
            (tmp_path / "other" / f"{name}{suffix}").read_bytes()
        )
    before = snapshot(tmp_path / "ours")

    with pytest.raises(CertificateError, match="not issued by"):
        ensure_dev_pki(tmp_path / "ours")
    assert snapshot(tmp_path / "ours") == before  # checked before anything was written
    if name in SERVICES:
        issue_service(tmp_path / "ours", name, bank=True, force=True)
    else:
        issue_client(tmp_path / "ours", name, force=True)
    ensure_dev_pki(tmp_path / "ours")


def test_a_leaf_of_the_other_kind_or_another_name_is_reported_not_kept(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    pristine = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def swap(target: str, source: str) -> None:
        for suffix in (".pem", "-key.pem"):
            (tmp_path / f"{target}{suffix}").write_bytes(pristine[f"{source}{suffix}"])

    # A customer's certificate where a bank's should be, and the other way round: refused
    # even with --force, which would otherwise turn a service's name into a client's.
    swap("alpha", "client-1")
    for force in (False, True):
        with pytest.raises(ReservedNameError, match=r"alpha\.pem is a client certificate"):
            ensure_dev_pki(tmp_path, force=force)
    swap("alpha", "alpha")
    swap("client-2", "gateway")
    with pytest.raises(ReservedNameError, match=r"client-2\.pem is a service certificate"):
        ensure_dev_pki(tmp_path)
    swap("client-2", "client-2")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == pristine
    swap("alpha", "beta")  # right CA, wrong identity
    with pytest.raises(CertificateError, match=r"alpha\.pem is not alpha's service certificate"):
        ensure_dev_pki(tmp_path)
    swap("alpha", "alpha")
    (tmp_path / "alpha-key.pem").write_bytes(pristine["beta-key.pem"])
    with pytest.raises(CertificateError, match=r"alpha-key\.pem is not the private key"):
        ensure_dev_pki(tmp_path)


# --- issue-service and issue-client ----------------------------------------------------------


def test_issue_client_adds_a_client_certificate(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    before = snapshot(tmp_path)

    actions = issue_client(tmp_path, "client-3")

    cert_path, key_path = tmp_path / "client-3.pem", tmp_path / "client-3-key.pem"
    assert actions == [("created", cert_path), ("created", key_path)]
    assert leaf_files(tmp_path, "client-3") == (cert_path, key_path)
    assert mode(key_path) == 0o600
    assert_leaf_basics(tmp_path, "client-3", CLIENTS_CA, SERVICES_CA)
    leaf = load_cert(cert_path)
    assert sans(leaf) == [x509.UniformResourceIdentifier(client_id("client-3"))]
    assert usages(leaf) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    after = snapshot(tmp_path)
    assert {n: v for n, v in after.items() if not n.startswith("client-3")} == before

    kept = snapshot(tmp_path)
    assert issue_client(tmp_path, "client-3") == [("kept", cert_path), ("kept", key_path)]
    assert snapshot(tmp_path) == kept
    issue_client(tmp_path, "client-3", force=True)
    assert snapshot(tmp_path)["client-3.pem"] != kept["client-3.pem"]


@pytest.mark.parametrize("name", ["gateway", "alpha", "delta"])
def test_issue_service_adds_or_replaces_a_service_certificate(tmp_path: Path, name: str) -> None:
    ensure_dev_pki(tmp_path)
    before = snapshot(tmp_path)
    bank = name != "gateway"

    actions = issue_service(tmp_path, name, bank=bank)

    expected = "created" if name == "delta" else "kept"
    assert actions == [(expected, path) for path in leaf_files(tmp_path, name)]
    assert_leaf_basics(tmp_path, name, SERVICES_CA, CLIENTS_CA)
    dns, uri = service_identity(name)
    assert sans(load_cert(tmp_path / f"{name}.pem")) == [
        x509.DNSName(dns),
        x509.UniformResourceIdentifier(uri),
    ]
    after = snapshot(tmp_path)
    assert {n: v for n, v in after.items() if not n.startswith(name)} == {
        n: v for n, v in before.items() if not n.startswith(name)
    }

    issue_service(tmp_path, name, bank=bank, force=True)
    assert snapshot(tmp_path)[f"{name}.pem"] != after[f"{name}.pem"]
    assert_issued_by(load_cert(tmp_path / f"{name}.pem"), load_cert(tmp_path / SERVICES_CA))


def test_issue_service_tells_the_gateway_from_a_bank(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    with pytest.raises(InvalidNameError, match="not a bank is 'gateway'"):
        issue_service(tmp_path, "alpha", bank=False)
    with pytest.raises(ReservedNameError, match="gateway's name"):
        issue_service(tmp_path, "gateway", bank=True)


def test_cli_issue_client_and_issue_service(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)

    client = run_tool("issue-client", "client-3", "--out", str(tmp_path))
    assert client.returncode == 0, client.stderr
    assert client.stdout.splitlines() == [
        f"created {tmp_path / 'client-3.pem'}",
        f"created {tmp_path / 'client-3-key.pem'}",
    ]
    assert_issued_by(load_cert(tmp_path / "client-3.pem"), load_cert(tmp_path / CLIENTS_CA))

    bank = run_tool("issue-service", "bank", "delta", "--out", str(tmp_path))
    assert bank.returncode == 0, bank.stderr
    assert bank.stdout.splitlines() == [
        f"created {tmp_path / 'delta.pem'}",
        f"created {tmp_path / 'delta-key.pem'}",
    ]
    assert sans(load_cert(tmp_path / "delta.pem"))[1] == x509.UniformResourceIdentifier(
        bank_id("delta")
    )

    gateway = run_tool("issue-service", "gateway", "--out", str(tmp_path), "--force")
    assert gateway.returncode == 0, gateway.stderr
    assert gateway.stdout.splitlines() == [
        f"created {tmp_path / 'gateway.pem'}",
        f"created {tmp_path / 'gateway-key.pem'}",
    ]
    assert_issued_by(load_cert(tmp_path / "gateway.pem"), load_cert(tmp_path / SERVICES_CA))


@pytest.mark.parametrize(
    "args",
    [
        ("issue-client", "gateway"),
        ("issue-client", "Gateway"),
        ("issue-client", "alpha"),
        ("issue-client", "GAMMA"),
        ("issue-client", "delta"),  # has a service certificate in the folder
        ("issue-client", "--force", "delta"),
        ("issue-service", "bank", "client-3"),  # has a client certificate in the folder
        ("issue-service", "bank", "--force", "client-3"),
        ("issue-service", "bank", "admin"),
        ("issue-service", "bank", "client-1"),
        ("issue-service", "bank", "gateway"),
    ],
)
def test_cli_refuses_a_name_of_the_other_kind(tmp_path: Path, args: tuple[str, ...]) -> None:
    ensure_dev_pki(tmp_path)
    issue_service(tmp_path, "delta", bank=True)
    issue_client(tmp_path, "client-3")
    before = snapshot(tmp_path)

    result = run_tool(*args, "--out", str(tmp_path))

    assert_clean_error(result, code=2)
    assert "may not carry it" in result.stderr
    assert snapshot(tmp_path) == before


def test_api_refuses_a_name_of_the_other_kind(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path, banks=("alpha",))
    before = snapshot(tmp_path)
    # The default banks are services' names even in a folder that does not have them.
    for name in ("gateway", "beta", "Alpha"):
        with pytest.raises(ReservedNameError, match="is a service's name"):
            issue_client(tmp_path, name)
    for banks, clients in [
        ((), ("alpha",)),
        (("delta",), ("delta",)),
        (("admin",), ()),
        (("gateway",), ()),
    ]:
        with pytest.raises(ReservedNameError):
            ensure_dev_pki(tmp_path, banks=banks, clients=clients)
    issue_service(tmp_path, "delta", bank=True)
    with pytest.raises(ReservedNameError, match=r"delta\.pem is a service certificate"):
        ensure_dev_pki(tmp_path, clients=("delta",), force=True)
    issue_client(tmp_path, "client-3")
    with pytest.raises(ReservedNameError, match=r"client-3\.pem is a client certificate"):
        issue_service(tmp_path, "client-3", bank=True, force=True)
    assert {n: v for n, v in snapshot(tmp_path).items() if n in before} == before


def test_the_old_issue_command_is_gone(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    before = snapshot(tmp_path)

    result = run_tool("issue", "client-3", "--out", str(tmp_path))

    assert_clean_error(result, code=2)
    assert "invalid choice: 'issue'" in result.stderr
    assert "'issue-service', 'issue-client'" in result.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "ca"),
    [
        (("issue-client", "x"), CLIENTS_CA),
        (("issue-service", "gateway"), SERVICES_CA),
        (("issue-service", "bank", "delta"), SERVICES_CA),
    ],
)
def test_cli_issue_without_a_ca_fails_cleanly(
    tmp_path: Path, args: tuple[str, ...], ca: str
) -> None:
    result = run_tool(*args, "--out", str(tmp_path))

    assert_clean_error(result, code=2)
    title = "clients CA" if ca == CLIENTS_CA else "services CA"
    assert result.stderr.strip() == (
        f"error: no {title} in {tmp_path} ({ca}); run 'python -m certificate init' first"
    )
    assert list(tmp_path.iterdir()) == []


def test_each_issue_needs_its_own_ca(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    (tmp_path / CLIENTS_CA).unlink()
    (tmp_path / CLIENTS_CA_KEY).unlink()
    with pytest.raises(NoCAError, match="no clients CA"):
        issue_client(tmp_path, "client-3")
    issue_service(tmp_path, "delta", bank=True)
    with pytest.raises(NoCAError):
        issue_client(tmp_path / "missing", "x")
    with pytest.raises(NoCAError):
        issue_service(tmp_path / "missing", "gateway", bank=False)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "-x",
        ".hidden",
        "a/b",
        "x" * 65,
        "bad name",
        "CA",
        "services-ca",
        "Clients-CA",
        "alpha-key",
        "é",
    ],
)
def test_cli_issue_client_rejects_bad_names(tmp_path: Path, name: str) -> None:
    ensure_dev_pki(tmp_path)
    before = snapshot(tmp_path)

    result = run_tool("issue-client", "--out", str(tmp_path), "--", name)

    assert_clean_error(result, code=2)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "name", ["Delta", "under_score", "dot.ted", "-x", "x-", "x" * 64, "clients-ca"]
)
def test_cli_issue_service_rejects_names_that_are_not_dns_labels(tmp_path: Path, name: str) -> None:
    ensure_dev_pki(tmp_path)
    before = snapshot(tmp_path)

    result = run_tool("issue-service", "bank", "--out", str(tmp_path), "--", name)

    assert_clean_error(result, code=2)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "name", ["", "x\n", "a" * 65, "ca", "Ca", "services-ca", "gateway-key", "x y"]
)
def test_api_rejects_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidNameError):
        ensure_dev_pki(tmp_path, banks=(name,))
    with pytest.raises(InvalidNameError):
        ensure_dev_pki(tmp_path, clients=(name,))
    with pytest.raises(InvalidNameError):
        issue_client(tmp_path, name)
    with pytest.raises(InvalidNameError):
        issue_service(tmp_path, name, bank=True)
    with pytest.raises(TypeError):
        ensure_dev_pki(tmp_path, banks="alpha")
    assert list(tmp_path.iterdir()) == []


# --- errors and help -------------------------------------------------------------------------


@pytest.mark.parametrize("ca", [SERVICES_CA, CLIENTS_CA])
def test_cli_reports_a_corrupt_ca_in_one_line(tmp_path: Path, ca: str) -> None:
    ensure_dev_pki(tmp_path)
    (tmp_path / ca).write_text("not a certificate\n")

    assert_clean_error(run_tool("init", "--out", str(tmp_path)))
    if ca == CLIENTS_CA:
        assert_clean_error(run_tool("issue-client", "client-3", "--out", str(tmp_path)))
    else:
        assert_clean_error(run_tool("issue-service", "bank", "delta", "--out", str(tmp_path)))


def test_a_swapped_ca_is_reported(tmp_path: Path) -> None:
    # A copy of one CA in the other's files would let it sign the other kind of certificate.
    ensure_dev_pki(tmp_path)
    (tmp_path / CLIENTS_CA).write_bytes((tmp_path / SERVICES_CA).read_bytes())
    (tmp_path / CLIENTS_CA_KEY).write_bytes((tmp_path / SERVICES_CA_KEY).read_bytes())

    with pytest.raises(CertificateError, match=r"clients-ca\.pem is not the clients CA"):
        ensure_dev_pki(tmp_path)
    with pytest.raises(CertificateError, match="is not the clients CA"):
        issue_client(tmp_path, "client-3")
    assert not (tmp_path / "client-3.pem").exists()


@pytest.mark.parametrize("missing", [SERVICES_CA_KEY, CLIENTS_CA])
def test_cli_reports_a_half_present_ca_in_one_line(tmp_path: Path, missing: str) -> None:
    ensure_dev_pki(tmp_path)
    (tmp_path / missing).unlink()
    before = snapshot(tmp_path)

    assert_clean_error(run_tool("init", "--out", str(tmp_path)))
    assert snapshot(tmp_path) == before
    assert run_tool("init", "--out", str(tmp_path), "--force").returncode == 0
    assert {p.name for p in tmp_path.iterdir()} == expected_files()


def test_cli_reports_an_unwritable_folder_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be\n")

    assert_clean_error(run_tool("init", "--out", str(blocker / "pki")))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_cli_reports_a_read_only_folder_in_one_line(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        assert_clean_error(run_tool("init", "--out", str(tmp_path)))
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.parametrize(
    "args",
    [
        ("issue-service", "bank"),
        ("issue-service",),
        ("issue-client",),
        ("init", "--bogus"),
        ("issue-service", "bank", "delta", "extra"),
        (),
    ],
)
def test_cli_usage_mistakes_are_one_line(args: tuple[str, ...]) -> None:
    result = run_tool(*args)
    assert_clean_error(result, code=2)
    assert "--help" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("init",),
        ("issue-service",),
        ("issue-service", "gateway"),
        ("issue-service", "bank"),
        ("issue-client",),
    ],
)
def test_help(args: tuple[str, ...]) -> None:
    result = run_tool(*args, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m certificate")
    assert result.stderr == ""


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


def test_every_command_and_flag_has_help() -> None:
    seen = 0
    for parser in parsers(build_parser()):
        for action in parser._actions:
            assert action.help, (parser.prog, action.dest)
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, (parser.prog, choice.dest)
            seen += 1
    assert seen > 10


def test_concurrent_inits_agree_on_both_cas(tmp_path: Path) -> None:
    # What pytest-xdist workers sharing one folder do: without the folder lock, one run could
    # sign leaves with a CA that another run then replaces.
    command = [sys.executable, "-m", "certificate", "init", "--out", str(tmp_path)]
    runs = [
        subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
    for leaf in SERVICES:
        assert_issued_by(load_cert(tmp_path / f"{leaf}.pem"), load_cert(tmp_path / SERVICES_CA))
    for leaf in CLIENTS:
        assert_issued_by(load_cert(tmp_path / f"{leaf}.pem"), load_cert(tmp_path / CLIENTS_CA))
    assert {p.name for p in tmp_path.iterdir()} == expected_files()
