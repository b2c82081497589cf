"""Background loops keep going after a failed run."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.common.periodic import repeat


def test_a_failed_run_is_logged_and_the_next_goes_ahead(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    async def work() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("database gone for a moment")

    async def main() -> None:
        loop = asyncio.create_task(repeat(work, 0, logging.getLogger("test"), "reload failed"))
        while len(runs) < 3:
            await asyncio.sleep(0)
        loop.cancel()

    asyncio.run(main())
    assert len(runs) >= 3
    [record] = [r for r in caplog.records if r.getMessage() == "reload failed"]
    assert record.exc_info is not None and "database gone" in str(record.exc_info[1])
