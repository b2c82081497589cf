"""Background work repeated for the life of a process: reloads and recovery passes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


async def repeat(
    work: Callable[[], Awaitable[object]], interval: float, log: logging.Logger, failure: str
) -> None:
    """Runs WORK every INTERVAL seconds until cancelled. A failed run is logged as FAILURE with
    its traceback and the next one goes ahead: a database that is down for a moment must not
    end a loop that nobody would restart."""
    while True:
        await asyncio.sleep(interval)
        try:
            await work()
        except Exception:
            log.exception(failure)
