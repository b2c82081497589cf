"""Registration and login over a fake of the banks (the identity service's seam): a bank that
does not answer costs no attempt, every check counts against the certificate, a registration
gets only the account its bank checked, usernames are one identity across every bank, and
password checks take turns at each bank, fewest attempts first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from minipay.errors import ErrorReason
from server.common.db import Database
from server.common.errors import AlreadyExists, InvalidArgument, Throttled, Unauthenticated
from server.common.errors import Unavailable as BankDown
from server.common.passwords import Passwords, PasswordWork
from server.common.seed import SeedAdmin, SeedCustomer
from server.gateway import users
from server.gateway.banks import CredentialCheck
from server.gateway.revocations import Revocations
from server.gateway.throttle import Limit, LoginThrottle
from server.gateway.token_keys import KeyRing
from server.gateway.tokens import TokenService

T = TypeVar("T")
CERT = "thumbprint-of-client-1"


@dataclass
class Customer:
    password: str
    account: str
    disabled: bool = False


class Banks:
    """Customers by (bank, username); a bank in ``down`` does not answer."""

    def __init__(self) -> None:
        self.customers = {
            ("alpha", "alice"): Customer("alice-pass-1", "A-1"),
            ("alpha", "bob"): Customer("bob-pass-1", "A-2"),
            ("beta", "sam"): Customer("sam-at-beta-1", "B-1"),
            ("alpha", "sam"): Customer("sam-at-alpha-1", "A-3"),
        }
        self.down: set[str] = set()
        # What a bank whose "someone else's account" check was lost would answer.
        self.any_account_will_do = False

    @property
    def names(self) -> list[str]:
        return ["alpha", "beta", "gamma"]

    async def verify_credentials(
        self, bank: str, username: str, password: str, account: str
    ) -> CredentialCheck:
        if bank in self.down:
            raise BankDown(f"bank {bank} is not answering right now")
        found = self.customers.get((bank, username))
        if found is None or found.password != password:
            return CredentialCheck(False)
        if account and account != found.account and not self.any_account_will_do:
            return CredentialCheck(False)
        return CredentialCheck(True, "customer", found.account, found.disabled)


def run(work: Awaitable[T]) -> T:
    return asyncio.run(work)  # type: ignore[arg-type]


@pytest.fixture
def banks() -> Banks:
    return Banks()


@pytest.fixture
def service(gateway_db: Database, banks: Banks, tmp_path: Path) -> users.UserService:
    keys = KeyRing(gateway_db, "unit", tmp_path / "token-key.pem")
    run(keys.start())
    revocations = Revocations(gateway_db)
    return users.UserService(
        gateway_db,
        banks,
        TokenService(keys, 900, revocations),
        revocations,
        LoginThrottle(gateway_db),
        users.ThrottleLimits(per_username=Limit(3, 300, 60), per_certificate=Limit(5, 300, 60)),
        Passwords(rounds=4),
        PasswordWork(),
    )


def login(service: users.UserService, name: str, password: str, cert: str = CERT) -> str:
    return run(service.login(name, password, cert)).claims.subject


def refused(service: users.UserService, name: str, password: str, cert: str = CERT) -> str:
    """The error a login gets: its reason."""
    with pytest.raises((Unauthenticated, Throttled)) as caught:
        run(service.login(name, password, cert))
    return caught.value.reason.value


# -- the throttle ---------------------------------------------------------------------------


def test_a_bank_that_does_not_answer_costs_no_attempt(
    service: users.UserService, banks: Banks
) -> None:
    run(service.register("alice", "alice-pass-1", "alpha", "A-1", CERT))
    banks.down.add("alpha")
    for _ in range(10):  # two CLI logins of five attempts each, against limits of 3 and 5
        with pytest.raises(BankDown):
            run(service.login("alice", "alice-pass-1", CERT))
    banks.down.clear()
    assert login(service, "alice", "alice-pass-1") == "alice"
    # The control: wrong passwords are counted, and lock the identity after three.
    assert [refused(service, "alice", "wrong-pass-1") for _ in range(3)] == ["LOGIN_FAILED"] * 3
    assert refused(service, "alice", "alice-pass-1") == "LOGIN_THROTTLED"


def test_every_check_counts_against_the_certificate(service: users.UserService) -> None:
    """Five wrong passwords at five names, then nothing more from that certificate."""
    for name in ("alice", "bob", "carol", "dave", "erin"):
        assert refused(service, name, "wrong-pass-1") == "LOGIN_FAILED"
    with pytest.raises(Throttled, match="client certificate"):
        run(service.login("frank", "wrong-pass-1", CERT))
    run(service.register("alice", "alice-pass-1", "alpha", "A-1", "another-certificate"))


# -- registration ---------------------------------------------------------------------------


def test_a_registration_gets_only_the_account_its_bank_checked(
    service: users.UserService, banks: Banks
) -> None:
    """Were the bank to answer yes for a customer's own account when asked about another's,
    the gateway still links nothing but the account the bank says it checked."""
    banks.any_account_will_do = True
    with pytest.raises(Unauthenticated):
        run(service.register("bob", "bob-pass-1", "alpha", "A-1", CERT))
    run(service.register("alice", "alice-pass-1", "alpha", "A-1", CERT))


# -- usernames ------------------------------------------------------------------------------


async def opened() -> str:
    return "opened"


def open_customer(
    service: users.UserService,
    name: str,
    bank: str,
    create: Callable[[], Awaitable[str]] = opened,
) -> str:
    return run(service.open_customer(name, bank, create))


def test_a_username_is_given_once_across_every_bank_and_the_admins(
    service: users.UserService,
) -> None:
    assert open_customer(service, "zed", "alpha") == "opened"
    for name, bank in (("zed", "beta"), ("ZED", "gamma")):
        with pytest.raises(AlreadyExists) as taken:
            open_customer(service, name, bank)
        assert taken.value.reason is ErrorReason.USERNAME_TAKEN
    with pytest.raises(AlreadyExists):
        run(service.create_admin("Zed", "an-admin-pass-1"))
    run(service.create_admin("root", "an-admin-pass-1"))
    with pytest.raises(AlreadyExists):
        open_customer(service, "ROOT", "alpha")
    # The same name at the same bank again: the bank itself says whether it exists.
    assert open_customer(service, "zed", "alpha") == "opened"


def test_a_name_the_bank_refused_is_free_again(service: users.UserService) -> None:
    async def refuse() -> str:
        raise InvalidArgument("account must be 1-34 letters", field="account")

    async def exists() -> str:
        raise AlreadyExists("customer 'yan' already exists", ErrorReason.USERNAME_TAKEN)

    with pytest.raises(InvalidArgument):
        open_customer(service, "yan", "alpha", refuse)
    assert open_customer(service, "yan", "beta") == "opened"
    # But a name the bank says it has already stays that bank's customer's.
    with pytest.raises(AlreadyExists):
        open_customer(service, "old", "gamma", exists)
    with pytest.raises(AlreadyExists):
        open_customer(service, "old", "alpha")


def test_a_seed_customer_s_name_is_theirs_before_they_register(
    service: users.UserService, gateway_db: Database
) -> None:
    frank = SeedCustomer("gamma", "frank", "Frank", "frank-pass-1", "G-2", 0, "USD", "customer")
    gateway_db.run_sync(
        lambda s: users.load_seed(s, [SeedAdmin("admin", "admin-pass-1")], [frank], rounds=4)
    )
    with pytest.raises(AlreadyExists):
        open_customer(service, "frank", "alpha")
    with pytest.raises(AlreadyExists):
        run(service.create_admin("Frank", "an-admin-pass-1"))
    with pytest.raises(AlreadyExists):
        open_customer(service, "admin", "alpha")


def test_disabling_a_customer_at_one_bank_leaves_a_namesake_at_another(
    service: users.UserService,
) -> None:
    """Two sams, opened at alpha and beta before names were unique."""
    run(service.register("sam", "sam-at-alpha-1", "alpha", "A-3", CERT))
    run(service.set_disabled("beta", "sam", True))
    assert login(service, "sam", "sam-at-alpha-1") == "sam"
    run(service.set_disabled("alpha", "sam", True))
    assert refused(service, "sam", "sam-at-alpha-1") == "LOGIN_FAILED"


# -- turns at a bank ------------------------------------------------------------------------


def test_checks_waiting_at_a_bank_go_fewest_attempts_first() -> None:
    """One check runs at a time here; those waiting are served by their certificate's count
    in the throttle, then in order of arrival. A waiter that gives up leaves no slot behind."""
    work = PasswordWork(per_place=1)
    served: list[str] = []

    async def check(name: str, rank: int, release: asyncio.Event | None = None) -> None:
        async with work.turn("alpha", rank):
            served.append(name)
            if release is not None:
                await release.wait()

    async def scenario() -> None:
        release = asyncio.Event()
        running = asyncio.create_task(check("first", 1, release))
        await asyncio.sleep(0)
        waiting = [
            asyncio.create_task(check(name, rank))
            for name, rank in [("flood-a", 7), ("flood-b", 3), ("gives-up", 1), ("flood-c", 3)]
        ]
        await asyncio.sleep(0)
        customer = asyncio.create_task(check("customer", 1))
        await asyncio.sleep(0)
        waiting[2].cancel()
        release.set()
        await asyncio.gather(running, customer, *waiting, return_exceptions=True)
        await check("after", 9)  # every slot came back

    asyncio.run(scenario())
    assert served == ["first", "customer", "flood-b", "flood-c", "flood-a", "after"]


def test_other_banks_do_not_wait_for_a_busy_one() -> None:
    work = PasswordWork(per_place=1)

    async def scenario() -> None:
        release = asyncio.Event()

        async def hold() -> None:
            async with work.turn("alpha", 1):
                await release.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        async with work.turn("beta", 50):
            pass
        release.set()
        await holder

    asyncio.run(asyncio.wait_for(scenario(), 5))
