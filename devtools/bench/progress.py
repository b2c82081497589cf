"""The benchmark's progress lines, on standard error as each step happens (the report itself
goes to standard output at the end)."""

from __future__ import annotations

import sys


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
