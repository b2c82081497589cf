"""The customer command line's ``pay-batch FILE.csv``: every row of a checked file
(``batch_file``) paid in calls of up to MAX_BATCH_ITEMS, a progress bar on a terminal, each
row's outcome written to the results file as its call answers, and the summary.

The progress bar is tqdm's, when tqdm is installed (``pip install "minipay[progress]"``; a
checkout has it) and standard error is a terminal; otherwise the command is quiet until the
summary. A call that fails after the library's retries stops the run: its rows are UNKNOWN
in the results and the rows after it NOT_SENT, and running the same command again is safe
(every row has the same key again: those paid replay, the rest are paid)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from minipay.client.api import MAX_BATCH_ITEMS, GatewayClient
from minipay.client.batch_file import (
    NOT_SENT,
    UNKNOWN,
    ResultsFile,
    Row,
    Summary,
    check,
    check_split,
    results_path,
    rows,
    split_key,
)
from minipay.client.commandline import Invocation, error_fields, money_fields, show
from minipay.client.errors import ApiError, ClientError
from minipay.client.results import BatchResult, BatchResults, SplitShare
from minipay.money import format_minor_units

T = TypeVar("T")
# RATE_LIMITED (a batch costs as many payments as it has items): wait as the gateway says
# and send the same call again, at most this many times per call.
RATE_LIMIT_WAITS = 10


def check_file(args: argparse.Namespace) -> None:
    """Before anything else: the results file named, every row checked (with --atomic, the
    rows checked as the payees of one split payment)."""
    source: Path = args.file
    args.results_file = args.results or results_path(source)
    if args.results_file.resolve() == source.resolve():
        raise ClientError(f"--results {args.results_file} is the input file; name another")
    if args.atomic:
        args.split_rows = check_split(source, args.currency)
        args.rows = len(args.split_rows)
    else:
        args.rows = check(source, args.currency)


async def pay_split_file(invocation: Invocation, client: GatewayClient) -> int:
    """--atomic: the file's rows as one split payment, all or nothing, in one atomic
    PayBatch call; every row's line in the results file has the payment's outcome."""
    args = invocation.args
    chosen: list[Row] = args.split_rows
    key = split_key(chosen)
    shares = [SplitShare(row.bank, row.account, row.minor_units) for row in chosen]
    started = time.monotonic()
    try:
        payment = await client.pay_split(shares, chosen[0].currency, key)
    except ApiError as error:
        raise _at_line(error, chosen) from None
    summary = Summary()
    results = ResultsFile(args.results_file)
    try:
        for row in chosen:
            # Each row's own amount: the summary adds up what moved, once.
            result = BatchResult(
                key, dataclasses.replace(payment, amount_minor_units=row.minor_units), None
            )
            results.write(row, result)
            summary.add(row, result)
    finally:
        results.close()
    elapsed = time.monotonic() - started
    data = _summary_fields(args, summary, [payment.request_id], elapsed)
    data.update(payment_id=payment.payment_id, idempotency_key=key, status=payment.status.value)
    text = _summary_text(args, summary, 1, elapsed).splitlines()
    text[0] += f": one split payment {payment.payment_id}, {payment.status.value}"
    if payment.reason:
        text[0] += f" ({payment.reason_code}: {payment.reason})"
    show(args, data, "\n".join(text), payment.request_id)
    return 0 if summary.all_committed else 1


def _at_line(error: ApiError, chosen: Sequence[Row]) -> ApiError:
    """ERROR, naming the file's line when it is about one share (``items[N]...``)."""
    fields = [field for field, _ in error.field_violations]
    found = re.match(r"items\[(\d+)\]", fields[0]) if fields else None
    if found is None or int(found.group(1)) >= len(chosen):
        return error
    line = chosen[int(found.group(1))].line
    error.message = f"line {line}: {error.message}"
    return error


