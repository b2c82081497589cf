"""An admin's pages: the overview (banks, replicas, payments per second, payments in doubt,
the audit chain's head, the last reconcile and a button to run one), every payment (filtered
and paged) with each one's sequence diagram and refunds, the live event stream, the users
(create, disable, enable) and deposits.

Whatever changes something goes through a confirmation page first (console/pages/actions.py).
A method the gateway does not serve yet (UNIMPLEMENTED) leaves its part of a page saying
"not available"; the rest of the page is shown.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from console.charts import throughput_chart
from console.gateway import Calls, unimplemented
from console.live import all_events, cursor, event_stream
from console.pages.actions import ask, outcome
from console.pages.customer import (
    PAGE_SIZES,
    STATUSES,
    moment,
    refund_amount,
    refund_words,
    refundable,
    story,
)
from console.security import form_of
from console.sessions import Session
from console.web import console_of, current_session, render, text
from minipay.client import AccountRef, ApiError, GatewayClient, PaymentKind
from minipay.money import AmountError, format_minor_units, to_minor_units

ROLES = ("customer", "admin")
KINDS = {kind.value: kind for kind in PaymentKind}
LIVE_BACKLOG = 20  # the events the live page starts with
T = TypeVar("T")


def calls_of(request: Request, session: Session) -> Calls:
    gateway = console_of(request).gateway
    assert gateway is not None, "the console's lifespan has not started"
    return gateway.calls(session.token)


async def available(call: Callable[[], Awaitable[T]]) -> tuple[T | None, bool]:
    """CALL's answer and True; (None, False) when the gateway does not serve it yet."""
    try:
        return await call(), True
    except ApiError as error:
        if unimplemented(error):
            return None, False
        raise


# -- the overview ----------------------------------------------------------------------------


async def overview(request: Request, session: Session) -> Response:
    calls = calls_of(request, session)
    summary, has_overview = await available(calls.overview)
    banks = None if has_overview else await calls.client.list_banks()
    report: Any = None
    has_reconcile = True
    if summary is not None and summary.HasField("last_reconcile"):
        report = summary.last_reconcile
    else:
        report, has_reconcile = await available(calls.last_reconcile)
    audit, has_audit = await available(calls.audit_head)
    chart = None
    if summary is not None and summary.throughput:
        chart = Markup(throughput_chart(summary.throughput))
    context = {
        "summary": summary,
        "banks": banks,
        "chart": chart,
        "report": report,
        "has_reconcile": has_reconcile,
        "audit": audit,
        "has_audit": has_audit,
        "outcome": outcome(request, session),
    }
    return render(request, "admin_overview.html", context, session=session)


async def reconcile(request: Request, session: Session) -> Response:
    calls = calls_of(request, session)

    async def perform(_: GatewayClient) -> str:
        report = await calls.reconcile()
        checked = f"{report.payments_checked} payments and {report.entries_checked} entries checked"
        if report.agreed:
            return f"the books agree ({checked})."
        return f"{report.findings_total} finding(s) ({checked}); the report is below."

    details = [
        ("What", "compare the gateway's decisions with every bank's ledger and holds"),
        ("Takes", "as long as the books are large (seconds here; minutes at most)"),
    ]
    return ask(request, session, "Reconcile", details, "/admin", perform)


# -- payments --------------------------------------------------------------------------------


