"""The console's safety in a real browser: roles (a customer opening an admin page gets 403
and is told why), CSRF (a form without its token is refused and changes nothing), escaping
(markup in a name shows as text), the session cookie's flags, no token or password in any
page, URL or log line, sign-out revoking the token at the gateway, and sign-in throttling."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from playwright.sync_api import expect

from devtools.cluster import Cluster
from minipay.client import ApiError
from tests.console.conftest import Watched
from tests.console.support import Api, LiveConsole, console_settings, logged_in, new_customer
from tests.console.test_admin import confirm, sign_in_as_admin
from tests.console.test_customer import sign_in

XSS = "<script>alert(1)</script>"


@pytest.fixture
def console_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def test_a_customer_is_refused_admin_pages_and_an_admin_customer_pages(
    page: Any, api: Api, browser: Any, console: LiveConsole, screenshot: Callable[[Any, str], Path]
) -> None:
    sign_in(page, new_customer(api))
    answer = page.goto("/admin/users")
    assert answer.status == 403
    expect(page.locator("main")).to_contain_text("This page is for admins only")
    screenshot(page, "forbidden")
    paths = ("/admin", "/admin/deposit", "/admin/payments", "/admin/payments/pay_1", "/admin/live")
    for path in paths:
        assert page.goto(path).status == 403
    assert page.request.get("/admin/live/events").status == 403
    csrf = page.locator("header input[name='csrf_token']").input_value()
    form = {"csrf_token": csrf, "bank": "alpha", "account": "A-1001", "amount": "1000.00"}
    assert page.request.post("/admin/deposit", form=form).status == 403

    admin_page = browser.new_context(base_url=console.url).new_page()
    try:
        sign_in_as_admin(admin_page)
        assert admin_page.goto("/account").status == 403
        assert admin_page.goto("/pay").status == 403
    finally:
        admin_page.context.close()


def test_a_form_without_its_csrf_token_is_refused(
    page: Any, api: Api, screenshot: Callable[[Any, str], Path]
) -> None:
    person = new_customer(api, 5000)
    sign_in(page, person)
    page.goto("/pay")
    page.get_by_label("To bank").fill("beta")
    page.get_by_label("To account").fill("B-2001")
    page.get_by_label("Amount").fill("1.00")
    # A forged form: the same fields, no token.
    page.locator("#pay-form input[name='csrf_token']").evaluate("input => input.remove()")
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("h1")).to_have_text("Form refused")
    expect(page.locator("main")).to_contain_text("Nothing was changed")
    screenshot(page, "csrf-refused")

    key = "forged-1"
    fields = {"to_bank": "beta", "to_account": "B-2001", "amount": "1.00", "idempotency_key": key}
    assert page.request.post("/pay", form=fields).status == 403
    wrong = {**fields, "csrf_token": "not-the-token"}
    assert page.request.post("/pay", form=wrong).status == 403
    assert page.request.post("/logout", form={}).status == 403  # still signed in after
    assert page.request.post("/login", form={"username": "x", "password": "y"}).status == 403

    page.goto("/account")
    expect(page.locator("#posted")).to_have_text("50.00 USD")  # nothing was paid

    # A forged refund of a payment this customer received: refused, nothing refunded.
    payer = new_customer(api, 5000, bank="beta")
    paid = api.call(logged_in(api, payer, "client-2"), "pay", person.bank, person.account, 700)
    forged = {"amount": "7.00", "idempotency_key": "forged-refund"}
    answer = page.request.post(f"/payments/{paid.payment_id}/refund", form=forged)
    assert answer.status == 403
    assert page.request.post("/confirm/anything", form={}).status == 403
    page.goto(f"/payments/{paid.payment_id}")
    expect(page.locator("#refundable")).to_have_text("7.00 USD")


def test_markup_in_names_shows_as_text(
    page: Any, watched: Watched, screenshot: Callable[[Any, str], Path]
) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(XSS)
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".box.error")).to_contain_text("username must be")
    expect(page.get_by_label("Username")).to_have_value(XSS)

    sign_in_as_admin(page)
    page.goto("/admin/users")
    form = page.locator("#create-user")
    form.get_by_label("Username").fill(XSS)
    form.get_by_label("Full name").fill(XSS)
    form.get_by_label("Password").fill("pw-12345")
    form.get_by_label("Bank").fill("alpha")
    form.get_by_label("Account").fill("A-XSS1")
    page.get_by_role("button", name="Create…").click()
    expect(page.locator("#confirm-details")).to_contain_text(XSS)  # as text
    screenshot(page, "xss-confirm")
    confirm(page)
    expect(page.locator(".box.error").nth(1)).to_contain_text("username must be")

    # A name the gateway takes: listed as text.
    form.get_by_label("Username").fill("xss-name")
    form.get_by_label("Full name").fill(XSS)
    form.get_by_label("Password").fill("pw-12345")
    form.get_by_label("Bank").fill("alpha")
    form.get_by_label("Account").fill("A-XSS2")
    page.get_by_role("button", name="Create…").click()
    confirm(page)
    row = page.locator("#users tr[data-username='xss-name']")
    expect(row.get_by_text(XSS)).to_be_visible()
    screenshot(page, "xss-users")
    assert page.locator("script:not([src])").count() == 0
    assert watched.dialogs == []


def test_the_session_cookie_and_no_secret_in_pages_urls_or_logs(
    page: Any, api: Api, console: LiveConsole, console_log: pytest.LogCaptureFixture
) -> None:
    person = new_customer(api)
    sign_in(page, person)
    token = console.token_of(person.username)
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert set(cookies) == {"minipay_session"}
    session = cookies["minipay_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert not session["secure"]  # plain HTTP on loopback; HTTPS makes it __Host- and Secure
    assert token not in session["value"]

    seen: list[str] = []
    page.on("response", lambda response: seen.append(response.url + " " + str(response.headers)))
    for path in ("/account", "/payments", "/pay"):
        page.goto(path)
        seen.append(page.content())
    for secret in (token, person.password):
        assert not any(secret in text for text in seen)
        assert secret not in console_log.text
    assert "render_ms" in str([getattr(r, "fields", {}) for r in console_log.records])


def test_signing_out_revokes_the_token(
    page: Any, api: Api, console: LiveConsole, console_cluster: Cluster
) -> None:
    person = new_customer(api)
    sign_in(page, person)
    token = console.token_of(person.username)
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login\?signed_out=1$"))
    expect(page.locator(".box.note")).to_contain_text("You are signed out")

    # The gateway refuses the token now, over the very certificate it is bound to.
    as_console = api.client("console", token=token)
    with pytest.raises(ApiError) as refused:
        api.call(as_console, "balance")
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.reason == "TOKEN_REVOKED"
    # And the browser's cookie opens nothing.
    page.goto("/account")
    expect(page).to_have_url(re.compile(r"/login"))


def test_a_token_the_gateway_refuses_ends_the_session(
    page: Any, api: Api, console: LiveConsole
) -> None:
    person = new_customer(api)
    sign_in(page, person)
    api.call(api.admin(), "set_disabled", person.bank, person.username, True)
    page.goto("/payments")
    expect(page).to_have_url(re.compile(r"/login\?ended="))
    expect(page.locator(".box.note")).to_contain_text("Your sign-in has ended")
    assert all(s.username != person.username for s in console.state.sessions._sessions.values())


@pytest.fixture
def strict_console(console_cluster: Cluster, console_certs: Path) -> Iterator[LiveConsole]:
    """A console of its own with low sign-in limits, so its counts do not touch the others."""
    settings = console_settings(
        console_cluster, console_certs, login_max_failures=2, login_client_max_failures=4
    )
    server = LiveConsole(settings).start()
    yield server
    server.stop()


def test_sign_ins_are_throttled_per_username_and_per_address(
    strict_console: LiveConsole, new_page: Callable[..., Any], api: Api
) -> None:
    page = new_page(strict_console.url)

    def attempt(username: str, password: str) -> int:
        page.goto("/login")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.get_by_role("button", name="Sign in").click()
        return int(answer.value.status)

    person = new_customer(api)
    assert [attempt(person.username, "wrong") for _ in range(3)] == [401, 401, 429]
    expect(page.locator(".box.error")).to_contain_text("Too many failed sign-ins for this username")
    # Locked here before the gateway's own limit (5): the third attempt never reached it.
    assert attempt(person.username, person.password) == 429

    # The address: two failures above, two more, then it is over its limit of 4.
    assert [attempt(name, "wrong") for name in ("bob", "carol", "dave")] == [401, 401, 429]
    expect(page.locator(".box.error")).to_contain_text("Too many failed sign-ins for this address")
