"""A customer's pages: their account (balance and newest payments, live), their payments with
the API's filters and paging, one payment with its story drawn as a sequence diagram and its
refunds, the form to pay, and the form to refund a payment they received. Every call carries
the customer's own token: the gateway decides whose account it is, never the page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from console.diagram import sequence_diagram
from console.live import cursor, event_stream, payment_updates
from console.pages.actions import ask, outcome
from console.security import form_of
from console.sessions import Session
from console.web import console_of, current_session, http_status, render, see_other, text
from minipay.client import (
    ApiError,
    Direction,
    GatewayClient,
    Payment,
    PaymentKind,
    PaymentStatus,
)
from minipay.client.trace import PaymentTrace
from minipay.money import AmountError, format_minor_units, to_minor_units

NEWEST = 10
PAGE_SIZES = (10, 20, 50, 100)
STATUSES = {status.value: status for status in PaymentStatus}
DIRECTIONS = {direction.value: direction for direction in Direction}


async def account(request: Request, session: Session) -> Response:
    client = console_of(request).client(session.token)
    balance = await client.balance()
    newest = await client.history(page_size=NEWEST)
    context = {
        "balance": balance,
        "payments": newest.payments,
        "more": bool(newest.next_page_token),
    }
    return render(request, "account.html", context, session=session)


def moment(value: str, name: str) -> datetime | None:
    """A datetime-local value (2026-12-01T10:30) taken as UTC; None when empty."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a date and time like 2026-12-01T10:30") from None


async def payments(request: Request, session: Session) -> Response:
    """The customer's payments, newest first, filtered as the API filters, a page at a time;
    the page token comes back from the API and goes to the next link with the same filters."""
    query = request.query_params
    filters = {name: text(query, name) for name in ("status", "direction", "from", "before")}
    size = int(text(query, "size")) if text(query, "size").isdigit() else PAGE_SIZES[1]
    size = size if size in PAGE_SIZES else PAGE_SIZES[1]
    context: dict[str, Any] = {
        "filters": filters,
        "size": size,
        "sizes": PAGE_SIZES,
        "statuses": list(STATUSES),
        "directions": list(DIRECTIONS),
        "page": None,
        "problem": "",
        "error": None,
        "first": not text(query, "page"),
    }
    try:
        created_from = moment(filters["from"], "from")
        created_before = moment(filters["before"], "before")
    except ValueError as problem:
        context["problem"] = str(problem)
        return render(request, "payments.html", context, session=session, status=400)
    client = console_of(request).client(session.token)
    try:
        context["page"] = await client.history(
            page_size=size,
            page_token=text(query, "page"),
            status=STATUSES.get(filters["status"]),
            direction=DIRECTIONS.get(filters["direction"]),
            created_from=created_from,
            created_before=created_before,
        )
    except ApiError as error:
        if error.code.name not in ("INVALID_ARGUMENT", "OUT_OF_RANGE"):
            raise
        context["error"] = error  # a bad filter or page token: show it beside the form
        return render(request, "payments.html", context, session=session, status=400)
    return render(request, "payments.html", context, session=session)


def diagram_of(trace: PaymentTrace, url_prefix: str) -> Markup:
    """TRACE's sequence diagram, to put in a page as it is (console/diagram.py escapes every
    text in it); the payments it names link to their pages under URL_PREFIX."""
    return Markup(sequence_diagram(trace, payment_url=lambda other: f"{url_prefix}{other}"))


async def story(client: GatewayClient, payment_id: str, admin: bool) -> dict[str, Any]:
    """The payment's trace drawn, or the API's error in its place (the page shows the rest)."""
    try:
        if admin:
            trace = await client.admin_payment_trace(payment_id)
        else:
            trace = await client.payment_trace(payment_id)
    except ApiError as error:
        if error.code.name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise
        return {"diagram": None, "trace": None, "trace_error": error}
    prefix = "/admin/payments/" if admin else "/payments/"
    return {"diagram": diagram_of(trace, prefix), "trace": trace, "trace_error": None}


def refundable(found: Payment, admin: bool = False) -> bool:
    """A committed payment (not a refund) with something left to give back, to its payee."""
    mine = admin or found.direction is Direction.INCOMING
    return (
        mine
        and found.kind is PaymentKind.PAYMENT
        and found.status is PaymentStatus.COMMITTED
        and found.refundable_minor_units > 0
    )


async def payment(request: Request, session: Session) -> Response:
    payment_id = str(request.path_params["payment_id"])[:100]
    client = console_of(request).client(session.token)
    found = await client.payment(payment_id)
    context = {
        "payment": found,
        "outcome": request.query_params.get("outcome", ""),
        "done": outcome(request, session),
        "problem": "",
        "refund": {"amount": "", "idempotency_key": str(uuid.uuid4()), "payees": []}
        if refundable(found)
        else None,
        "base": "/payments/",
        **await story(client, payment_id, admin=False),
    }
    return render(request, "payment.html", context, session=session)


