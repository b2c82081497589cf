"""The console's plain parts, in milliseconds: its sign-in throttle, its session store (and
the confirmations a session keeps), its settings, and how API errors become HTTP statuses."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from console.sessions import Confirmations, SessionsFull, SessionStore
from console.settings import ConsoleSettings, SettingsError, from_arguments, is_loopback
from console.throttle import Limit, LoginThrottle, Throttled
from console.web import http_status
from minipay.client import ApiError

USER = Limit(max_attempts=2, window=60.0, cooldown=30.0)
ADDRESS = Limit(max_attempts=4, window=60.0, cooldown=30.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


# -- throttle ------------------------------------------------------------------------------


def test_a_username_is_locked_after_its_failures_whatever_its_case() -> None:
    throttle = LoginThrottle(USER, ADDRESS, Clock())
    throttle.reserve("Alice", "10.0.0.1")
    throttle.reserve("alice", "10.0.0.2")
    with pytest.raises(Throttled, match="this username") as refused:
        throttle.reserve("ALICE", "10.0.0.3")
    assert refused.value.retry_after == 30.0
    throttle.reserve("bob", "10.0.0.3")  # another username is not locked


def test_an_address_is_locked_after_its_failures_over_many_usernames() -> None:
    throttle = LoginThrottle(USER, ADDRESS, Clock())
    for name in ("a", "b", "c", "d"):
        throttle.reserve(name, "10.0.0.1")
    with pytest.raises(Throttled, match="this address"):
        throttle.reserve("e", "10.0.0.1")
    throttle.reserve("e", "10.0.0.2")  # another address is not


def test_a_lock_ends_after_the_cooldown_and_a_window_forgets() -> None:
    clock = Clock()
    throttle = LoginThrottle(USER, ADDRESS, clock)
    for _ in range(2):
        throttle.reserve("alice", "a1")
    with pytest.raises(Throttled):
        throttle.reserve("alice", "a1")
    clock.now += 29
    with pytest.raises(Throttled):
        throttle.reserve("alice", "a2")
    clock.now += 1
    throttle.reserve("alice", "a2")
    clock.now += 60  # a new window
    throttle.reserve("alice", "a3")
    throttle.reserve("alice", "a3")


def test_a_success_clears_the_username_and_gives_the_address_its_attempt_back() -> None:
    throttle = LoginThrottle(USER, ADDRESS, Clock())
    for _ in range(2):
        throttle.reserve("alice", "a1")
    throttle.succeeded("alice", "a1")
    throttle.reserve("alice", "a1")  # alice's count starts again
    throttle.reserve("bob", "a1")
    throttle.reserve("carol", "a1")  # 4 counted at a1: 2 + alice + bob + carol - 1 back
    with pytest.raises(Throttled, match="this address"):
        throttle.reserve("dave", "a1")


def test_the_throttle_keeps_a_bounded_number_of_keys() -> None:
    clock = Clock()
    throttle = LoginThrottle(USER, ADDRESS, clock, max_keys=10)
    for number in range(100):
        throttle.reserve(f"user-{number}", f"address-{number}")
        clock.now += 1
    assert len(throttle._counts) <= 10
    throttle.reserve("x" * 10_000, "y" * 10_000)
    assert all(len(key) < 100 for key in throttle._counts)


# -- sessions ------------------------------------------------------------------------------


def test_a_session_ends_with_its_token_or_its_lifetime() -> None:
    clock = Clock()
    store = SessionStore(lifetime=100, clock=clock)
    short = store.create("alice", "customer", "token-a", token_expires_at=clock.now + 10)
    long = store.create("bob", "customer", "token-b", token_expires_at=clock.now + 10_000)
    assert store.seconds_left(short) == 10 and store.seconds_left(long) == 100
    clock.now += 10
    assert store.get(short.id) is None
    assert store.get(long.id) is long
    clock.now += 90
    assert store.get(long.id) is None
    assert len(store) == 0


def test_a_session_hides_its_secrets_and_ids_are_unguessable() -> None:
    store = SessionStore(lifetime=100)
    one = store.create("alice", "customer", "secret-token", token_expires_at=1e12)
    two = store.create("alice", "customer", "secret-token", token_expires_at=1e12)
    assert "secret-token" not in repr(one) and one.id not in repr(one) and one.csrf not in repr(one)
    assert len(one.id) >= 40 and one.id != two.id and one.csrf != two.csrf
    assert store.get("") is None and store.get("guess") is None
    assert store.remove(one.id) is one and store.get(one.id) is None


def test_the_store_is_bounded_per_user_and_in_all() -> None:
    clock = Clock()
    store = SessionStore(lifetime=100, max_sessions=5, per_user=2, clock=clock)
    first = store.create("alice", "customer", "t1", token_expires_at=1e12)
    store.create("alice", "customer", "t2", token_expires_at=1e12)
    store.create("alice", "customer", "t3", token_expires_at=1e12)
    assert store.get(first.id) is None and len(store) == 2  # alice's oldest forgotten
    for name in ("b", "c", "d"):
        store.create(name, "customer", "t", token_expires_at=1e12)
    with pytest.raises(SessionsFull):
        store.create("e", "customer", "t", token_expires_at=1e12)
    clock.now += 100  # every session expired: room again
    store.create("e", "customer", "t", token_expires_at=1e12)
    assert len(store) == 1


def test_a_confirmation_is_done_once_and_forgets_what_it_held() -> None:
    calls: list[str] = []

    async def perform(client: Any) -> str:
        calls.append("done")
        await asyncio.sleep(0)
        return "ok"

    async def confirm_twice() -> list[str]:
        confirmation = Confirmations().add("Deposit", [], "/admin/deposit", perform)
        first, second = confirmation.start(None), confirmation.start(None)  # type: ignore[arg-type]
        assert first is second and confirmation.perform is None
        return [await first, await second]

    assert asyncio.run(confirm_twice()) == ["ok", "ok"]
    assert calls == ["done"]


def test_a_session_keeps_its_newest_confirmations_only() -> None:
    async def perform(client: Any) -> str:
        return ""

    confirmations = Confirmations()
    made = [confirmations.add(str(n), [], "/", perform) for n in range(Confirmations.LIMIT + 5)]
    assert confirmations.get(made[0].id) is None
    assert confirmations.get(made[-1].id) is made[-1]


# -- settings ------------------------------------------------------------------------------


def readable(tmp_path: Path) -> dict[str, str]:
    for name in ("ca.pem", "console.pem", "console-key.pem"):
        (tmp_path / name).write_text("x")
    return {
        "MINIPAY_CONSOLE_CA": str(tmp_path / "ca.pem"),
        "MINIPAY_CONSOLE_CERT": str(tmp_path / "console.pem"),
        "MINIPAY_CONSOLE_KEY": str(tmp_path / "console-key.pem"),
    }


def test_settings_come_from_flags_then_variables_then_defaults(tmp_path: Path) -> None:
    env = {**readable(tmp_path), "MINIPAY_CONSOLE_LISTEN": "127.0.0.1:9000"}
    env["MINIPAY_CONSOLE_SESSION_LIFETIME"] = "60"
    settings = from_arguments(["--gateway", "127.0.0.1:1,127.0.0.1:2"], env)
    assert settings.listen == "127.0.0.1:9000" and settings.port == 9000
    assert settings.gateway == "127.0.0.1:1,127.0.0.1:2"
    assert settings.session_lifetime == 60.0
    assert settings.login_max_failures == 5 and settings.login_window == 300.0
    assert not settings.https and settings.client_config().max_attempts == 3
    flagged = from_arguments(["--listen", "[::1]:0", "--attempts", "1"], env)
    assert flagged.host == "::1" and flagged.attempts == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--listen", "0.0.0.0:8080"], "not a loopback address"),
        (["--listen", "192.168.1.2:8080", "--allow-remote"], "HTTPS only"),
        (["--listen", "8080"], "expected host:port"),
        (["--https-cert", "x.pem"], "go together"),
        (["--max-sessions", "0"], "greater than zero"),
        (["--timeout", "soon"], "expected a number"),
    ],
)
def test_unusable_settings_are_refused(tmp_path: Path, args: list[str], says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        from_arguments(args, readable(tmp_path))


def test_missing_certificate_files_are_named(tmp_path: Path) -> None:
    env = {**readable(tmp_path), "MINIPAY_CONSOLE_KEY": str(tmp_path / "nope.pem")}
    with pytest.raises(SettingsError, match=r"cannot read the console.s key .*nope\.pem"):
        from_arguments([], env)


def test_loopback_names() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "::", "example.com"))
    assert ConsoleSettings().listen == "127.0.0.1:8080"


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.INTERNAL, 502),
    ],
)
def test_api_errors_become_http_statuses(code: grpc.StatusCode, status: int) -> None:
    assert http_status(ApiError(code, "message", reason="REASON")) == status
