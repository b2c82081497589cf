"""A customer's pages: their account (balance and newest payments, live), their payments with
the API's filters and paging, one payment, and the form to pay. Every call carries the
customer's own token: the gateway decides whose account it is, never the page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from console.live import event_stream, payment_updates
from console.security import form_of
from console.sessions import Session
from console.web import console_of, current_session, http_status, render, see_other, text
from minipay.client import ApiError, Direction, PaymentStatus
from minipay.money import AmountError, to_minor_units

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


def _moment(value: str, name: str) -> datetime | None:
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
        created_from = _moment(filters["from"], "from")
        created_before = _moment(filters["before"], "before")
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


async def payment(request: Request, session: Session) -> Response:
    payment_id = str(request.path_params["payment_id"])[:100]
    found = await console_of(request).client(session.token).payment(payment_id)
    outcome = request.query_params.get("outcome", "")
    return render(request, "payment.html", {"payment": found, "outcome": outcome}, session=session)


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
    client = console.client(session.token)

    def still_open() -> bool:
        return not console.streams.stopping.is_set() and current_session(request) is not None

    return event_stream(
        request, console.streams, payment_updates(client, console.streams, still_open)
    )
