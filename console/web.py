"""The plumbing every page shares: the console's state, the session cookie, who may open a
route, rendering a template, and turning errors into pages.

A route is ``public`` or ``signed_in`` with the roles that may open it. The roles mirror the
gateway's permission table (server/interceptors/authorization.py): the console refuses early,
with a page that says why, and the gateway's own PERMISSION_DENIED is shown the same way, so
the gateway stays the authority. Every POST of a signed-in route is CSRF-checked before its
page function runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import grpc
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from console.gateway import Gateway
from console.live import Streams
from console.security import CsrfRefused, check_csrf
from console.sessions import Session, SessionsFull, SessionStore
from console.settings import ConsoleSettings
from console.throttle import LoginThrottle
from console.timing import RenderTimes
from minipay.client import ApiError, GatewayClient, GatewayUnreachable
from minipay.money import format_minor_units

log = logging.getLogger("console")

CUSTOMER = frozenset({"customer"})
ADMIN = frozenset({"admin"})
SIGNED_IN = CUSTOMER | ADMIN
HOME = {"customer": "/account", "admin": "/admin"}
MAX_FIELD = 200  # characters kept of any form field or query parameter


@dataclass
class Console:
    """Everything the pages share, on ``app.state.console``."""

    settings: ConsoleSettings
    sessions: SessionStore
    throttle: LoginThrottle
    streams: Streams
    render_times: RenderTimes
    templates: Jinja2Templates
    gateway: Gateway | None = None  # opened by the app's lifespan, inside its event loop
    # As many password checks at once as the gateway takes from one certificate.
    login_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))

    def client(self, token: str = "") -> GatewayClient:
        assert self.gateway is not None, "the console's lifespan has not started"
        return self.gateway.client(token)

    def cookie(self, name: str) -> str:
        # __Host-: the browser keeps it only if Secure, for this host and path / (HTTPS only).
        return f"__Host-{name}" if self.settings.https else name


SESSION_COOKIE = "minipay_session"
LOGIN_CSRF_COOKIE = "minipay_login_csrf"


def console_of(request: Request) -> Console:
    return cast(Console, request.app.state.console)


def templates(folder: str) -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(folder), autoescape=True, undefined=StrictUndefined)
    env.filters["money"] = lambda minor, currency: format_minor_units(minor, currency)
    env.filters["utc"] = lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""
    env.filters["stamp"] = stamp
    env.filters["age"] = age
    env.filters["amounts"] = amounts
    return Jinja2Templates(env=env)


def stamp(value: Any) -> str:
    """A protobuf Timestamp as the pages show times; "" when unset."""
    if not value.seconds and not value.nanos:
        return ""
    moment: datetime = value.ToDatetime(tzinfo=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def age(value: Any) -> str:
    """How long ago a protobuf Timestamp was, in words; "" when unset."""
    if not value.seconds and not value.nanos:
        return ""
    seconds = max(0, int(datetime.now(UTC).timestamp()) - value.seconds)
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def amounts(values: Any) -> str:
    """Repeated Money as "1000.00 USD, 5.00 EUR"; "0" when empty."""
    shown = [f"{format_minor_units(m.minor_units, m.currency)} {m.currency}" for m in values]
    return ", ".join(shown) or "0"


# -- sessions and cookies --------------------------------------------------------------------


def current_session(request: Request) -> Session | None:
    console = console_of(request)
    session_id = request.cookies.get(console.cookie(SESSION_COOKIE), "")
    return console.sessions.get(session_id) if session_id else None


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    console = console_of(request)
    response.set_cookie(
        console.cookie(name),
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=console.settings.https,
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    console = console_of(request)
    response.delete_cookie(
        console.cookie(name),
        path="/",
        httponly=True,
        samesite="strict",
        secure=console.settings.https,
    )


# -- routes ------------------------------------------------------------------------------------

PublicPage = Callable[[Request], Awaitable[Response]]
SessionPage = Callable[[Request, Session], Awaitable[Response]]


class NotSignedIn(Exception):
    pass


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def public(path: str, page: PublicPage, methods: Collection[str] = ("GET",)) -> Route:
    return Route(path, page, methods=list(methods))


def signed_in(
    path: str, page: SessionPage, roles: frozenset[str], methods: Collection[str] = ("GET",)
) -> Route:
    """A route for signed-in people of ROLES; its POSTs must carry the session's CSRF token."""

    async def guarded(request: Request) -> Response:
        session = current_session(request)
        if session is None:
            raise NotSignedIn()
        if session.role not in roles:
            wanted = " or ".join(sorted(roles))
            raise Forbidden(
                f"This page is for {wanted}s only; you are signed in as "
                f"{session.username} ({session.role})."
            )
        if request.method == "POST":
            await check_csrf(request, session.csrf)
        return await page(request, session)

    guarded.__name__ = page.__name__
    return Route(path, guarded, methods=list(methods))


