"""Registration, login and logout. Customers' credentials live at their bank, which checks
them; admins' live in the gateway's database.

Every password check is throttled first (``throttle``: per normalized username and per client
certificate, reserved before the bcrypt work) and bounded in how many run at once
(``passwords``). Every failure to prove who you are gets one answer, which never tells which
part was wrong, whether the user exists or is disabled, or whether the password was right;
and a username nobody knows costs the same bcrypt work, at a bank, as one that exists.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from minipay.errors import ErrorReason
from server.common import validation
from server.common.db import Database
from server.common.errors import AlreadyExists, InvalidArgument, Unauthenticated
from server.common.passwords import Passwords, PasswordWork, hash_password
from server.common.principal import Claims
from server.gateway.banks import CredentialCheck
from server.gateway.models import Admin, Registration
from server.gateway.revocations import Revocations
from server.gateway.throttle import (
    Limit,
    LoginThrottle,
    ThrottleKey,
    certificate_key,
    username_key,
)
from server.gateway.tokens import TokenService

LOGIN_FAILED = (
    "wrong username or password, or the user is disabled "
    "(a customer registers once before the first login)"
)
REGISTER_FAILED = (
    "cannot register: wrong username, password, bank or account, or already registered "
    "(then log in instead)"
)
MAX_PASSWORD_INPUT = 1024  # bytes; longer is refused before any work


class CredentialChecks(Protocol):
    """The banks, as the identity service needs them: they hold customers' password hashes."""

    @property
    def names(self) -> list[str]: ...

    async def verify_credentials(
        self, bank: str, username: str, password: str, account: str
    ) -> CredentialCheck:
        """The bank's answer; NotFound for a bank nobody knows."""


@dataclass(frozen=True)
class LoginResult:
    token: str
    claims: Claims


@dataclass(frozen=True)
class Proven:
    """Who a right password proved the caller to be."""

    subject: str
    role: str
    bank: str = ""
    account: str = ""


@dataclass(frozen=True)
class ThrottleLimits:
    per_username: Limit
    per_certificate: Limit


def find_admin(session: Session, username: str) -> Admin | None:
    return session.scalars(
        select(Admin).where(func.lower(Admin.username) == username.lower())
    ).one_or_none()


def find_registration(session: Session, username: str) -> Registration | None:
    return session.scalars(
        select(Registration).where(func.lower(Registration.username) == username.lower())
    ).one_or_none()


def create_admin(session: Session, username: str, password_hash: str) -> None:
    """Usernames are unique across admins and customers (whatever their case)."""
    if find_admin(session, username) is not None:
        raise AlreadyExists(f"admin {username!r} already exists", ErrorReason.USERNAME_TAKEN)
    if find_registration(session, username) is not None:
        raise AlreadyExists(f"username {username!r} belongs to a registered customer")
    session.add(Admin(username=username, password_hash=password_hash))


def ensure_admin(session: Session, username: str, password: str, rounds: int) -> bool:
    """Adds a seed admin unless one by that name exists; True when it was added. Replicas
    starting together may race: the one that loses finds the admin there."""
    if find_admin(session, username) is not None:
        return False
    try:
        create_admin(session, username, hash_password(password, rounds))
    except AlreadyExists:
        return False
    return True


def checked_password(password: str) -> str:
    if not password:
        raise InvalidArgument("password is required", field="password")
    if len(password.encode()) > MAX_PASSWORD_INPUT:
        raise InvalidArgument(
            f"password must be at most {MAX_PASSWORD_INPUT} bytes", field="password"
        )
    return password


