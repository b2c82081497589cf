"""Test-only fault injection, off unless ``--faults`` / ``MINIPAY_FAULTS`` names points.

``crash_*`` points end the process at once (no clean-up, like kill -9); ``delay_prepare=S``
sleeps S seconds before a bank handles Prepare; ``drop_commit_ack=N`` makes a bank apply its
first N Commit calls but answer them with UNAVAILABLE, as if the answer were lost;
``withhold_decisions`` makes the gateway keep its decisions to itself, as if every Commit and
Abort were lost on the way, so that banks in doubt must ask.
"""

from __future__ import annotations

import asyncio
import logging
import os

from server.common.logs import stop_log_writer

log = logging.getLogger(__name__)

CRASH_POINTS = frozenset(
    {
        "crash_after_record",  # gateway: payment recorded, no Prepare sent
        "crash_after_decision",  # gateway: decision durable, not sent
        "crash_after_first_commit_ack",  # gateway: one bank acknowledged Commit
        "crash_after_vote_yes",  # bank: yes vote durable, not sent
        "crash_after_commit_applied",  # bank: Commit applied, not acknowledged
    }
)
VALUE_POINTS = frozenset({"delay_prepare", "drop_commit_ack"})
FLAG_POINTS = frozenset(
    {
        "withhold_decisions",  # gateway: never sends Commit or Abort (banks must ask)
    }
)


class Faults:
    def __init__(self, spec: str = "") -> None:
        self._crash: set[str] = set()
        self._flags: set[str] = set()
        self._values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, value = item.partition("=")
            if name in CRASH_POINTS:
                self._crash.add(name)
            elif name in FLAG_POINTS:
                self._flags.add(name)
            elif name in VALUE_POINTS:
                self._values[name] = float(value or 1)
            else:
                raise ValueError(f"unknown fault injection point {name!r}")
        if self._crash or self._flags or self._values:
            log.warning("fault injection is on: %s", spec)

    def crash_point(self, name: str) -> None:
        if name in self._crash:
            log.warning("fault injection: crashing at %s", name)
            stop_log_writer()
            os._exit(97)

    def is_on(self, name: str) -> bool:
        return name in self._flags

    async def delay(self, name: str) -> None:
        seconds = self._values.get(name, 0.0)
        if seconds:
            await asyncio.sleep(seconds)

    def take(self, name: str) -> bool:
        """True (and one fewer left) while a counted fault such as drop_commit_ack remains."""
        left = self._values.get(name, 0)
        if left >= 1:
            self._values[name] = left - 1
            return True
        return False
