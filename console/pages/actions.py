"""What changes something goes through a confirmation page first, for customers and admins
alike: the form's POST only records what would be done (server-side, in the session: a new
user's password never comes back in a page) and shows it; the confirmation's POST does it,
once, however often it is clicked; then the page it came from shows the outcome
(``?done=ID``). Refunds and deposits carry an idempotency key made with their form, so even
two confirmations of one form act once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from console.sessions import Session
from console.web import console_of, render, see_other
from minipay.client import ApiError, GatewayClient


def outcome(request: Request, session: Session) -> dict[str, Any] | None:
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


def ask(
    request: Request,
    session: Session,
    title: str,
    details: list[tuple[str, str]],
    back: str,
    perform: Callable[[GatewayClient], Awaitable[str]],
) -> Response:
    """Records PERFORM and shows the confirmation page for it."""
    confirmation = session.confirmations.add(title, details, back, perform)
    action = f"{'/admin' if session.role == 'admin' else ''}/confirm/{confirmation.id}"
    context = {"confirmation": confirmation, "action": action}
    return render(request, "confirm.html", context, session=session)


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
        await asyncio.shield(task)  # a browser that goes away does not cancel what was confirmed
    except ApiError as error:
        if error.code.name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise
    separator = "&" if "?" in confirmation.back else "?"
    return see_other(f"{confirmation.back}{separator}done={confirmation.id}")
