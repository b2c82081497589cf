"""What every response carries and every request is held to: security headers (a
Content-Security-Policy that allows no inline script or style and no other origin), no
caching of pages with someone's account in them, a bound on request bodies, and the CSRF
check of forms.

Pure ASGI middleware rather than Starlette's BaseHTTPMiddleware: it adds headers to
streamed responses (server-sent events) without buffering them.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# All script and style come from /static; no inline <script>, no on*= handlers, no eval.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Pages' URLs name payments: never sent to another site.
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
NO_STORE = (b"cache-control", b"no-store")
MAX_BODY = 64 * 1024  # like the gateway's request limit: every form here is far smaller
MAX_FIELDS = 32
CSRF_FIELD = "csrf_token"


class CsrfRefused(Exception):
    """A form that changes something came without this session's CSRF token."""


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *HEADERS]
                if not static:
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuses a request body over MAX_BODY bytes (413) before it is parsed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            await _too_large(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # a chunked body that grew past what it announced
                raise ValueError("request body too large")
            return message

        await self.app(scope, bounded_receive, send)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    response = PlainTextResponse("request body too large", status_code=413)
    await response(scope, receive, send)


async def form_of(request: Request) -> FormData:
    """The request's form, bounded (no files, few fields, short values); parsed once."""
    return await request.form(max_files=0, max_fields=MAX_FIELDS, max_part_size=MAX_BODY)


async def check_csrf(request: Request, expected: str) -> None:
    """Raises CsrfRefused unless the form carries EXPECTED (compared in constant time)."""
    sent = (await form_of(request)).get(CSRF_FIELD)
    if not isinstance(sent, str) or not expected:
        raise CsrfRefused()
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused()
