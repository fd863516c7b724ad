"""Test helpers: waiting for a condition, and whether a process has ended (zombies count as ended)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def process_ended(pid: int) -> bool:
    """True once ``pid`` is gone or a zombie (it has ended; reaping it is not the child's doing)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` every 50 ms until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
