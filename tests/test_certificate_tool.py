"""Tests of the dev certificate tool (certificate/): the files it writes, what the certificates
contain, that they work for mutual TLS, when files are kept or regenerated, and its errors.

Everything is written under tmp_path; certificate/dev/ is never touched.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certificate.ca import (
    CA_COMMON_NAME,
    DEFAULT_BANKS,
    CertificateError,
    InvalidNameError,
    NoCAError,
    ensure_dev_pki,
    issue_leaf,
    make_ca,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
LEAVES = ("gateway", *DEFAULT_BANKS, "admin", "client-1", "client-2")


def expected_files(leaves: tuple[str, ...] = LEAVES) -> set[str]:
    names = {"ca.pem", "ca-key.pem"}
    for leaf in leaves:
        names |= {f"{leaf}.pem", f"{leaf}-key.pem"}
    return names


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


def assert_issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> None:
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert leaf.signature_hash_algorithm is not None
    # Raises InvalidSignature if the CA's key did not sign this certificate.
    public.verify(
        leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm)
    )
    assert leaf.issuer == ca.subject


def tls_handshake(ca: Path, server: tuple[Path, Path], client: tuple[Path, Path]) -> None:
    """A mutual TLS handshake in memory, verified by OpenSSL as gRPC's peers would do it."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*server)
    server_ctx.load_verify_locations(ca)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_cert_chain(*client)
    client_ctx.load_verify_locations(ca)

    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_conn = client_ctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    server_conn = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, conn in (("client", client_conn), ("server", server_conn)):
            if not done[name]:
                try:
                    conn.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    peer = server_conn.getpeercert()
    assert peer is not None
    assert peer["subject"] == ((("commonName", client[0].stem),),)


# --- init ------------------------------------------------------------------------------------


def test_init_creates_every_file_with_private_keys_0600(tmp_path: Path) -> None:
    actions = ensure_dev_pki(tmp_path)

    assert {p.name for p in tmp_path.iterdir()} == expected_files()
    assert {action for action, _ in actions} == {"created"}
    assert {path.name for _, path in actions} == expected_files()
    for path in tmp_path.iterdir():
        assert mode(path) == (0o600 if path.name.endswith("-key.pem") else 0o644), path.name


def test_key_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ensure_dev_pki(tmp_path)
    finally:
        os.umask(old)
    assert mode(tmp_path / "alpha-key.pem") == 0o600
    assert mode(tmp_path / "ca-key.pem") == 0o600
    assert mode(tmp_path / "alpha.pem") == 0o644