def refund_amount(found: Payment, given: str) -> tuple[int | None, str]:
    """The refund's amount in minor units (None: all that is left), and its words."""
    left = f"{format_minor_units(found.refundable_minor_units, found.currency)} {found.currency}"
    if not given:
        return None, f"all that is left ({left})"
    amount = to_minor_units(given, found.currency)  # raises AmountError
    return amount, f"{format_minor_units(amount, found.currency)} {found.currency} (of {left})"


async def refund(request: Request, session: Session) -> Response:
    """A refund of a payment the customer received, through a confirmation page."""
    payment_id = str(request.path_params["payment_id"])[:100]
    fields = await form_of(request)
    client = console_of(request).client(session.token)
    found = await client.payment(payment_id)
    key = text(fields, "idempotency_key") or str(uuid.uuid4())
    try:
        amount, words = refund_amount(found, text(fields, "amount"))
    except AmountError as problem:
        return await _payment_problem(request, session, found, str(problem))

    async def perform(caller: GatewayClient) -> str:
        made = await caller.refund(payment_id, amount, found.currency, idempotency_key=key)
        return refund_words(made)

    details = [
        ("Payment", payment_id),
        ("Back to", str(found.payer)),
        ("Amount", words),
        ("Idempotency key", key),
    ]
    return ask(request, session, "Refund", details, f"/payments/{payment_id}", perform)


def refund_words(made: Payment) -> str:
    amount = f"{format_minor_units(made.amount_minor_units, made.currency)} {made.currency}"
    again = " (this form was already confirmed: its first outcome)" if made.replayed else ""
    if made.status is PaymentStatus.COMMITTED:
        return f"refund {made.payment_id} of {amount} to {made.payee} is COMMITTED{again}."
    why = f": {made.reason_code}" if made.reason_code else ""
    return f"refund {made.payment_id} of {amount} is {made.status.value}{why}{again}."


async def _payment_problem(
    request: Request, session: Session, found: Payment, problem: str
) -> Response:
    client = console_of(request).client(session.token)
    context = {
        "payment": found,
        "outcome": "",
        "done": None,
        "problem": problem,
        "refund": {"amount": "", "idempotency_key": str(uuid.uuid4()), "payees": []},
        "base": "/payments/",
        **await story(client, found.payment_id, admin=False),
    }
    return render(request, "payment.html", context, session=session, status=400)


def _pay_form(
    request: Request,
    session: Session,
    values: dict[str, str],
    *,
    status: int = 200,
    problem: str = "",
    error: ApiError | None = None,
) -> Response:
    context = {"values": values, "problem": problem, "error": error}
    return render(request, "pay.html", context, session=session, status=status)


async def pay_form(request: Request, session: Session) -> Response:
    # The key is made with the form: submitting this form twice pays once.
    values = {"to_bank": "", "to_account": "", "amount": "", "currency": "USD"}
    return _pay_form(request, session, {**values, "idempotency_key": str(uuid.uuid4())})


async def pay(request: Request, session: Session) -> Response:
    fields = await form_of(request)
    names = ("to_bank", "to_account", "amount", "currency", "idempotency_key")
    values = {name: text(fields, name) for name in names}
    values["currency"] = values["currency"].upper() or "USD"
    if not values["idempotency_key"]:
        values["idempotency_key"] = str(uuid.uuid4())
        return _pay_form(request, session, values, status=400, problem="This form had no key.")
    try:
        minor_units = to_minor_units(values["amount"], values["currency"])
    except AmountError as problem:
        return _pay_form(request, session, values, status=400, problem=str(problem))
    client = console_of(request).client(session.token)
    try:
        paid = await client.pay(
            values["to_bank"],
            values["to_account"],
            minor_units,
            values["currency"],
            idempotency_key=values["idempotency_key"],
        )
    except ApiError as error:
        if error.code.name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise
        return _pay_form(request, session, values, status=http_status(error), error=error)
    outcome = "replayed" if paid.replayed else "new"
    return see_other(f"/payments/{paid.payment_id}?outcome={outcome}")


async def live_payments(request: Request, session: Session) -> Response:
    """The customer's payments as they come, as server-sent events (console/live.py)."""
    console = console_of(request)
    assert console.gateway is not None
    calls = console.gateway.calls(session.token)

    def still_open() -> bool:
        return current_session(request) is not None

    source = payment_updates(calls, console.streams, cursor(request))
    return event_stream(request, console.streams, source, still_open)
