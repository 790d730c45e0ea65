"""Waiting on real processes in tests: a process is gone when the system no longer has it."""
from __future__ import annotations

import time

from studio import procs


def gone(pid: int, within_s: float = 10.0) -> bool:
    """True once ``pid`` has ended (polled every 0.1 s), False if it still runs after ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not procs.pid_alive(pid):
            return True
        time.sleep(0.1)
    return False