async def pay_batch(invocation: Invocation, client: GatewayClient) -> int:
    args = invocation.args
    if args.atomic:
        return await pay_split_file(invocation, client)
    summary = Summary()
    request_ids: list[str] = []
    failure: ApiError | None = None
    results = ResultsFile(args.results_file)
    started = time.monotonic()
    with _progress(args.rows, args.file.name) as bar:
        try:
            for chunk in _chunks(rows(args.file, args.currency), MAX_BATCH_ITEMS):
                # Rows after a failed call are not sent; the failed call's are UNKNOWN.
                answered: Sequence[Any] = [NOT_SENT] * len(chunk)
                if failure is None:
                    try:
                        answer = await _send(client, chunk)
                    except ApiError as error:
                        failure = error
                        answered = [UNKNOWN] * len(chunk)
                    else:
                        request_ids.append(answer.request_id)
                        answered = answer.results
                for row, result in zip(chunk, answered, strict=True):
                    results.write(row, result)
                    summary.add(row, result)
                bar.update(len(chunk))
        finally:  # a file that changed meanwhile stops the run (BadFile): keep what was learnt
            results.close()
    elapsed = time.monotonic() - started
    data = _summary_fields(args, summary, request_ids, elapsed)
    if failure is None:
        show(
            args, data, _summary_text(args, summary, len(request_ids), elapsed), _last(request_ids)
        )
        return 0 if summary.all_committed else 1
    hint = (
        f"; {summary.unknown} rows sent without an answer and {summary.not_sent} not sent: run "
        "the same command again to learn and send them (the rows already paid replay, nothing "
        "is paid twice)"
    )
    if args.json:
        data["error"] = error_fields(failure.code.name, failure.message + hint, failure)
        show(args, data, "", _last(request_ids))
    else:
        print(_summary_text(args, summary, len(request_ids), elapsed))
    print("error: " + " ".join((failure.headline() + hint).split()), file=sys.stderr)
    return 1


async def _send(client: GatewayClient, chunk: Sequence[Row]) -> BatchResults:
    items = [row.item for row in chunk]
    for wait in itertools.count():
        try:
            return await client.pay_batch(items)
        except ApiError as error:
            limited = error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            if not (limited and error.reason == "RATE_LIMITED" and wait < RATE_LIMIT_WAITS):
                raise
            await asyncio.sleep(error.retry_after or 1.0)
    raise AssertionError("unreachable")


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _last(request_ids: list[str]) -> str | None:
    return request_ids[-1] if request_ids else None


# -- output -------------------------------------------------------------------------------------


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in counter.most_common())


def _moved(summary: Summary) -> str:
    parts = [
        f"{format_minor_units(minor, currency)} {currency}"
        for currency, minor in sorted(summary.moved.items())
    ]
    return ", ".join(parts) or "nothing"


def _summary_text(args: argparse.Namespace, summary: Summary, calls: int, elapsed: float) -> str:
    lines = [
        f"{args.file}: {summary.rows} rows in {calls} call{'s' if calls != 1 else ''}, "
        f"{elapsed:.1f} s",
        f"  committed {summary.committed:>7}   moved {_moved(summary)}",
        f"  aborted   {sum(summary.aborted.values()):>7}   {_counts(summary.aborted)}".rstrip(),
        f"  refused   {sum(summary.refused.values()):>7}   {_counts(summary.refused)}".rstrip(),
    ]
    if summary.pending:
        lines.append(f"  pending   {summary.pending:>7}   not decided yet: run the file again")
    if summary.unknown:
        lines.append(f"  unknown   {summary.unknown:>7}   sent, no answer: run the file again")
    if summary.not_sent:
        lines.append(f"  not sent  {summary.not_sent:>7}")
    if summary.replayed:
        lines.append(
            f"  replayed  {summary.replayed:>7}   paid by an earlier run with the same keys"
        )
    lines.append(f"results: {args.results_file}")
    return "\n".join(lines)


def _summary_fields(
    args: argparse.Namespace, summary: Summary, request_ids: list[str], elapsed: float
) -> dict[str, Any]:
    return {
        "file": str(args.file),
        "results_file": str(args.results_file),
        "rows": summary.rows,
        "calls": len(request_ids),
        "seconds": round(elapsed, 3),
        "committed": summary.committed,
        "aborted": dict(summary.aborted),
        "refused": dict(summary.refused),
        "pending": summary.pending,
        "unknown": summary.unknown,
        "not_sent": summary.not_sent,
        "replayed": summary.replayed,
        "moved": [
            money_fields("amount", minor, currency)
            for currency, minor in sorted(summary.moved.items())
        ],
        "request_ids": request_ids,
    }


class _Quiet:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *_: object) -> None:
        pass


def _progress(total: int, name: str) -> Any:
    """tqdm's bar on standard error when it is a terminal and tqdm is installed; else quiet."""
    if not sys.stderr.isatty():
        return _Quiet()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Quiet()
    return tqdm(total=total, desc=name, unit=" payments", file=sys.stderr, dynamic_ncols=True)
