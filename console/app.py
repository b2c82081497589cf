"""The console as an ASGI app: ``create_app(settings)`` gives a Starlette app that any ASGI
server runs (``python -m console`` runs it under uvicorn; the tests in a thread).

``ROUTES`` is the one table of what the console serves and who may open it. The app opens its
one channel to the gateway when it starts (inside the server's event loop) and closes it when
it stops; it never opens a database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from console.gateway import Gateway
from console.live import Streams
from console.pages import actions, admin, auth, customer
from console.security import BodyLimit, SecurityHeaders
from console.sessions import SessionStore
from console.settings import ConsoleSettings
from console.throttle import Limit, LoginThrottle
from console.timing import RenderTimes, Timing
from console.web import (
    ADMIN,
    CUSTOMER,
    EXCEPTION_HANDLERS,
    SIGNED_IN,
    Console,
    public,
    signed_in,
    templates,
)

HERE = Path(__file__).parent

POST = ("POST",)
ROUTES: list[BaseRoute] = [
    public("/", auth.home),
    public("/login", auth.login_form),
    public("/login", auth.login, POST),
    signed_in("/logout", auth.logout, SIGNED_IN, POST),
    # A customer's own account (the gateway's Payments/* methods).
    signed_in("/account", customer.account, CUSTOMER),
    signed_in("/payments", customer.payments, CUSTOMER),
    signed_in("/payments/{payment_id}", customer.payment, CUSTOMER),
    signed_in("/payments/{payment_id}/refund", customer.refund, CUSTOMER, POST),
    signed_in("/pay", customer.pay_form, CUSTOMER),
    signed_in("/pay", customer.pay, CUSTOMER, POST),
    signed_in("/live/payments", customer.live_payments, CUSTOMER),
    signed_in("/confirm/{confirmation_id}", actions.confirm, CUSTOMER, POST),
    # Administration (the gateway's Admin/* methods, and every event).
    signed_in("/admin", admin.overview, ADMIN),
    signed_in("/admin/reconcile", admin.reconcile, ADMIN, POST),
    signed_in("/admin/payments", admin.payments, ADMIN),
    signed_in("/admin/payments/{payment_id}", admin.payment, ADMIN),
    signed_in("/admin/payments/{payment_id}/refund", admin.refund, ADMIN, POST),
    signed_in("/admin/live", admin.live, ADMIN),
    signed_in("/admin/live/events", admin.live_events, ADMIN),
    signed_in("/admin/users", admin.users, ADMIN),
    signed_in("/admin/users", admin.create_user, ADMIN, POST),
    signed_in("/admin/users/disabled", admin.set_disabled, ADMIN, POST),
    signed_in("/admin/deposit", admin.deposit_form, ADMIN),
    signed_in("/admin/deposit", admin.deposit, ADMIN, POST),
    signed_in("/admin/confirm/{confirmation_id}", actions.confirm, ADMIN, POST),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]


def create_app(settings: ConsoleSettings) -> Starlette:
    window, cooldown = settings.login_window, settings.login_cooldown
    console = Console(
        settings=settings,
        sessions=SessionStore(settings.session_lifetime, settings.max_sessions),
        throttle=LoginThrottle(
            per_username=Limit(settings.login_max_failures, window, cooldown),
            per_address=Limit(settings.login_client_max_failures, window, cooldown),
        ),
        streams=Streams(),
        render_times=RenderTimes(),
        templates=templates(str(HERE / "templates")),
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        console.gateway = Gateway(settings.client_config())
        try:
            yield
        finally:
            console.streams.stopping.set()
            await console.gateway.close()

    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(Timing, times=console.render_times),
            Middleware(BodyLimit),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.console = console
    return app
