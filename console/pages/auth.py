"""Signing in and out.

The sign-in form has no session yet, so its CSRF token is a random value in a short-lived
cookie that the form repeats (double submit). Sign-ins are throttled here first
(console.throttle); the password goes to the gateway and nowhere else; the token that comes
back stays in the session store; the browser gets the session cookie. Signing out revokes the
token at the gateway and forgets the session.
"""

from __future__ import annotations

import re
import secrets

from starlette.requests import Request
from starlette.responses import Response

from console.security import check_csrf, form_of
from console.sessions import Session
from console.throttle import Throttled
from console.web import (
    HOME,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    console_of,
    current_session,
    http_status,
    render,
    see_other,
    set_cookie,
    text,
)
from minipay.client import ApiError

LOGIN_CSRF_AGE = 3600
_REASON = re.compile(r"[A-Z_]{1,40}")


async def home(request: Request) -> Response:
    session = current_session(request)
    return see_other(HOME.get(session.role, "/login") if session else "/login")


def login_page(
    request: Request,
    *,
    status: int = 200,
    notice: str = "",
    error: ApiError | None = None,
    problem: str = "",
    username: str = "",
    headers: dict[str, str] | None = None,
) -> Response:
    """The sign-in form, with a fresh CSRF value in its cookie and its hidden field."""
    token = secrets.token_urlsafe(32)
    context = {
        "login_csrf": token,
        "notice": notice,
        "error": error,
        "problem": problem,
        "username": username,
    }
    response = render(request, "login.html", context, status=status)
    set_cookie(request, response, LOGIN_CSRF_COOKIE, token, LOGIN_CSRF_AGE)
    response.headers.update(headers or {})
    return response


async def login_form(request: Request) -> Response:
    if current_session(request) is not None:
        return await home(request)
    ended = request.query_params.get("ended", "")
    notice = ""
    if ended:
        why = f" ({ended})" if _REASON.fullmatch(ended) else ""
        notice = f"Your sign-in has ended{why}. Sign in again."
    elif "signed_out" in request.query_params:
        notice = "You are signed out."
    return login_page(request, notice=notice)


async def login(request: Request) -> Response:
    console = console_of(request)
    await check_csrf(request, request.cookies.get(console.cookie(LOGIN_CSRF_COOKIE), ""))
    fields = await form_of(request)
    username = text(fields, "username")
    password = fields.get("password")
    if not username or not isinstance(password, str) or not password:
        return login_page(
            request, status=400, problem="Give a username and a password.", username=username
        )
    address = request.client.host if request.client else ""
    try:
        console.throttle.reserve(username, address)
    except Throttled as refusal:
        retry = {"retry-after": str(int(refusal.retry_after) + 1)}
        return login_page(
            request, status=429, problem=str(refusal).capitalize(), username=username,
            headers=retry,
        )  # fmt: skip
    try:
        # The gateway checks at most two passwords at once per certificate and refuses more:
        # the console's users queue here instead of being refused.
        async with console.login_slots:
            result = await console.client().login(username, password[:1024])
    except ApiError as error:
        return login_page(request, status=http_status(error), error=error, username=username)
    console.throttle.succeeded(username, address)
    session = console.sessions.create(
        username, result.role, result.token, result.expires_at.timestamp()
    )
    response = see_other(HOME.get(session.role, "/"))
    set_cookie(
        request, response, SESSION_COOKIE, session.id, console.sessions.seconds_left(session)
    )
    clear_cookie(request, response, LOGIN_CSRF_COOKIE)
    return response


async def logout(request: Request, session: Session) -> Response:
    """Revokes the token at the gateway, then forgets the session whatever the gateway said."""
    console = console_of(request)
    console.sessions.remove(session.id)
    try:
        await console.client(session.token).logout()
    except ApiError as error:
        response = login_page(
            request,
            notice="You are signed out of the console, but the gateway could not be told: "
            "your token stays valid at the gateway until it expires.",
            error=error,
        )
    else:
        response = see_other("/login?signed_out=1")
    clear_cookie(request, response, SESSION_COOKIE)
    return response
