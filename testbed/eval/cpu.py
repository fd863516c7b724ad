"""CPU seconds of this process (all threads) and of its live child processes (policy servers it spawned)."""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def child_pids(pid: int | None = None) -> list[int]:
    """Direct children of ``pid`` (default: this process), from ``/proc/<pid>/task/*/children``; [] where unreadable."""
    pid = os.getpid() if pid is None else pid
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(x) for x in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return sorted(set(found))


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat`` utime + stime); 0.0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # the command name (field 2) may hold spaces and parentheses: split after its closing parenthesis
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime: fields 14 and 15 of stat


def cpu_seconds() -> dict[int, float]:
    """A CPU reading: ``{0: this process (all threads), child pid: that child's CPU}``.

    Take one at the start and one at the end of an interval and pass both to ``cpu_between``.
    """
    reading = {0: time.process_time()}
    for pid in child_pids():
        reading[pid] = process_cpu_s(pid)
    return reading


def cpu_between(start: dict[int, float], end: dict[int, float]) -> float:
    """CPU seconds spent between two readings by this process and the children alive at the end.

    A child that started during the interval counts from zero; one that ended during it is not counted
    (its last figures are unreadable once it is gone).
    """
    return sum(value - start.get(pid, 0.0) for pid, value in end.items())
