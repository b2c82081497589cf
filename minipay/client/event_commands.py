"""The ``events`` command both command lines have: a customer reads their own account's
events, an admin every event. One line per event (``--json``: one JSON object per line);
``--follow`` goes on with live events until Ctrl-C, which ends it cleanly (exit 0) and
prints the cursor to resume from."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from typing import Any

from minipay.client.api import GatewayClient
from minipay.client.commandline import Commands, positive_int
from minipay.client.events import EVENT_TYPES, Event, event_json, event_line
from minipay.client.results import Payment

DEFAULT_LIMIT = 100


def add_events_command(commands: Commands, whose: str) -> None:
    events = commands.add(
        "events",
        f"{whose} events, oldest first: payments and refunds decided, deposits, users...",
        "One line per event, its sequence first; --json prints one JSON object per line.\n"
        "Without --follow, prints up to --limit events after --after, then the cursor to go\n"
        "on from (on standard error). With --follow, goes on with live events as they happen,\n"
        "until Ctrl-C, which prints the cursor to resume from with --after.\n"
        "A cursor older than what the gateway keeps (30 days by default) is refused with\n"
        "OUT_OF_RANGE, naming the oldest sequence kept.",
    )
    events.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="N",
        help="only events after sequence N (default 0: from the oldest kept)",
    )
    events.add_argument(
        "--type",
        action="append",
        choices=sorted(EVENT_TYPES),
        dest="types",
        metavar="TYPE",
        help="only events of this type (repeat for several; default: every type): "
        + ", ".join(sorted(EVENT_TYPES)),
    )
    events.add_argument(
        "--follow", "-f", action="store_true", help="go on with live events until Ctrl-C"
    )
    events.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"without --follow, at most N events (default {DEFAULT_LIMIT})",
    )


async def show_events(
    args: argparse.Namespace,
    client: GatewayClient,
    payment_fields: Callable[[Payment], dict[str, Any]],
) -> int:
    types = tuple(args.types or ())

    def emit(event: Event) -> None:
        if args.json:
            print(json.dumps(event_json(event, payment_fields)), flush=True)
        else:
            print(event_line(event), flush=True)

    if not args.follow:
        cursor, shown = args.after, 0
        while shown < args.limit:
            page = await client.events(cursor, min(500, args.limit - shown), types)
            for event in page.events:
                emit(event)
            shown += len(page.events)
            more = page.next_after_sequence != cursor and len(page.events) > 0
            cursor = page.next_after_sequence
            if not more:
                break
        print(f"next: --after {cursor}", file=sys.stderr)
        return 0
    return await _follow(client, args.after, types, emit)


async def _follow(
    client: GatewayClient, after: int, types: tuple[str, ...], emit: Callable[[Event], None]
) -> int:
    """Prints events as they come until Ctrl-C (or SIGTERM), then the cursor."""
    cursor = after
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def watch() -> None:
        nonlocal cursor
        async for page in client.watch_events(cursor, types):
            for event in page.events:
                emit(event)
            cursor = page.next_after_sequence

    watching = asyncio.create_task(watch())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({watching, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        for task in (watching, stopping):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping
    if watching.done() and not watching.cancelled() and watching.exception() is not None:
        raise watching.exception()  # type: ignore[misc]
    with contextlib.suppress(asyncio.CancelledError):
        await watching
    print(f"stopped; resume with --after {cursor}", file=sys.stderr)
    return 0