class UserService:
    def __init__(
        self,
        db: Database,
        banks: CredentialChecks,
        tokens: TokenService,
        revocations: Revocations,
        throttle: LoginThrottle,
        limits: ThrottleLimits,
        passwords: Passwords,
        work: PasswordWork,
    ) -> None:
        self._db = db
        self._banks = banks
        self._tokens = tokens
        self._revocations = revocations
        self._throttle = throttle
        self._limits = limits
        self._passwords = passwords
        self._work = work

    async def register(
        self, username: str, password: str, bank: str, account: str, thumbprint: str
    ) -> Registration:
        """Links a customer's account at their bank to the gateway, once."""
        validation.username(username)
        validation.bank_name(bank)
        validation.account_number(account)
        checked_password(password)
        username_limit, certificate_limit = self._keys(username, thumbprint)
        async with self._work.slot(thumbprint):
            await self._throttle.reserve([certificate_limit, username_limit])
            # The registration state is looked at first, and a taken name or account fails
            # with the same answer, after the same work, as a wrong password.
            taken = await self._db.transaction(lambda s: _is_taken(s, username, bank, account))
            answer = await self._banks.verify_credentials(bank, username, password, account)
        if taken or not answer.ok or answer.role != "customer" or answer.disabled:
            raise Unauthenticated(REGISTER_FAILED, ErrorReason.REGISTRATION_FAILED)

        def save(session: Session) -> Registration:
            registration = Registration(username=username, bank=bank, account=account)
            session.add(registration)
            session.flush()
            return registration

        try:
            registration = await self._db.transaction(save)
        except IntegrityError:  # a concurrent registration of the same name or account won
            raise Unauthenticated(REGISTER_FAILED, ErrorReason.REGISTRATION_FAILED) from None
        await self._throttle.succeeded(username_limit, certificate_limit)
        return registration

    async def login(self, username: str, password: str, thumbprint: str) -> LoginResult:
        validation.username(username)
        checked_password(password)
        username_limit, certificate_limit = self._keys(username, thumbprint)
        async with self._work.slot(thumbprint):
            await self._throttle.reserve([certificate_limit, username_limit])
            admin, registration = await self._db.transaction(lambda s: _login_lookup(s, username))
            proven = await self._check(username, password, admin, registration)
        if proven is None or self._revocations.is_disabled(proven.subject):
            raise Unauthenticated(LOGIN_FAILED, ErrorReason.LOGIN_FAILED)
        await self._throttle.succeeded(username_limit, certificate_limit)
        token, claims = self._tokens.issue(
            subject=proven.subject,
            role=proven.role,
            bank=proven.bank,
            account=proven.account,
            thumbprint=thumbprint,
        )
        return LoginResult(token, claims)

    async def _check(
        self,
        username: str,
        password: str,
        admin: tuple[str, str] | None,
        registration: Registration | None,
    ) -> Proven | None:
        """Who the password proves the caller is, or None."""
        if admin is not None:
            name, password_hash = admin
            return (
                Proven(name, "admin")
                if await self._passwords.check(password, password_hash)
                else None
            )
        # A customer, or nobody: a bank checks either way, so both cost the same.
        bank = registration.bank if registration else self._bank_for(username)
        account = registration.account if registration else ""
        answer = await self._banks.verify_credentials(bank, username, password, account)
        if registration is None or not answer.ok or answer.disabled:
            return None
        return Proven(registration.username, "customer", bank, account)

    async def logout(self, claims: Claims) -> None:
        await self._revocations.revoke(claims)

    async def set_disabled(self, username: str, disabled: bool) -> None:
        await self._revocations.set_disabled(username, disabled)

    async def create_admin(self, username: str, password: str) -> None:
        password_hash = await self._passwords.hash(validation.password(password))
        await self._db.transaction(lambda s: create_admin(s, username, password_hash))

    async def check_customer_name_free(self, username: str) -> None:
        """A new customer may not take an admin's or a registered customer's name."""

        def check(session: Session) -> None:
            if find_admin(session, username) or find_registration(session, username):
                raise AlreadyExists(f"username {username!r} is taken")

        await self._db.transaction(check)

    def _keys(self, username: str, thumbprint: str) -> tuple[ThrottleKey, ThrottleKey]:
        return (
            username_key(username.lower(), self._limits.per_username),
            certificate_key(thumbprint, self._limits.per_certificate),
        )

    def _bank_for(self, username: str) -> str:
        names = sorted(self._banks.names)
        digest = hashlib.sha256(username.lower().encode()).digest()
        return names[int.from_bytes(digest[:4], "big") % len(names)]


def _is_taken(session: Session, username: str, bank: str, account: str) -> bool:
    same_account = session.scalars(
        select(Registration).where(Registration.bank == bank, Registration.account == account)
    ).first()
    return (
        find_registration(session, username) is not None
        or find_admin(session, username) is not None
        or same_account is not None
    )


def _login_lookup(
    session: Session, username: str
) -> tuple[tuple[str, str] | None, Registration | None]:
    """(the admin's name and hash, or None), and the customer's registration, or None."""
    admin = find_admin(session, username)
    found = (admin.username, admin.password_hash) if admin else None
    return found, find_registration(session, username)
