"""A customer in a real browser: signs in, sees the balance, pays (once, however often the
form is sent), finds the payment in the list with filters and pages, opens it and its
sequence diagram, sees a payment to them arrive live, and refunds it through a confirmation
(refunds linked both ways)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.console.support import Api, LiveConsole, Person, logged_in, new_customer
from tests.helpers import SEED_ACCOUNTS


def sign_in(page: Any, person: Person) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(person.username)
    page.get_by_label("Password").fill(person.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/account$"))


def test_a_customer_sees_the_balance_pays_and_finds_the_payment(
    page: Any, api: Api, screenshot: Callable[[Any, str], Path]
) -> None:
    person = new_customer(api, 10000)
    page.goto("/login")
    screenshot(page, "login")
    sign_in(page, person)
    expect(page.locator("#posted")).to_have_text("100.00 USD")
    expect(page.locator("#held")).to_have_text("0.00 USD")
    expect(page.locator("#available")).to_have_text("100.00 USD")
    expect(page.locator("#live-status")).to_have_text("live")
    screenshot(page, "account")

    page.get_by_role("link", name="Pay", exact=True).first.click()
    bank, account = SEED_ACCOUNTS["carol"]
    page.get_by_label("To bank").fill(bank)
    page.get_by_label("To account").fill(account)
    page.get_by_label("Amount").fill("12.34")
    screenshot(page, "pay")
    page.get_by_role("button", name="Pay").click()
    expect(page).to_have_url(re.compile(r"/payments/[^/?]+\?outcome=new$"))
    expect(page.locator("#payment-status")).to_contain_text("COMMITTED")
    payment_id = page.url.rsplit("/", 1)[1].split("?")[0]
    # Its story: the two-phase commit drawn, lanes for the client, the gateway, both banks.
    diagram = page.locator("#diagram svg")
    expect(diagram).to_be_visible()
    expect(diagram).to_contain_text("Prepare")
    expect(diagram).to_contain_text("vote YES")
    assert diagram.locator("g.lane.bank").count() == 2
    # The acknowledgements come after the answer: the page shows them once they are in.
    for _ in range(40):
        if "finished: every bank acknowledged" in (diagram.text_content() or ""):
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(diagram).to_contain_text("finished: every bank acknowledged")
    assert diagram.locator("g.arrow.decision").count() == 2
    assert diagram.locator("g.arrow.answer.good .mark.yes").count() >= 2  # the votes
    expect(page.locator("#refund-form")).to_have_count(0)  # the payer cannot refund
    screenshot(page, "payment")
    screenshot(page.locator("#diagram"), "payment-diagram")  # the README shows this one

    page.get_by_role("link", name="Payments", exact=True).click()
    row = page.locator(f"#payments tr[data-payment-id='{payment_id}']")
    expect(row).to_contain_text("12.34 USD")
    expect(row).to_contain_text(f"{bank}/{account}")
    screenshot(page, "payments")
    row.get_by_role("link", name=payment_id).click()
    expect(page.locator("h1")).to_contain_text(payment_id)
    expect(page.locator("main")).to_contain_text("outgoing")

    page.get_by_role("link", name="Account").click()
    expect(page.locator("#posted")).to_have_text("87.66 USD")


def test_a_payment_to_the_customer_appears_live(
    page: Any, api: Api, screenshot: Callable[[Any, str], Path]
) -> None:
    payee = new_customer(api, 0)
    payer = new_customer(api, 5000, bank="beta")
    sign_in(page, payee)
    expect(page.locator("#live-status")).to_have_text("live")
    expect(page.locator("#latest tr.empty")).to_have_count(1)

    paid = api.call(logged_in(api, payer, "client-2"), "pay", payee.bank, payee.account, 777)
    row = page.locator(f"#latest tr[data-payment-id='{paid.payment_id}']")
    expect(row).to_contain_text("7.77 USD")  # without a reload: the event stream
    expect(row).to_contain_text("COMMITTED")
    expect(row).to_contain_text("incoming")
    screenshot(page, "account-live")


def test_a_pay_form_sent_twice_pays_once(page: Any, api: Api, console: LiveConsole) -> None:
    person = new_customer(api, 10000)
    sign_in(page, person)
    bank, account = SEED_ACCOUNTS["dave"]

    # The same form, sent twice as a resubmit would (the server's answer to each).
    page.goto("/pay")
    fields = {
        name: page.locator(f"#pay-form input[name='{name}']").input_value()
        for name in ("csrf_token", "idempotency_key")
    }
    form = {**fields, "to_bank": bank, "to_account": account, "amount": "5.00", "currency": "USD"}
    answers = [page.request.post("/pay", form=form, max_redirects=0) for _ in range(2)]
    assert [a.status for a in answers] == [303, 303]
    first, second = (a.headers["location"] for a in answers)
    assert first.endswith("?outcome=new") and second.endswith("?outcome=replayed")
    assert first.split("?")[0] == second.split("?")[0]  # one payment
    page.goto(second)
    expect(page.locator("main")).to_contain_text("not a second one")

    # A double click in the browser.
    page.goto("/pay")
    page.get_by_label("To bank").fill(bank)
    page.get_by_label("To account").fill(account)
    page.get_by_label("Amount").fill("2.00")
    page.get_by_role("button", name="Pay").dblclick()
    expect(page).to_have_url(re.compile(r"/payments/"))

    history = api.call(logged_in(api, person), "history", 50)
    assert sorted(p.amount_minor_units for p in history.payments) == [200, 500]
    page.goto("/account")
    expect(page.locator("#posted")).to_have_text("93.00 USD")


def test_payments_filter_and_page_like_the_api(
    page: Any, api: Api, screenshot: Callable[[Any, str], Path]
) -> None:
    person = new_customer(api, 10000)
    client = logged_in(api, person)
    bank, account = SEED_ACCOUNTS["erin"]
    for cents in range(1, 13):
        api.call(client, "pay", bank, account, cents)
    aborted = api.call(client, "pay", bank, account, 10**6)  # more than the balance
    assert aborted.status == "ABORTED"
    sign_in(page, person)

    page.goto("/payments?size=10")
    expect(page.locator("#payments tbody tr")).to_have_count(10)
    page.locator("#next-page").click()
    expect(page.locator("#payments tbody tr")).to_have_count(3)
    expect(page.locator("#next-page")).to_have_count(0)
    expect(page.get_by_role("link", name="First page")).to_be_visible()

    page.goto("/payments")
    page.get_by_label("Status").select_option("ABORTED")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#payments tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("INSUFFICIENT_FUNDS")
    screenshot(page, "payments-filtered")

    page.goto("/payments?direction=incoming")
    expect(page.locator("#payments tbody tr.empty")).to_have_count(1)
    page.goto("/payments?from=2000-01-01T00:00&before=2000-01-02T00:00")
    expect(page.locator("#payments tbody tr.empty")).to_have_count(1)
    answer = page.goto("/payments?from=yesterday")
    assert answer.status == 400
    expect(page.locator(".box.error")).to_contain_text("is not a date and time")
    answer = page.goto("/payments?page=not-a-token")
    assert answer.status == 400
    expect(page.locator(".box.error")).to_contain_text("INVALID_PAGE_TOKEN")
    expect(page.locator(".box.error")).to_contain_text("request id")
    screenshot(page, "payments-bad-token")


def test_a_customer_refunds_a_payment_they_received(
    page: Any, api: Api, screenshot: Callable[[Any, str], Path]
) -> None:
    payee = new_customer(api, 0)
    payer = new_customer(api, 5000, bank="beta")
    paid = api.call(logged_in(api, payer, "client-2"), "pay", payee.bank, payee.account, 2000)
    sign_in(page, payee)
    page.goto(f"/payments/{paid.payment_id}")
    expect(page.locator("#payment-status")).to_contain_text("COMMITTED")
    expect(page.locator("#refundable")).to_have_text("20.00 USD")
    expect(page.locator("#diagram svg")).to_be_visible()

    form = page.locator("#refund-form")
    form.get_by_label("Amount").fill("5.00")
    form.get_by_role("button", name="Refund…").click()
    expect(page.locator("h1")).to_contain_text("Confirm: Refund")
    expect(page.locator("#confirm-details")).to_contain_text("5.00 USD (of 20.00 USD)")
    screenshot(page, "refund-confirm")
    # Confirmed twice (a double click that got through): one refund.
    action = page.locator("#confirm").get_attribute("action")
    csrf = page.locator("#confirm input[name='csrf_token']").input_value()
    answers = [
        page.request.post(action, form={"csrf_token": csrf}, max_redirects=0) for _ in range(2)
    ]
    assert [a.status for a in answers] == [303, 303]
    page.goto(answers[1].headers["location"])
    expect(page.locator(".box.ok")).to_contain_text("is COMMITTED")
    expect(page.locator("#refundable")).to_have_text("15.00 USD")
    rows = page.locator("#refunds tbody tr")
    expect(rows).to_have_count(1)
    # The refund note in the diagram links to the refund, and the refund links back.
    expect(page.locator("#diagram svg")).to_contain_text("refund")
    screenshot(page, "payment-refunded")
    rows.first.get_by_role("link").click()
    expect(page.locator("h1")).to_contain_text("Refund")
    expect(page.locator("#payment-status")).to_contain_text("COMMITTED")
    expect(page.locator("#diagram svg")).to_be_visible()
    screenshot(page, "refund")
    page.locator("#refund-of").click()
    expect(page.locator("h1")).to_contain_text(paid.payment_id)

    # More than is left is the API's refusal, with its reason, on the page it came from.
    page.locator("#refund-form").get_by_label("Amount").fill("100.00")
    page.locator("#refund-form").get_by_role("button", name="Refund…").click()
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator(".box.error").first).to_contain_text("was refused; nothing was changed")
    expect(page.locator("#refundable")).to_have_text("15.00 USD")
    balance = api.call(logged_in(api, payee), "balance")
    assert balance.balance_minor_units == 1500
