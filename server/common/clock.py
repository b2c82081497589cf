"""Wall-clock time as stored in the databases: float seconds since the epoch."""

import time


def now() -> float:
    return time.time()