def test_ca_is_a_self_signed_ten_year_ca(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    ca = load_cert(tmp_path / "ca.pem")

    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CA_COMMON_NAME
    assert_issued_by(ca, ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert datetime.timedelta(days=3650) <= lifetime <= datetime.timedelta(days=3651)


@pytest.mark.parametrize("name", LEAVES)
def test_leaf_verifies_against_the_ca(tmp_path: Path, name: str) -> None:
    ensure_dev_pki(tmp_path)
    ca = load_cert(tmp_path / "ca.pem")
    leaf = load_cert(tmp_path / f"{name}.pem")

    assert_issued_by(leaf, ca)
    leaf.verify_directly_issued_by(ca)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name

    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    assert not usage.key_cert_sign
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert datetime.timedelta(days=825) <= lifetime <= datetime.timedelta(days=826)

    key = serialization.load_pem_private_key(
        (tmp_path / f"{name}-key.pem").read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == leaf.public_key()
    assert b"BEGIN PRIVATE KEY" in (tmp_path / f"{name}-key.pem").read_bytes()  # PKCS8


def test_certificates_work_for_mutual_tls(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    tls_handshake(
        tmp_path / "ca.pem",
        server=(tmp_path / "alpha.pem", tmp_path / "alpha-key.pem"),
        client=(tmp_path / "gateway.pem", tmp_path / "gateway-key.pem"),
    )


def test_a_foreign_ca_is_independent_and_rejected(tmp_path: Path) -> None:
    ours, foreign = tmp_path / "ours", tmp_path / "foreign"
    ensure_dev_pki(ours)
    make_ca(foreign)
    intruder = issue_leaf(foreign, "client-1")

    assert (foreign / "ca.pem").read_bytes() != (ours / "ca.pem").read_bytes()
    # Same CA name, different key: the signature check is what tells them apart.
    with pytest.raises(InvalidSignature):
        load_cert(intruder).verify_directly_issued_by(load_cert(ours / "ca.pem"))
    with pytest.raises(ssl.SSLError):
        tls_handshake(
            ours / "ca.pem",
            server=(ours / "alpha.pem", ours / "alpha-key.pem"),
            client=(intruder, foreign / "client-1-key.pem"),
        )


def test_rerun_keeps_every_file(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    before = snapshot(tmp_path)

    actions = ensure_dev_pki(tmp_path)

    assert {action for action, _ in actions} == {"kept"}
    assert len(actions) == len(before)
    assert snapshot(tmp_path) == before


def test_rerun_regenerates_only_a_half_present_leaf(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    (tmp_path / "beta-key.pem").unlink()
    before = snapshot(tmp_path)

    actions = dict((path.name, action) for action, path in ensure_dev_pki(tmp_path))

    assert actions["beta.pem"] == actions["beta-key.pem"] == "created"
    assert {a for n, a in actions.items() if not n.startswith("beta")} == {"kept"}
    after = snapshot(tmp_path)
    assert after["beta.pem"] != before["beta.pem"]
    assert {n: v for n, v in after.items() if not n.startswith("beta")} == {
        n: v for n, v in before.items() if not n.startswith("beta")
    }
    load_cert(tmp_path / "beta.pem").verify_directly_issued_by(load_cert(tmp_path / "ca.pem"))


def test_force_regenerates_everything(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    before = snapshot(tmp_path)

    actions = ensure_dev_pki(tmp_path, force=True)

    assert {action for action, _ in actions} == {"created"}
    after = snapshot(tmp_path)
    assert after.keys() == before.keys()
    for name in after:
        assert after[name][1] != before[name][1], name
    ca = load_cert(tmp_path / "ca.pem")
    for leaf in LEAVES:
        load_cert(tmp_path / f"{leaf}.pem").verify_directly_issued_by(ca)


def test_a_new_ca_regenerates_every_leaf(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    (tmp_path / "ca.pem").unlink()
    (tmp_path / "ca-key.pem").unlink()

    actions = ensure_dev_pki(tmp_path)

    assert {action for action, _ in actions} == {"created"}
    ca = load_cert(tmp_path / "ca.pem")
    for leaf in LEAVES:
        load_cert(tmp_path / f"{leaf}.pem").verify_directly_issued_by(ca)


def test_banks_can_be_chosen(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path, banks=("delta",))
    assert {p.name for p in tmp_path.iterdir()} == expected_files(
        ("gateway", "delta", "admin", "client-1", "client-2")
    )


def test_cli_init_prints_one_line_per_file_and_honours_bank(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    first = run_tool("init", "--out", str(out), "--bank", "delta", "--bank", "epsilon")
    assert first.returncode == 0, first.stderr
    leaves = ("gateway", "delta", "epsilon", "admin", "client-1", "client-2")
    assert {p.name for p in out.iterdir()} == expected_files(leaves)
    lines = first.stdout.splitlines()
    assert len(lines) == len(expected_files(leaves))
    assert all(line.startswith(f"created {out}/") for line in lines)

    again = run_tool("init", "--out", str(out), "--bank", "delta", "--bank", "epsilon")
    assert again.returncode == 0, again.stderr
    assert all(line.startswith("kept ") for line in again.stdout.splitlines())

    forced = run_tool("init", "--out", str(out), "--force", "--bank", "delta")
    assert forced.returncode == 0, forced.stderr
    assert all(line.startswith("created ") for line in forced.stdout.splitlines())


def test_a_leaf_from_another_ca_is_reported_not_kept(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path / "ours")
    make_ca(tmp_path / "other")
    issue_leaf(tmp_path / "other", "alpha")
    for suffix in (".pem", "-key.pem"):
        (tmp_path / "ours" / f"alpha{suffix}").write_bytes(
            (tmp_path / "other" / f"alpha{suffix}").read_bytes()
        )

    with pytest.raises(CertificateError, match="not issued by"):
        ensure_dev_pki(tmp_path / "ours")
    issue_leaf(tmp_path / "ours", "alpha", force=True)
    ensure_dev_pki(tmp_path / "ours")


# --- issue -----------------------------------------------------------------------------------


def test_issue_adds_a_leaf_signed_by_the_existing_ca(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    before = snapshot(tmp_path)

    cert_path = issue_leaf(tmp_path, "client-3")

    assert cert_path == tmp_path / "client-3.pem"
    assert mode(tmp_path / "client-3-key.pem") == 0o600
    leaf = load_cert(cert_path)
    assert_issued_by(leaf, load_cert(tmp_path / "ca.pem"))
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "client-3"
    after = snapshot(tmp_path)
    assert {n: v for n, v in after.items() if not n.startswith("client-3")} == before

    kept = snapshot(tmp_path)
    issue_leaf(tmp_path, "client-3")
    assert snapshot(tmp_path) == kept
    issue_leaf(tmp_path, "client-3", force=True)
    assert snapshot(tmp_path)["client-3.pem"] != kept["client-3.pem"]


def test_cli_issue(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    result = run_tool("issue", "client-3", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"created {tmp_path / 'client-3.pem'}",
        f"created {tmp_path / 'client-3-key.pem'}",
    ]
    load_cert(tmp_path / "client-3.pem").verify_directly_issued_by(load_cert(tmp_path / "ca.pem"))


def test_cli_issue_without_a_ca_fails_cleanly(tmp_path: Path) -> None:
    result = run_tool("issue", "x", "--out", str(tmp_path))

    assert_clean_error(result, code=2)
    assert result.stderr.strip() == (
        f"error: no CA in {tmp_path}; run 'python -m certificate init' first"
    )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NoCAError):
        issue_leaf(tmp_path / "missing", "x")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    "name", ["../evil", "-x", ".hidden", "a/b", "x" * 65, "bad name", "CA", "alpha-key", "é"]
)
def test_cli_issue_rejects_bad_names(tmp_path: Path, name: str) -> None:
    ensure_dev_pki(tmp_path)
    before = snapshot(tmp_path)

    result = run_tool("issue", "--out", str(tmp_path), "--", name)

    assert_clean_error(result, code=2)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["", "x\n", "a" * 65, "ca", "Ca", "gateway-key", "x y"])
def test_api_rejects_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidNameError):
        ensure_dev_pki(tmp_path, banks=(name,))
    with pytest.raises(InvalidNameError):
        issue_leaf(tmp_path, name)


# --- errors and help -------------------------------------------------------------------------


def test_cli_reports_a_corrupt_ca_in_one_line(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    (tmp_path / "ca.pem").write_text("not a certificate\n")

    assert_clean_error(run_tool("init", "--out", str(tmp_path)))
    assert_clean_error(run_tool("issue", "client-3", "--out", str(tmp_path)))


def test_cli_reports_a_half_present_ca_in_one_line(tmp_path: Path) -> None:
    ensure_dev_pki(tmp_path)
    (tmp_path / "ca-key.pem").unlink()

    assert_clean_error(run_tool("init", "--out", str(tmp_path)))
    assert run_tool("init", "--out", str(tmp_path), "--force").returncode == 0


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


@pytest.mark.parametrize("args", [(), ("init",), ("issue",)])
def test_help(args: tuple[str, ...]) -> None:
    result = run_tool(*args, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m certificate")
    assert result.stderr == ""


def test_concurrent_inits_agree_on_one_ca(tmp_path: Path) -> None:
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
    ca = load_cert(tmp_path / "ca.pem")
    for leaf in LEAVES:
        load_cert(tmp_path / f"{leaf}.pem").verify_directly_issued_by(ca)
    assert {p.name for p in tmp_path.iterdir()} == expected_files()
