"""The authentication interceptor's reading of a caller: a service is a service only if the
services CA signed its certificate, whatever SPIFFE id the certificate carries. (At the banks
the handshake refuses a clients-CA certificate first; this is the check behind it.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from certificate.ca import SERVICES_CA, ensure_dev_pki
from minipay.service_names import GATEWAY_ID, bank_id
from server.common.errors import PermissionDenied
from server.common.principal import Principal
from server.common.tls import Peers
from server.interceptors.authentication import AuthInterceptor
from server.interceptors.authorization import allowed_callers
from tests.forged import forged_client_certificate

PREPARE = "/minipay.v1.Participant/Prepare"
GET_DECISION = "/minipay.v1.Coordinator/GetDecision"


class Context:
    """What the interceptor reads of a call: the verified peer certificate and address."""

    def __init__(self, pem: bytes) -> None:
        self._pem = pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._pem]}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    ensure_dev_pki(folder, clients=("client-1",))
    return folder


def authorize(pki: Path, method: str, pem: bytes) -> Principal:
    interceptor = AuthInterceptor(Peers(pki / SERVICES_CA), ["alpha"], verifier=None)
    return asyncio.run(interceptor.authorize(method, allowed_callers(method), Context(pem)))


def test_the_real_services_are_known(pki: Path) -> None:
    """The control: the same checks accept the certificates the services CA signed."""
    assert authorize(pki, PREPARE, (pki / "gateway.pem").read_bytes()).peer.is_service
    assert authorize(pki, GET_DECISION, (pki / "alpha.pem").read_bytes()).peer.is_service


@pytest.mark.parametrize(
    ("method", "name", "uri"),
    [(PREPARE, "gateway", GATEWAY_ID), (GET_DECISION, "alpha", bank_id("alpha"))],
    ids=["as-the-gateway", "as-a-bank"],
)
def test_a_clients_ca_certificate_with_a_service_s_id_is_no_service(
    pki: Path, tmp_path: Path, method: str, name: str, uri: str
) -> None:
    forged = forged_client_certificate(pki, tmp_path, name, uri)
    with pytest.raises(PermissionDenied):
        authorize(pki, method, forged.cert.read_bytes())
    with pytest.raises(PermissionDenied):  # nor is a customer's own certificate
        authorize(pki, method, (pki / "client-1.pem").read_bytes())
