"""Registration, login and logout. Customers' credentials live at their bank, which checks
them; admins' live in the gateway's database. Every failure to prove who you are gets the
same answer, so it never tells which part was wrong."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from protofiles.minipay.v1 import bank_pb2
from server.common import validation
from server.common.db import Database
from server.common.errors import AlreadyExists, InvalidArgument, PermissionDenied, Unauthenticated
from server.common.identity import Claims
from server.common.passwords import check_password_async, hash_password
from server.gateway.banks import BankDirectory, call_metadata
from server.gateway.models import Admin, Registration, RevokedToken
from server.gateway.throttle import LoginThrottle
from server.gateway.tokens import TokenService

BAD_CREDENTIALS = "wrong username, password or account"


@dataclass(frozen=True)
class LoginResult:
    token: str
    claims: Claims


def find_admin(session: Session, username: str) -> Admin | None:
    return session.scalars(select(Admin).where(Admin.username == username)).one_or_none()


def create_admin(session: Session, username: str, password_hash: str) -> None:
    if find_admin(session, username) is not None:
        raise AlreadyExists(f"admin {username!r} already exists")
    session.add(Admin(username=username, password_hash=password_hash))


def ensure_admin(session: Session, username: str, password: str, rounds: int) -> bool:
    """Adds a seed admin unless one by that name exists; True when it was added."""
    if find_admin(session, username) is not None:
        return False
    create_admin(session, username, hash_password(password, rounds))
    return True


class IdentityService:
    def __init__(
        self, db: Database, banks: BankDirectory, tokens: TokenService, throttle: LoginThrottle
    ) -> None:
        self._db = db
        self._banks = banks
        self._tokens = tokens
        self._throttle = throttle

    async def register(self, username: str, password: str, bank: str, account: str) -> Registration:
        validation.username(username)
        validation.account_number(account)
        if not password:
            raise InvalidArgument("password is required")
        answer = await self._banks.get(bank).accounts.VerifyCredentials(
            bank_pb2.VerifyCredentialsRequest(
                username=username, password=password, account=account
            ),
            timeout=10,
            metadata=call_metadata(),
        )
        if not answer.ok or answer.role != "customer":
            raise Unauthenticated(BAD_CREDENTIALS)

        def save(session: Session) -> Registration:
            if session.get(Registration, username) is not None or find_admin(session, username):
                raise AlreadyExists(f"username {username!r} is already registered")
            taken = session.scalars(
                select(Registration).where(
                    Registration.bank == bank, Registration.account == account
                )
            ).first()
            if taken is not None:
                raise AlreadyExists(f"account {account} at bank {bank} is already registered")
            registration = Registration(username=username, bank=bank, account=account)
            session.add(registration)
            session.flush()
            return registration

        try:
            return await self._db.transaction(save)
        except IntegrityError:
            raise AlreadyExists(f"username {username!r} is already registered") from None

    async def login(self, username: str, password: str, thumbprint: str) -> LoginResult:
        self._throttle.check(username)

        def lookup(session: Session) -> tuple[str | None, Registration | None]:
            admin = find_admin(session, username)
            return (admin.password_hash if admin else None), session.get(Registration, username)

        admin_hash, registration = await self._db.transaction(lookup)
        role, bank, account = "", "", ""
        if admin_hash is not None:
            if await check_password_async(password, admin_hash):
                role = "admin"
        elif registration is not None:
            answer = await self._banks.get(registration.bank).accounts.VerifyCredentials(
                bank_pb2.VerifyCredentialsRequest(
                    username=username, password=password, account=registration.account
                ),
                timeout=10,
                metadata=call_metadata(),
            )
            if answer.ok:
                if answer.disabled:
                    raise PermissionDenied("this user is disabled; ask an admin")
                role, bank, account = "customer", registration.bank, registration.account
        else:
            await check_password_async(password, None)  # same time as a wrong password
        if not role:
            self._throttle.failed(username)
            raise Unauthenticated("wrong username or password")
        self._throttle.succeeded(username)
        token, claims = self._tokens.issue(
            subject=username, role=role, bank=bank, account=account, thumbprint=thumbprint
        )
        return LoginResult(token, claims)

    async def logout(self, claims: Claims) -> None:
        def revoke(session: Session) -> None:
            if session.get(RevokedToken, claims.jti) is None:
                session.add(RevokedToken(jti=claims.jti, expires_at=claims.expires_at))

        await self._db.transaction(revoke)
        self._tokens.revoked(claims.jti, claims.expires_at)

    async def load_revoked(self) -> None:
        rows = await self._db.transaction(
            lambda s: [(r.jti, r.expires_at) for r in s.scalars(select(RevokedToken))]
        )
        for jti, expires_at in rows:
            self._tokens.revoked(jti, expires_at)
