"""Who is who in minipay's mutual TLS: the names a service's certificate carries, shared by
the servers, the client library and the certificate tool.

Services (the gateway and each bank) get their certificates from the *services CA*; customers
and admins get theirs from a separate *clients CA*, so a customer's certificate can never
carry a service's identity. A service certificate carries two names:

- a DNS name that TLS itself checks when someone connects to the service (clients connect to
  an address and ask, with a target name override, for this name): ``gateway.minipay.internal``
  and ``<bank>.bank.minipay.internal``;
- a SPIFFE URI that servers check when the service calls them: ``spiffe://minipay/gateway`` and
  ``spiffe://minipay/bank/<bank>``.

A client certificate carries ``spiffe://minipay/client/<name>`` and client usage only.
"""

from __future__ import annotations

TRUST_DOMAIN = "minipay"
DNS_SUFFIX = "minipay.internal"

GATEWAY_SERVER_NAME = f"gateway.{DNS_SUFFIX}"
GATEWAY_ID = f"spiffe://{TRUST_DOMAIN}/gateway"
_BANK_ID_PREFIX = f"spiffe://{TRUST_DOMAIN}/bank/"
_CLIENT_ID_PREFIX = f"spiffe://{TRUST_DOMAIN}/client/"


def bank_server_name(bank: str) -> str:
    return f"{bank}.bank.{DNS_SUFFIX}"


def bank_id(bank: str) -> str:
    return _BANK_ID_PREFIX + bank


def client_id(name: str) -> str:
    return _CLIENT_ID_PREFIX + name


def bank_of(spiffe_id: str) -> str | None:
    """The bank a SPIFFE id names, or None."""
    return (
        spiffe_id.removeprefix(_BANK_ID_PREFIX) if spiffe_id.startswith(_BANK_ID_PREFIX) else None
    )
