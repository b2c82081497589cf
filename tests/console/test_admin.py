"""An admin in a real browser: the overview with every bank's health, creating a user,
depositing, disabling and enabling, each through its confirmation page; a confirmation or a
deposit form sent twice acts once."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.console.support import Api, Person, logged_in
from tests.helpers import ADMIN


def sign_in_as_admin(page: Any) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/admin$"))


def confirm(
    page: Any, screenshot: Callable[[Any, str], Path] | None = None, name: str = ""
) -> None:
    expect(page.locator("h1")).to_contain_text("Confirm:")
    if screenshot:
        screenshot(page, name)
    page.get_by_role("button", name="Confirm").click()


def test_the_overview_shows_every_bank_and_its_health(
    page: Any, screenshot: Callable[[Any, str], Path]
) -> None:
    sign_in_as_admin(page)
    for bank in ("alpha", "beta", "gamma"):
        expect(page.locator(f"#banks tr[data-bank='{bank}']")).to_contain_text("serving")
    # What issues 22-23 will fill in is marked as such.
    expect(page.locator("[data-coming-with]")).to_have_count(7)
    screenshot(page, "admin-overview")


def test_an_admin_creates_deposits_disables_and_enables(
    page: Any, api: Api, screenshot: Callable[[Any, str], Path]
) -> None:
    tag = uuid.uuid4().hex[:8]
    person = Person(f"new-{tag}", f"pw-{tag}", "gamma", f"G-N{tag}")
    sign_in_as_admin(page)

    page.get_by_role("link", name="Users").click()
    form = page.locator("#create-user")
    form.get_by_label("Username").fill(person.username)
    form.get_by_label("Full name").fill("Nora New")
    form.get_by_label("Password").fill(person.password)
    form.get_by_label("Bank").fill(person.bank)
    form.get_by_label("Account").fill(person.account)
    form.get_by_label("Opening balance").fill("25.00")
    page.get_by_role("button", name="Create…").click()
    expect(page.locator("#confirm-details")).to_contain_text(person.username)
    assert person.password not in page.content()  # the password stays in the console
    confirm(page, screenshot, "admin-confirm-create")
    expect(page.locator(".box.ok")).to_contain_text(f"Created customer {person.username}")
    row = page.locator(f"#users tr[data-username='{person.username}']")
    expect(row).to_contain_text("25.00 USD")
    expect(row).to_contain_text("active")
    screenshot(page, "admin-users")

    page.get_by_role("link", name="Deposit").click()
    page.get_by_label("Bank").fill(person.bank)
    page.get_by_label("Account").fill(person.account)
    page.get_by_label("Amount").fill("10.50")
    screenshot(page, "admin-deposit")
    page.get_by_role("button", name="Deposit…").click()
    # Confirmed twice (a double click that got through): one deposit.
    action = page.locator("#confirm").get_attribute("action")
    csrf = page.locator("#confirm input[name='csrf_token']").input_value()
    answers = [
        page.request.post(action, form={"csrf_token": csrf}, max_redirects=0) for _ in range(2)
    ]
    assert [a.status for a in answers] == [303, 303]
    page.goto(answers[1].headers["location"])
    expect(page.locator(".box.ok")).to_contain_text("its balance is now 35.50 USD")
    screenshot(page, "admin-deposit-done")

    page.goto("/admin/users")
    row = page.locator(f"#users tr[data-username='{person.username}']")
    expect(row).to_contain_text("35.50 USD")
    row.get_by_role("button", name="Disable").click()
    confirm(page, screenshot, "admin-confirm-disable")
    expect(page.locator(".box.ok")).to_contain_text(f"{person.username} is disabled")
    expect(row.locator(".state")).to_have_text("disabled")
    row.get_by_role("button", name="Enable").click()
    confirm(page)
    expect(page.locator(".box.ok")).to_contain_text(f"{person.username} is enabled")
    expect(row.locator(".state")).to_have_text("active")

    # What the gateway says, through the library: the deposit was made once.
    api.call(
        api.client(), "register", person.username, person.password, person.bank, person.account
    )
    balance = api.call(logged_in(api, person), "balance")
    assert balance.balance_minor_units == 3550


def test_a_refused_action_shows_the_api_reason_and_request_id(
    page: Any, screenshot: Callable[[Any, str], Path]
) -> None:
    sign_in_as_admin(page)
    page.goto("/admin/deposit")
    page.get_by_label("Bank").fill("nosuchbank")
    page.get_by_label("Account").fill("X-1")
    page.get_by_label("Amount").fill("1.00")
    page.get_by_role("button", name="Deposit…").click()
    confirm(page)
    box = page.locator(".box.error")
    expect(box.first).to_contain_text("was refused; nothing was changed")
    expect(box.nth(1)).to_contain_text("BANK_NOT_FOUND")
    expect(box.nth(1)).to_contain_text("request id")
    screenshot(page, "admin-refused")

    # Caught before calling: not an amount.
    page.get_by_label("Bank").fill("alpha")
    page.get_by_label("Account").fill("A-1001")
    page.get_by_label("Amount").fill("1.234")
    page.get_by_role("button", name="Deposit…").click()
    expect(page.locator(".box.error")).to_contain_text("more than 2 decimals")
