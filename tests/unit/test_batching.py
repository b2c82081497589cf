"""The batcher: whatever is waiting when a round starts goes into that round, and every
waiter of a failed round learns it failed."""

from __future__ import annotations

import asyncio

import pytest

from server.gateway.batching import Batcher


class Rounds:
    def __init__(self, fail_first: int = 0) -> None:
        self.sizes: list[int] = []
        self.fail_first = fail_first

    async def handler(self, items: list[int]) -> list[int]:
        self.sizes.append(len(items))
        await asyncio.sleep(0.01)
        if len(self.sizes) <= self.fail_first:
            raise RuntimeError("the round failed")
        return [item * 10 for item in items]


def test_one_item_is_a_round_of_its_own() -> None:
    rounds = Rounds()

    async def go() -> int:
        return await Batcher(rounds.handler, 8).submit(4)

    assert asyncio.run(go()) == 40
    assert rounds.sizes == [1]


def test_items_waiting_when_a_round_starts_share_the_next_round() -> None:
    rounds = Rounds()

    async def go() -> list[int]:
        batcher = Batcher(rounds.handler, 8)
        return await asyncio.gather(*(batcher.submit(i) for i in range(5)))

    assert asyncio.run(go()) == [0, 10, 20, 30, 40]
    # The first arrival starts a round at once; the rest wait for it and go together.
    assert sum(rounds.sizes) == 5
    assert len(rounds.sizes) <= 2


def test_a_round_never_exceeds_max_size() -> None:
    rounds = Rounds()

    async def go() -> list[int]:
        batcher = Batcher(rounds.handler, 3)
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert asyncio.run(go()) == [i * 10 for i in range(10)]
    assert max(rounds.sizes) <= 3


def test_max_size_one_runs_every_item_alone() -> None:
    rounds = Rounds()

    async def go() -> list[int]:
        batcher = Batcher(rounds.handler, 1)
        return await asyncio.gather(*(batcher.submit(i) for i in range(4)))

    asyncio.run(go())
    assert rounds.sizes == [1, 1, 1, 1]


def test_every_waiter_of_a_failed_round_gets_the_error_and_later_rounds_run() -> None:
    rounds = Rounds(fail_first=1)

    async def go() -> tuple[list[object], int]:
        batcher = Batcher(rounds.handler, 8)
        first = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True), 2
        )
        later = await asyncio.wait_for(batcher.submit(7), 2)
        return first, later

    first, later = asyncio.run(go())
    # The first round (item 0) failed; items 1 and 2 went in the next round and succeeded,
    # or they were in the failed round too: either way nobody hangs.
    assert isinstance(first[0], RuntimeError)
    assert all(isinstance(result, RuntimeError | int) for result in first)
    assert later == 70


def test_a_failed_round_with_many_waiters_fails_them_all() -> None:
    async def failing(items: list[int]) -> list[int]:
        raise RuntimeError("the database is gone")

    async def go() -> list[object]:
        batcher: Batcher[int, int] = Batcher(failing, 8)
        return await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True), 2
        )

    results = asyncio.run(go())
    assert len(results) == 6
    assert all(isinstance(result, RuntimeError) for result in results)


def test_a_handler_answering_the_wrong_number_of_results_fails_the_round() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    async def go() -> None:
        batcher: Batcher[int, int] = Batcher(short, 8)
        await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(3))), 2)

    with pytest.raises(ValueError):
        asyncio.run(go())
