"""Registration, login and logout, and the usernames given out. Customers' credentials live at
their bank, which checks them; admins' live in the gateway's database.

A username is one identity across the system (``principal.identity``): it is taken in the
gateway's database before its user is made (an admin, a customer opened at any bank, a seed
customer), whatever its case, and every rule about users (session cuts, disabling, the
throttle) is keyed on the identity, never on the bare name.

Every password check is throttled first (``throttle``: per identity and per client
certificate, reserved before the bcrypt work), then waits its turn at the place that checks it
(``passwords.PasswordWork``: a bank, or the gateway for admins). A check that could not be
made, because the bank did not answer, costs no attempt. Every failure to prove who you are
gets one answer, which never tells which part was wrong, whether the user exists or is
disabled, or whether the password was right; and a username nobody knows costs the same
bcrypt work, at a bank, as one that exists.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from minipay.errors import ErrorReason
from server.common import validation
from server.common.db import Database
from server.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from server.common.passwords import Passwords, PasswordWork, hash_password
from server.common.principal import Claims, identity
from server.common.seed import SeedAdmin, SeedCustomer
from server.gateway.banks import CredentialCheck
from server.gateway.models import Admin, Registration, Username
from server.gateway.revocations import Revocations
from server.gateway.throttle import (
    Limit,
    LoginThrottle,
    Reservation,
    certificate_key,
    identity_key,
)
from server.gateway.tokens import TokenService

log = logging.getLogger(__name__)

T = TypeVar("T")
LOGIN_FAILED = (
    "wrong username or password, or the user is disabled "
    "(a customer registers once before the first login)"
)
REGISTER_FAILED = (
    "cannot register: wrong username, password, bank or account, or already registered "
    "(then log in instead)"
)
MAX_PASSWORD_INPUT = 1024  # bytes; longer is refused before any work
GATEWAY_PLACE = ""  # where admins' passwords are checked (a bank's name is never empty)
# A bank's definite refusal to open a customer: the name it was to have is free again.
_REFUSALS = (InvalidArgument, AlreadyExists, FailedPrecondition, NotFound)


class CredentialChecks(Protocol):
    """The banks, as the identity service needs them: they hold customers' password hashes."""

    @property
    def names(self) -> list[str]: ...

    async def verify_credentials(
        self, bank: str, username: str, password: str, account: str
    ) -> CredentialCheck:
        """The bank's answer; NotFound for a bank nobody knows, Unavailable for a bank that
        did not answer."""


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

    @property
    def identity(self) -> str:
        return identity(self.role, self.bank, self.subject)


@dataclass(frozen=True)
class ThrottleLimits:
    per_username: Limit
    per_certificate: Limit


# -- usernames ------------------------------------------------------------------------------


def find_admin(session: Session, username: str) -> Admin | None:
    return session.scalars(
        select(Admin).where(func.lower(Admin.username) == username.lower())
    ).one_or_none()


def find_registration(session: Session, username: str) -> Registration | None:
    return session.scalars(
        select(Registration).where(func.lower(Registration.username) == username.lower())
    ).one_or_none()


def take_username(session: Session, username: str, role: str, bank: str = "") -> bool:
    """Gives USERNAME (whatever its case) to the admin or to the customer at BANK: True if it
    was free, False if it was theirs already; AlreadyExists if it is anyone else's."""
    owner = session.get(Username, username.lower())
    if owner is None:
        session.add(Username(normalized=username.lower(), role=role, bank=bank))
        session.flush()  # a concurrent taker of the same name fails here, and is retried
        return True
    if (owner.role, owner.bank) == (role, bank):
        return False
    raise AlreadyExists(
        f"username {username!r} is taken: a username is unique across every bank and the admins",
        ErrorReason.USERNAME_TAKEN,
    )


def release_username(session: Session, username: str, role: str, bank: str = "") -> None:
    session.execute(
        delete(Username).where(
            Username.normalized == username.lower(), Username.role == role, Username.bank == bank
        )
    )


def create_admin(session: Session, username: str, password_hash: str) -> None:
    """Usernames are unique across admins and customers (whatever their case)."""
    if find_admin(session, username) is not None:
        raise AlreadyExists(f"admin {username!r} already exists", ErrorReason.USERNAME_TAKEN)
    take_username(session, username, "admin")
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


def load_seed(
    session: Session, admins: Sequence[SeedAdmin], customers: Sequence[SeedCustomer], rounds: int
) -> None:
    """Adds the seed's admins, and takes the names of its customers (whom their banks open),
    so that nobody else can take a seed customer's name before they register."""
    for admin in admins:
        ensure_admin(session, admin.username, admin.password, rounds)
    for customer in customers:
        try:
            take_username(session, customer.username, "customer", customer.bank)
        except AlreadyExists:
            log.warning(
                "seed customer's username is someone else's; they cannot register",
                extra={"fields": {"username": customer.username, "bank": customer.bank}},
            )


def checked_password(password: str) -> str:
    if not password:
        raise InvalidArgument("password is required", field="password")
    if len(password.encode()) > MAX_PASSWORD_INPUT:
        raise InvalidArgument(
            f"password must be at most {MAX_PASSWORD_INPUT} bytes", field="password"
        )
    return password