async def payments(request: Request, session: Session) -> Response:
    """Every payment, newest first, filtered as Admin/ListPayments filters, a page at a time."""
    query = request.query_params
    names = ("bank", "account", "status", "kind", "from", "before")
    filters = {name: text(query, name) for name in names}
    size = int(text(query, "size")) if text(query, "size").isdigit() else PAGE_SIZES[1]
    size = size if size in PAGE_SIZES else PAGE_SIZES[1]
    context: dict[str, Any] = {
        "filters": filters,
        "size": size,
        "sizes": PAGE_SIZES,
        "statuses": list(STATUSES),
        "kinds": list(KINDS),
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
        return render(request, "admin_payments.html", context, session=session, status=400)
    client = console_of(request).client(session.token)
    try:
        context["page"] = await client.list_payments(
            page_size=size,
            page_token=text(query, "page"),
            bank=filters["bank"],
            account=filters["account"],
            status=STATUSES.get(filters["status"]),
            kind=KINDS.get(filters["kind"]),
            created_from=created_from,
            created_before=created_before,
        )
    except ApiError as error:
        if error.code.name not in ("INVALID_ARGUMENT", "OUT_OF_RANGE", "NOT_FOUND"):
            raise
        context["error"] = error  # a bad filter or page token: show it beside the form
        return render(request, "admin_payments.html", context, session=session, status=400)
    return render(request, "admin_payments.html", context, session=session)


async def _payment_page(
    request: Request, session: Session, *, problem: str = "", status: int = 200
) -> Response:
    payment_id = str(request.path_params["payment_id"])[:100]
    client = console_of(request).client(session.token)
    found = await client.admin_payment(payment_id)
    drawn = await story(client, payment_id, admin=True)
    refund: dict[str, Any] | None = None
    if refundable(found, admin=True):
        trace = drawn["trace"]
        shares = trace.shares if trace is not None else ()
        payees = [str(share.payee) for share in shares] if len(shares) > 1 else []
        refund = {"amount": "", "idempotency_key": str(uuid.uuid4()), "payees": payees}
    context = {
        "payment": found,
        "outcome": "",
        "done": outcome(request, session),
        "problem": problem,
        "refund": refund,
        "base": "/admin/payments/",
        **drawn,
    }
    return render(request, "payment.html", context, session=session, status=status)


async def payment(request: Request, session: Session) -> Response:
    return await _payment_page(request, session)


async def refund(request: Request, session: Session) -> Response:
    """A refund on the payee's behalf (Admin/Refund), through a confirmation page."""
    payment_id = str(request.path_params["payment_id"])[:100]
    fields = await form_of(request)
    found = await console_of(request).client(session.token).admin_payment(payment_id)
    key = text(fields, "idempotency_key") or str(uuid.uuid4())
    payee_given = text(fields, "payee")
    payee = None
    if payee_given:
        bank, _, account = payee_given.partition("/")
        payee = AccountRef(bank, account)
    try:
        amount, words = refund_amount(found, text(fields, "amount"))
    except AmountError as problem:
        return await _payment_page(request, session, problem=str(problem), status=400)

    async def perform(client: GatewayClient) -> str:
        made = await client.admin_refund(
            payment_id, amount, found.currency, idempotency_key=key, payee=payee
        )
        return refund_words(made)

    details = [
        ("Payment", payment_id),
        ("From", payee_given or str(found.payee)),
        ("Back to", str(found.payer)),
        ("Amount", words),
        ("Idempotency key", key),
    ]
    return ask(request, session, "Refund", details, f"/admin/payments/{payment_id}", perform)


# -- the live event stream -------------------------------------------------------------------


async def live(request: Request, session: Session) -> Response:
    return render(request, "admin_live.html", {}, session=session)


async def live_events(request: Request, session: Session) -> Response:
    """Every event as server-sent events, from the browser's cursor, else from a few before
    the last one (Admin/GetOverview names it), else from the oldest kept."""
    console = console_of(request)
    calls = calls_of(request, session)
    after = cursor(request)
    if after is None:
        summary, _ = await available(calls.overview)
        last = summary.last_event_sequence if summary is not None else 0
        after = max(0, last - LIVE_BACKLOG)

    def still_open() -> bool:
        return current_session(request) is not None

    return event_stream(request, console.streams, all_events(calls, after), still_open)


# -- users -----------------------------------------------------------------------------------


def _users_page(
    request: Request,
    session: Session,
    users: Any,
    values: dict[str, str] | None = None,
    *,
    status: int = 200,
    problem: str = "",
) -> Response:
    blank = {"username": "", "name": "", "bank": "", "account": "", "balance": "0.00"}
    context = {
        "users": users,
        "values": values or {**blank, "currency": "USD", "role": "customer"},
        "roles": ROLES,
        "problem": problem,
        "outcome": outcome(request, session),
    }
    return render(request, "admin_users.html", context, session=session, status=status)


async def users(request: Request, session: Session) -> Response:
    listed = await console_of(request).client(session.token).list_users()
    return _users_page(request, session, listed)


async def create_user(request: Request, session: Session) -> Response:
    fields = await form_of(request)
    names = ("username", "name", "bank", "account", "balance", "currency", "role")
    values = {name: text(fields, name) for name in names}
    values["currency"] = values["currency"].upper() or "USD"
    password = fields.get("password")
    role = values["role"] if values["role"] in ROLES else "customer"
    problem = ""
    try:
        balance = to_minor_units(values["balance"] or "0", values["currency"], allow_zero=True)
    except AmountError as error:
        problem = str(error)
    if not isinstance(password, str) or not password:
        problem = "Give the new user a password."
    if problem:
        listed = await console_of(request).client(session.token).list_users()
        return _users_page(request, session, listed, values, status=400, problem=problem)
    assert isinstance(password, str)
    secret = password[:1024]

    async def perform(client: GatewayClient) -> str:
        user = await client.create_user(
            username=values["username"],
            name=values["name"],
            password=secret,
            bank=values["bank"],
            account=values["account"],
            balance_minor_units=balance,
            currency=values["currency"],
            role=role,
        )
        where = f" at {user.bank}/{user.account}" if user.bank else ""
        return f"Created {user.role} {user.username}{where}."

    details = [
        ("Username", values["username"]),
        ("Name", values["name"]),
        ("Role", role),
        ("Account", f"{values['bank']}/{values['account']}"),
        (
            "Opening balance",
            f"{format_minor_units(balance, values['currency'])} {values['currency']}",
        ),
        ("Password", "(as typed; not shown)"),
    ]
    return ask(request, session, "Create a user", details, "/admin/users", perform)


async def set_disabled(request: Request, session: Session) -> Response:
    fields = await form_of(request)
    bank, username = text(fields, "bank"), text(fields, "username")
    disabled = text(fields, "disabled") == "1"

    async def perform(client: GatewayClient) -> str:
        user = await client.set_disabled(bank, username, disabled)
        return f"{user.username} is {'disabled' if user.disabled else 'enabled'}."

    verb = "Disable" if disabled else "Enable"
    effect = (
        "They cannot sign in or pay, and every token of theirs is refused from now on."
        if disabled
        else "They can sign in again (their old tokens stay refused)."
    )
    details = [("User", username), ("Bank", bank), ("Effect", effect)]
    return ask(request, session, f"{verb} {username}", details, "/admin/users", perform)


# -- deposits --------------------------------------------------------------------------------


def _deposit_page(
    request: Request,
    session: Session,
    values: dict[str, str],
    *,
    status: int = 200,
    problem: str = "",
) -> Response:
    context = {"values": values, "problem": problem, "outcome": outcome(request, session)}
    return render(request, "admin_deposit.html", context, session=session, status=status)


async def deposit_form(request: Request, session: Session) -> Response:
    values = {"bank": "", "account": "", "amount": "", "currency": "USD"}
    return _deposit_page(request, session, {**values, "idempotency_key": str(uuid.uuid4())})


async def deposit(request: Request, session: Session) -> Response:
    fields = await form_of(request)
    names = ("bank", "account", "amount", "currency", "idempotency_key")
    values = {name: text(fields, name) for name in names}
    values["currency"] = values["currency"].upper() or "USD"
    key = values["idempotency_key"] or str(uuid.uuid4())
    try:
        amount = to_minor_units(values["amount"], values["currency"])
    except AmountError as error:
        return _deposit_page(request, session, values, status=400, problem=str(error))

    async def perform(client: GatewayClient) -> str:
        done = await client.deposit(
            values["bank"], values["account"], amount, values["currency"], idempotency_key=key
        )
        balance = format_minor_units(done.balance_minor_units, done.currency)
        return (
            f"Deposited {format_minor_units(amount, done.currency)} {done.currency} to "
            f"{done.bank}/{done.account}; its balance is now {balance} {done.currency}."
        )

    shown = f"{format_minor_units(amount, values['currency'])} {values['currency']}"
    details = [
        ("Account", f"{values['bank']}/{values['account']}"),
        ("Amount", shown),
        ("Idempotency key", key),
    ]
    return ask(request, session, "Deposit", details, "/admin/deposit", perform)
