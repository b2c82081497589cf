"""Grouping work into rounds: whatever is waiting when a round starts goes into that round.

One ``Batcher`` per phase (and per bank for RPCs) turns many concurrent payments into one
transaction or one RPC per round, which is what makes durable 2PC fast. With ``max_size``
1 every item is its own round and runs at once: the unbatched coordinator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(self, handler: Callable[[list[T]], Awaitable[list[R]]], max_size: int) -> None:
        self._handler = handler
        self._max_size = max(1, max_size)
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        if self._max_size == 1:
            return (await self._handler([item]))[0]
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_rounds())
        return await future

    async def _run_rounds(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_size]
            del self._waiting[: self._max_size]
            try:
                results = await self._handler([item for item, _ in batch])
                if len(results) != len(batch):
                    raise ValueError(f"a round of {len(batch)} gave {len(results)} results")
            except BaseException as error:  # every waiter learns the round failed
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                if isinstance(error, asyncio.CancelledError):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
