"""Runs one reconcile: every bank's books first (all at once), then the walk over the
gateway's pages and the banks' pages in a worker thread (a sorted merge of millions of rows
would otherwise hold the event loop that serves payments), then the report, stored so that
every replica can show it. The comparison itself is ``reconcile``'s."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

from server.common.clock import now
from server.common.db import Database
from server.common.errors import MinipayError
from server.gateway import reconcile_store
from server.gateway.banks import BankClient
from server.gateway.reconcile import BankPaymentPage, BankUnreachable, Reconcile, Report

T = TypeVar("T")
P = TypeVar("P")
PAGE_SIZE = 5000  # rows per page, from the gateway's database and from each bank
PAGE_TIMEOUT = 120.0


def new_run_id() -> str:
    return "rec_" + uuid.uuid4().hex[:20]


async def run(db: Database, banks: list[BankClient], older_than: int) -> Report:
    started = now()
    comparison = Reconcile(started, older_than)
    timings = comparison.report.timings
    answers = await asyncio.gather(*(bank.books() for bank in banks), return_exceptions=True)
    timings["books_s"] = now() - started
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
        begun = now()
        pages: dict[str, Iterator[BankPaymentPage]] = {
            bank.name: _bank_pages(loop, bank, bank.bank_payments_page, _payment_ids)
            for bank in reachable
        }
        comparison.payments(
            _pages(lambda after: reconcile_store.payments_page_of(db, after, PAGE_SIZE), "id"),
            pages,
        )
        comparison.deposits(
            _pages(
                lambda after: reconcile_store.deposits_page_of(db, after, PAGE_SIZE),
                "deposit_id",
            ),
            {
                bank.name: _flat(
                    _bank_pages(
                        loop, bank, bank.deposits_page, lambda rows: [r.deposit_id for r in rows]
                    )
                )
                for bank in reachable
            },
        )
        timings["walk_s"] = now() - begun

    _WAITING["s"] = 0.0
    await asyncio.to_thread(walk)
    timings["waiting_for_pages_s"] = _WAITING["s"]
    return comparison.finish(now())


def _pages(fetch: Callable[[str], list[T]], key: str) -> Iterator[T]:
    """Every row, a page at a time, each page after the last row of the one before; the next
    page is read (in a thread of its own) while this one is compared."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reconcile") as reader:
        rows = fetch("")
        while True:
            more = len(rows) == PAGE_SIZE
            ahead = reader.submit(fetch, getattr(rows[-1], key)) if more else None
            yield from rows
            if ahead is None:
                return
            waited = now()
            rows = ahead.result()
            _waited(waited)


def _bank_pages(
    loop: asyncio.AbstractEventLoop,
    bank: BankClient,
    fetch: Callable[[str, int], Awaitable[tuple[P, bool]]],
    ids: Callable[[P], Sequence[str]],
) -> Iterator[P]:
    """A bank's pages (IDS: the ids of a page's rows, in order), fetched on the event loop
    from the walk's thread, the next page asked for while this one is compared; a bank that
    stops answering ends them with BankUnreachable."""

    def ask(after: str) -> concurrent.futures.Future[tuple[P, bool]]:
        return asyncio.run_coroutine_threadsafe(_call(fetch, after), loop)

    future = ask("")
    while True:
        waited = now()
        try:
            page, done = future.result(PAGE_TIMEOUT)
        except MinipayError as error:
            raise BankUnreachable(bank.name, error.message) from None
        except TimeoutError:
            future.cancel()
            raise BankUnreachable(bank.name, "a page took too long") from None
        _waited(waited)
        keys = ids(page)
        finished = done or not keys
        if not finished:
            future = ask(keys[-1])
        yield page
        if finished:
            return


def _payment_ids(page: BankPaymentPage) -> list[str]:
    return page.payment_ids


def _flat(pages: Iterator[list[T]]) -> Iterator[T]:
    for rows in pages:
        yield from rows


async def _call(
    fetch: Callable[[str, int], Awaitable[tuple[P, bool]]], after: str
) -> tuple[P, bool]:
    return await fetch(after, PAGE_SIZE)


_WAITING: dict[str, float] = {"s": 0.0}


def _waited(since: float) -> None:
    """Counts the time the walk waited for a page (a rough figure, for the log)."""
    _WAITING["s"] += now() - since
