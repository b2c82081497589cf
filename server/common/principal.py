"""Who is calling: the principal each request runs as, set by the authentication
interceptor and read by servicers through ``current_principal()``."""

from __future__ import annotations

import contextvars
import enum
from dataclasses import dataclass

from minipay.errors import ErrorReason
from server.common.errors import Unauthenticated
from server.common.tls import PeerIdentity


class Caller(enum.Enum):
    """The kinds of caller the permission table speaks of."""

    ANY_CERT = "any certificate"  # any peer with a certificate from our CA
    CUSTOMER = "customer"  # a customer's token, bound to the certificate presenting it
    ADMIN = "admin"  # an admin's token, bound likewise
    GATEWAY = "gateway"  # the gateway's service certificate (spiffe://minipay/gateway)
    BANK = "bank"  # a known bank's service certificate (spiffe://minipay/bank/NAME)


TOKEN_ROLES = {Caller.CUSTOMER: "customer", Caller.ADMIN: "admin"}


def identity(role: str, bank: str, username: str) -> str:
    """Who a user is across the system, as every rule about users is keyed (session cuts,
    disabling, the login throttle): an admin by name, a customer by bank and name, names in
    lower case. Usernames are unique at creation, but a customer opened at two banks before
    that rule is two people, and disabling one must not touch the other."""
    name = username.lower()
    return f"admin:{name}" if role == "admin" else f"customer:{bank}:{name}"


@dataclass(frozen=True)
class Claims:
    """A verified token's claims."""

    subject: str
    role: str
    bank: str
    account: str
    jti: str
    issued_at: float  # seconds since the epoch, to the millisecond
    expires_at: int

    @property
    def identity(self) -> str:
        return identity(self.role, self.bank, self.subject)


@dataclass(frozen=True)
class Principal:
    peer: PeerIdentity
    claims: Claims | None = None

    @property
    def username(self) -> str:
        return self.claims.subject if self.claims else ""

    @property
    def role(self) -> str:
        return self.claims.role if self.claims else ""


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "minipay_principal", default=None
)


def set_principal(principal: Principal) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


def peek_principal() -> Principal | None:
    return _current.get()


def current_principal() -> Principal:
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("no caller identity")
    return principal


def current_claims() -> Claims:
    claims = current_principal().claims
    if claims is None:
        raise Unauthenticated("this call needs a login token", ErrorReason.LOGIN_REQUIRED)
    return claims
