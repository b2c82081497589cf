"""An admin's pages: the overview (every bank and its health; places kept for what issues
22-23 add), the users (create, disable, enable) and deposits.

Whatever changes something goes through a confirmation page first: the form's POST only
records what would be done (server-side, in the session: a new user's password never comes
back in a page) and shows it; the confirmation's POST does it, once, however often it is
clicked; then the page it came from shows the outcome (``?done=ID``). A deposit carries an
idempotency key made with its form, so even two confirmations of one form deposit once.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from console.security import form_of
from console.sessions import Confirmation, Session
from console.web import console_of, render, see_other, text
from minipay.client import ApiError, GatewayClient
from minipay.money import AmountError, format_minor_units, to_minor_units

ROLES = ("customer", "admin")


def _outcome(request: Request, session: Session) -> dict[str, Any] | None:
    """What the confirmed action named by ?done= came to, for the page to show."""
    confirmation = session.confirmations.get(request.query_params.get("done", ""))
    if confirmation is None or confirmation.task is None or not confirmation.task.done():
        return None
    error = confirmation.task.exception()
    if isinstance(error, ApiError):
        return {"title": confirmation.title, "ok": False, "error": error}
    if error is not None:
        return {"title": confirmation.title, "ok": False, "error": None}
    return {"title": confirmation.title, "ok": True, "message": confirmation.task.result()}


async def overview(request: Request, session: Session) -> Response:
    banks = await console_of(request).client(session.token).list_banks()
    return render(request, "admin_overview.html", {"banks": banks}, session=session)


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
        "outcome": _outcome(request, session),
    }
    return render(request, "admin_users.html", context, session=session, status=status)


async def users(request: Request, session: Session) -> Response:
    listed = await console_of(request).client(session.token).list_users()
    return _users_page(request, session, listed)


def _confirm(request: Request, session: Session, confirmation: Confirmation) -> Response:
    return render(request, "confirm.html", {"confirmation": confirmation}, session=session)


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
    confirmation = session.confirmations.add("Create a user", details, "/admin/users", perform)
    return _confirm(request, session, confirmation)


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
    confirmation = session.confirmations.add(f"{verb} {username}", details, "/admin/users", perform)
    return _confirm(request, session, confirmation)


# -- deposits --------------------------------------------------------------------------------


def _deposit_page(
    request: Request,
    session: Session,
    values: dict[str, str],
    *,
    status: int = 200,
    problem: str = "",
) -> Response:
    context = {"values": values, "problem": problem, "outcome": _outcome(request, session)}
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
    confirmation = session.confirmations.add("Deposit", details, "/admin/deposit", perform)
    return _confirm(request, session, confirmation)


# -- confirmations ---------------------------------------------------------------------------


async def confirm(request: Request, session: Session) -> Response:
    """Does the confirmed action (once: a second click waits for the same outcome), then
    shows its outcome on the page it came from."""
    confirmation = session.confirmations.get(str(request.path_params["confirmation_id"]))
    if confirmation is None:
        return render(
            request,
            "error.html",
            {
                "title": "Nothing to confirm",
                "message": "This confirmation is not pending any more (it is too old, or "
                "belongs to another sign-in). Nothing was done.",
                "error": None,
            },
            session=session,
            status=404,
        )
    task = confirmation.start(console_of(request).client(session.token))
    try:
        await _shielded(task)
    except ApiError as error:
        if error.code.name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise
    return see_other(f"{confirmation.back}?done={confirmation.id}")


async def _shielded(task: asyncio.Task[str]) -> None:
    """Waits for TASK; a browser that goes away does not cancel what was confirmed."""
    await asyncio.shield(task)