@dataclass(frozen=True)
class _Target:
    """Whose password a login checks, and where (a bank, or ``GATEWAY_PLACE``)."""

    identity: str
    place: str


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
        target = _Target(identity("customer", bank, username), bank)
        async with self._work.slot(thumbprint):
            # The registration state is looked at first, and a taken name or account fails
            # with the same answer, after the same work, as a wrong password.
            taken = await self._db.transaction(lambda s: _is_taken(s, username, bank, account))
            reservation, answer = await self._checked(
                thumbprint,
                target,
                lambda: self._banks.verify_credentials(bank, username, password, account),
            )
        # The bank says whose account it checked: only the one asked for will do.
        if taken or not answer.ok or answer.role != "customer" or answer.disabled:
            raise Unauthenticated(REGISTER_FAILED, ErrorReason.REGISTRATION_FAILED)
        if answer.account != account:
            raise Unauthenticated(REGISTER_FAILED, ErrorReason.REGISTRATION_FAILED)

        def save(session: Session) -> Registration:
            take_username(session, username, "customer", bank)
            registration = Registration(username=username, bank=bank, account=account)
            session.add(registration)
            session.flush()
            return registration

        try:
            registration = await self._db.transaction(save)
        except (IntegrityError, AlreadyExists):  # a concurrent registration won the name
            raise Unauthenticated(REGISTER_FAILED, ErrorReason.REGISTRATION_FAILED) from None
        await self._throttle.succeeded(reservation)
        return registration

    async def login(self, username: str, password: str, thumbprint: str) -> LoginResult:
        validation.username(username)
        checked_password(password)
        async with self._work.slot(thumbprint):
            admin, registration = await self._db.transaction(lambda s: _login_lookup(s, username))
            target = self._login_target(username, admin, registration)
            reservation, proven = await self._checked(
                thumbprint,
                target,
                lambda: self._check(username, password, target, admin, registration),
            )
        if proven is None or self._revocations.is_disabled(proven.identity):
            raise Unauthenticated(LOGIN_FAILED, ErrorReason.LOGIN_FAILED)
        await self._throttle.succeeded(reservation)
        token, claims = self._tokens.issue(
            subject=proven.subject,
            role=proven.role,
            bank=proven.bank,
            account=proven.account,
            thumbprint=thumbprint,
        )
        return LoginResult(token, claims)

    async def _checked(
        self, thumbprint: str, target: _Target, check: Callable[[], Awaitable[T]]
    ) -> tuple[Reservation, T]:
        """Runs CHECK once the throttle has counted it and its turn has come at its place; a
        check its bank did not answer is given back to the throttle."""
        reservation = await self._throttle.reserve(
            [
                certificate_key(thumbprint, self._limits.per_certificate),
                identity_key(target.identity, self._limits.per_username),
            ]
        )
        try:
            async with self._work.turn(target.place, reservation.rank):
                return reservation, await check()
        except Unavailable:
            await self._throttle.give_back(reservation)
            raise

    async def _check(
        self,
        username: str,
        password: str,
        target: _Target,
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
        account = registration.account if registration else ""
        answer = await self._banks.verify_credentials(target.place, username, password, account)
        if registration is None or not answer.ok or answer.disabled:
            return None
        return Proven(registration.username, "customer", registration.bank, account)

    def _login_target(
        self, username: str, admin: tuple[str, str] | None, registration: Registration | None
    ) -> _Target:
        if admin is not None:
            return _Target(identity("admin", "", admin[0]), GATEWAY_PLACE)
        bank = registration.bank if registration else self._bank_for(username)
        return _Target(identity("customer", bank, username), bank)

    async def logout(self, claims: Claims) -> None:
        await self._revocations.revoke(claims)

    async def set_disabled(self, bank: str, username: str, disabled: bool) -> None:
        """Cuts (or restores) the sessions of the customer USERNAME at BANK, and no one else's."""
        await self._revocations.set_disabled(identity("customer", bank, username), disabled)

    async def create_admin(self, username: str, password: str) -> None:
        password_hash = await self._passwords.hash(validation.password(password))
        await self._db.transaction(lambda s: create_admin(s, username, password_hash))

    async def open_customer(
        self, username: str, bank: str, create: Callable[[], Awaitable[T]]
    ) -> T:
        """Takes USERNAME for a customer at BANK, then has the bank open them (CREATE). A name
        an admin or a customer of any bank has is refused; a name the bank refused to open is
        given back (but not one it says it has already: that customer is real)."""
        fresh = await self._db.transaction(lambda s: take_username(s, username, "customer", bank))
        try:
            return await create()
        except _REFUSALS as refusal:
            if fresh and refusal.reason is not ErrorReason.USERNAME_TAKEN:
                await self._db.transaction(
                    lambda s: release_username(s, username, "customer", bank)
                )
            raise

    def _bank_for(self, username: str) -> str:
        names = sorted(self._banks.names)
        digest = hashlib.sha256(username.lower().encode()).digest()
        return names[int.from_bytes(digest[:4], "big") % len(names)]


def _is_taken(session: Session, username: str, bank: str, account: str) -> bool:
    """Whether USERNAME may not register ACCOUNT at BANK: the name or the account is linked
    already, or the name is an admin's or another bank's customer's."""
    same_account = session.scalars(
        select(Registration).where(Registration.bank == bank, Registration.account == account)
    ).first()
    owner = session.get(Username, username.lower())
    return (
        find_registration(session, username) is not None
        or same_account is not None
        or (owner is not None and (owner.role, owner.bank) != ("customer", bank))
    )


def _login_lookup(
    session: Session, username: str
) -> tuple[tuple[str, str] | None, Registration | None]:
    """(the admin's name and hash, or None), and the customer's registration, or None."""
    admin = find_admin(session, username)
    found = (admin.username, admin.password_hash) if admin else None
    return found, find_registration(session, username)