# -- pages -------------------------------------------------------------------------------------


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    session: Session | None = None,
    status: int = 200,
) -> Response:
    values = {"session": session, "csrf": session.csrf if session else "", **(context or {})}
    return console_of(request).templates.TemplateResponse(
        request, template, values, status_code=status
    )


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def text(source: FormData | Mapping[str, str], name: str) -> str:
    """A form field or query parameter as text: stripped, at most MAX_FIELD characters."""
    value = source.get(name, "")
    return value.strip()[:MAX_FIELD] if isinstance(value, str) else ""


# -- errors as pages ---------------------------------------------------------------------------

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status(error: ApiError) -> int:
    """The HTTP status a page shows an API error with."""
    if isinstance(error, GatewayUnreachable):
        return 503
    return HTTP_STATUS.get(error.code, 502)


def error_page(
    request: Request,
    status: int,
    title: str,
    message: str,
    error: ApiError | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    response = render(
        request,
        "error.html",
        {"title": title, "message": message, "error": error},
        session=current_session(request),
        status=status,
    )
    response.headers.update(headers or {})
    return response


async def on_not_signed_in(request: Request, _: Exception) -> Response:
    had_cookie = console_of(request).cookie(SESSION_COOKIE) in request.cookies
    response = see_other("/login?ended=1" if had_cookie else "/login")
    if had_cookie:
        clear_cookie(request, response, SESSION_COOKIE)
    return response


async def on_forbidden(request: Request, error: Exception) -> Response:
    assert isinstance(error, Forbidden)
    return error_page(request, 403, "Not allowed", error.message)


async def on_csrf(request: Request, _: Exception) -> Response:
    return error_page(
        request,
        403,
        "Form refused",
        "This form did not carry this console's security token (CSRF): it may be old, from "
        "another sign-in, or from another site. Nothing was changed. Open the page again "
        "and resubmit.",
    )


async def on_api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    if error.code == grpc.StatusCode.UNAUTHENTICATED:
        return signed_out_by_gateway(request, error)
    if error.code == grpc.StatusCode.PERMISSION_DENIED:
        return error_page(request, 403, "Not allowed", "The gateway refused this.", error)
    headers = {"retry-after": str(int(error.retry_after) + 1)} if error.retry_after else None
    title = "Gateway unreachable" if isinstance(error, GatewayUnreachable) else "Refused"
    return error_page(request, http_status(error), title, "", error, headers)


def signed_out_by_gateway(request: Request, error: ApiError) -> Response:
    """The gateway refused the token (expired, revoked, user disabled): the session ends, and
    the sign-in page says why (the reason only: an upper-snake word, nothing secret)."""
    console = console_of(request)
    session_id = request.cookies.get(console.cookie(SESSION_COOKIE), "")
    if session_id:
        console.sessions.remove(session_id)
    response = see_other(f"/login?ended={error.reason or 'UNAUTHENTICATED'}")
    clear_cookie(request, response, SESSION_COOKIE)
    return response


async def on_sessions_full(request: Request, error: Exception) -> Response:
    return error_page(request, 503, "Busy", str(error))


async def on_http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    titles = {404: "Not found", 405: "Method not allowed"}
    return error_page(
        request, error.status_code, titles.get(error.status_code, "Error"), error.detail
    )


async def on_unexpected(request: Request, error: Exception) -> Response:
    log.error("unexpected error", exc_info=error, extra={"fields": {"path": request.url.path}})
    return error_page(
        request, 500, "Console error", "Something went wrong in the console; its log says what."
    )


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    NotSignedIn: on_not_signed_in,
    Forbidden: on_forbidden,
    CsrfRefused: on_csrf,
    ApiError: on_api_error,
    SessionsFull: on_sessions_full,
    HTTPException: on_http_exception,
    Exception: on_unexpected,
}
