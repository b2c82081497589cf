"""Runs one reconcile: every bank's books first (all at once), then the walk over the
gateway's pages and the banks' pages in a worker thread (a sorted merge of millions of rows
would otherwise hold the event loop that serves payments), then the report, stored so that
every replica can show it. The comparison itself is ``reconcile``'s."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from server.common.clock import now
from server.common.db import Database
from server.common.errors import MinipayError
from server.gateway import reconcile_store
from server.gateway.banks import BankClient
from server.gateway.reconcile import BankUnreachable, Reconcile, Report

T = TypeVar("T")
PAGE_SIZE = 2000  # rows per page, from the gateway's database and from each bank
PAGE_TIMEOUT = 120.0


def new_run_id() -> str:
    return "rec_" + uuid.uuid4().hex[:20]


async def run(db: Database, banks: list[BankClient], older_than: int) -> Report:
    started = now()
    comparison = Reconcile(started, older_than)
    answers = await asyncio.gather(*(bank.books() for bank in banks), return_exceptions=True)
    reachable = []
    for bank, answer in zip(banks, answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, MinipayError):
                raise answer
            comparison.bank_unreachable(bank.name, answer.message)
        else:
            comparison.bank_books(bank.name, answer)
            reachable.append(bank)
    loop = asyncio.get_running_loop()

    def walk() -> None:
        comparison.payments(
            _pages(lambda after: reconcile_store.payments_page_of(db, after, PAGE_SIZE), "id"),
            {
                bank.name: _bank_pages(loop, bank, bank.bank_payments_page, "payment_id")
                for bank in reachable
            },
        )
        comparison.deposits(
            _pages(
                lambda after: reconcile_store.deposits_page_of(db, after, PAGE_SIZE),
                "deposit_id",
            ),
            {
                bank.name: _bank_pages(loop, bank, bank.deposits_page, "deposit_id")
                for bank in reachable
            },
        )

    await asyncio.to_thread(walk)
    return comparison.finish(now())


def _pages(fetch: Callable[[str], list[T]], key: str) -> Iterator[T]:
    """Every row, a page at a time, each page after the last row of the one before."""
    after = ""
    while True:
        rows = fetch(after)
        yield from rows
        if len(rows) < PAGE_SIZE:
            return
        after = getattr(rows[-1], key)


def _bank_pages(
    loop: asyncio.AbstractEventLoop,
    bank: BankClient,
    fetch: Callable[[str, int], Awaitable[tuple[list[T], bool]]],
    key: str,
) -> Iterator[T]:
    """A bank's rows, fetched on the event loop from the walk's thread; a bank that stops
    answering ends them with BankUnreachable."""
    after = ""
    while True:
        future = asyncio.run_coroutine_threadsafe(_call(fetch, after), loop)
        try:
            rows, done = future.result(PAGE_TIMEOUT)
        except MinipayError as error:
            raise BankUnreachable(bank.name, error.message) from None
        except TimeoutError:
            future.cancel()
            raise BankUnreachable(bank.name, "a page took too long") from None
        yield from rows
        if done or not rows:
            return
        after = getattr(rows[-1], key)


async def _call(
    fetch: Callable[[str, int], Awaitable[tuple[list[T], bool]]], after: str
) -> tuple[list[T], bool]:
    return await fetch(after, PAGE_SIZE)
