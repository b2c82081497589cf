"""``python -m devtools.bench.console_pages`` (``make bench-console``): how long each page of
the web console takes to render on the server with N payments stored (default 10^5).

It starts a cluster in a temporary folder, preloads N finished payments into its databases
(devtools/bench/preload.py: the same rows a day of traffic leaves), starts it again with the
console (``python -m console``, its own process), signs in as the admin and as the customer
with the most payments, opens every page ROUNDS times and prints, per page, the median, the
95th percentile and the slowest server-side render time: the console's own ``Server-Timing``
figure, from the request's arrival to its response's first byte, gateway calls included.
Exit status 1 when a page's median is over the budget (300 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from http.cookiejar import CookieJar
from pathlib import Path

from devtools.bench.load import client_config
from devtools.bench.preload import preload
from devtools.cluster import Cluster, ConsoleProcess, every_process
from devtools.customers import ADMIN, Customer, seed_customers
from devtools.scratch import free_port
from minipay.client import GatewayClient

BUDGET_MS = 300.0
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_PAYMENT = re.compile(r'data-payment-id="([^"]+)"')
_TIMING = re.compile(r"app;dur=([0-9.]+)")


class Browser:
    """A browser's worth of HTTP: its cookies, the sign-in form, and pages' render times."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def get(self, path: str) -> tuple[str, float]:
        """The page's text and its server-side render time in milliseconds."""
        with self.opener.open(self.url + path, timeout=60) as answer:
            timing = _TIMING.search(answer.headers.get("server-timing", ""))
            return answer.read().decode(), float(timing[1]) if timing else float("nan")

    def sign_in(self, username: str, password: str) -> None:
        page, _ = self.get("/login")
        token = _CSRF.search(page)
        assert token is not None, "no CSRF field on the sign-in page"
        form = {"csrf_token": html.unescape(token[1]), "username": username, "password": password}
        body = urllib.parse.urlencode(form).encode()
        with self.opener.open(self.url + "/login", data=body, timeout=60) as answer:
            if answer.url.endswith("/login"):
                raise RuntimeError(f"{username} could not sign in to the console")


async def register(cluster: Cluster, customer: Customer) -> None:
    async with GatewayClient(client_config(cluster, "client-1")) as client:
        await client.register(customer.username, customer.password, customer.bank, customer.account)


def first_payment(page: str) -> str:
    found = _PAYMENT.search(page)
    if found is None:
        raise RuntimeError("no payment listed")
    return html.unescape(found[1])


def measure(browser: Browser, path: str, rounds: int) -> list[float]:
    browser.get(path)  # once to warm up (templates compiled, connections open)
    return [browser.get(path)[1] for _ in range(rounds)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench.console_pages", description=__doc__
    )
    parser.add_argument("--payments", type=int, default=100_000, help="payments stored first")
    parser.add_argument("--rounds", type=int, default=20, help="requests per page measured")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="minipay-console-bench-") as folder:
        cluster = Cluster(Path(folder), env=every_process(log_format="json"))
        console = ConsoleProcess(cluster, free_port(), any_free_port=True)
        try:
            return run(cluster, console, args.payments, args.rounds, args.seed)
        finally:
            console.stop()
            cluster.stop()


def run(cluster: Cluster, console: ConsoleProcess, payments: int, rounds: int, seed: int) -> int:
    customers = seed_customers()
    print(f"starting a cluster in {cluster.data_dir}", flush=True)
    cluster.start()
    cluster.stop()
    started = time.perf_counter()
    preloaded = preload(cluster, customers, payments, seed, timeout=30.0)
    print(f"preloaded {payments} payments in {time.perf_counter() - started:.1f} s", flush=True)
    cluster.start()
    console.start()
    console.wait_ready()
    busiest = customers[preloaded.busiest]
    asyncio.run(register(cluster, busiest))
    admin, customer = Browser(console.url), Browser(console.url)
    admin.sign_in(*ADMIN)
    customer.sign_in(busiest.username, busiest.password)
    listed, _ = admin.get("/admin/payments")
    any_payment = first_payment(listed)
    mine, _ = customer.get("/payments")
    my_payment = first_payment(mine)
    account = f"bank={busiest.bank}&account={urllib.parse.quote(busiest.account)}"
    pages = [
        (admin, "/admin"),
        (admin, "/admin/payments"),
        (admin, f"/admin/payments?{account}"),
        (admin, "/admin/payments?status=ABORTED"),
        (admin, "/admin/payments?kind=refund&size=100"),
        (admin, f"/admin/payments/{any_payment}"),
        (admin, "/admin/users"),
        (admin, "/admin/live"),
        (customer, "/account"),
        (customer, "/payments"),
        (customer, "/payments?direction=incoming&size=100"),
        (customer, f"/payments/{my_payment}"),
        (customer, "/pay"),
    ]
    print(
        f"\nserver-side render time per page, {payments} payments stored, {rounds} requests "
        f"each (ms; the customer {busiest.username} has the most payments):"
    )
    print(f"  {'page':<48} {'median':>8} {'p95':>8} {'max':>8}")
    over = []
    for browser, path in pages:
        times = sorted(measure(browser, path, rounds))
        median = statistics.median(times)
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        shown = re.sub(r"pay_[0-9a-f]+", "{id}", path).replace(account, "bank=…&account=…")
        print(f"  {shown:<48} {median:>8.1f} {p95:>8.1f} {times[-1]:>8.1f}")
        if median > BUDGET_MS:
            over.append(shown)
    if over:
        print(f"over the {BUDGET_MS:g} ms budget: {', '.join(over)}")
        return 1
    print(f"every page within the {BUDGET_MS:g} ms budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
