"""Wall-clock pacing of a periodic loop (sleep then spin), with wake-up error and missed-cycle accounting.

The pacer sleeps until shortly before each deadline and spins the rest of
the way, recording how late every wake-up was. A wake-up a whole period or more late
counts the cycles it skipped as missed: an overrun is counted, never absorbed.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from testbed.errors import ControllerError


@dataclass(frozen=True)
class PacingStats:
    """Wake-up error and missed cycles of a periodic context.

    Args:
        cycles: cycles run.
        missed_cycles: cycles skipped because a wake-up came a period or more late.
        wake_error_us_p50, wake_error_us_p99, wake_error_us_max: lateness of wake-ups (µs).
    """

    cycles: int
    missed_cycles: int
    wake_error_us_p50: float
    wake_error_us_p99: float
    wake_error_us_max: float

    @property
    def missed_cycles_pct(self) -> float:
        """Missed cycles as a percentage of all scheduled cycles."""
        total = self.cycles + self.missed_cycles
        return 100.0 * self.missed_cycles / total if total else 0.0


def request_realtime_priority(priority: int = 10) -> bool:
    """Ask the OS to schedule this process first-in-first-out at ``priority`` (Linux SCHED_FIFO).

    Preemption by other processes is what causes the rare multi-millisecond stalls of a
    wall-clock loop on a shared machine; a real-time policy removes most of them. Returns
    False (and changes nothing) where the OS or the process's privileges refuse it.
    """
    setter = getattr(os, "sched_setscheduler", None)
    if setter is None:
        return False
    try:
        setter(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, ValueError):
        return False
    return True


def current_scheduler() -> str:
    """Name of this process's scheduling policy (``SCHED_FIFO``, ``SCHED_OTHER``, ...)."""
    getter = getattr(os, "sched_getscheduler", None)
    if getter is None:
        return "unknown"
    policy = getter(0)
    names = {getattr(os, n): n for n in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE")
             if hasattr(os, n)}
    return names.get(policy, str(policy))


class Pacer:
    """Wall-clock pacing at a fixed period with a sleep-then-spin wait.

    Args:
        period_s: cycle period (default 1 ms).
        spin_s: the last part of each wait is spent spinning instead of sleeping, since
            ``time.sleep`` wakes up late by tens of µs.
        max_samples: wake errors kept for percentiles (a ring buffer beyond that).
        clock: monotonic clock in seconds.
        sleep: how to sleep (injectable for tests).
    """

    def __init__(
        self,
        period_s: float = 0.001,
        *,
        spin_s: float = 0.0002,
        max_samples: int = 1 << 20,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (math.isfinite(period_s) and period_s > 0):
            raise ControllerError(f"Pacer: period_s must be a finite number > 0, got {period_s!r}")
        if not (math.isfinite(spin_s) and spin_s >= 0):
            raise ControllerError(f"Pacer: spin_s must be a finite number >= 0, got {spin_s!r}")
        self.period_s = float(period_s)
        self.spin_s = float(spin_s)
        self._clock = clock
        self._sleep = sleep
        self._errors = np.zeros(int(max_samples))
        self._n = 0
        self._missed = 0
        self._next: float | None = None

    def start(self) -> float:
        """Start the schedule now; the first deadline is one period away. Returns the start time."""
        now = self._clock()
        self._next = now + self.period_s
        self._n = 0
        self._missed = 0
        return now

    def wait(self) -> float:
        """Wait for the next deadline and return it (clock seconds); counts late wake-ups."""
        deadline = self._next if self._next is not None else self.start() + self.period_s
        clock = self._clock
        now = clock()
        sleep_s = deadline - now - self.spin_s
        if sleep_s > 0:
            self._sleep(sleep_s)
        now = clock()
        while now < deadline:
            now = clock()
        late = now - deadline
        self._errors[self._n % len(self._errors)] = late
        self._n += 1
        skipped = int(late // self.period_s)
        if skipped:
            # the cycles whose deadlines already passed are lost: count them, keep the grid
            self._missed += skipped
            deadline += skipped * self.period_s
        self._next = deadline + self.period_s
        return deadline

    def stats(self) -> PacingStats:
        """Percentiles of wake-up error (µs) and missed cycles so far."""
        kept = self._errors[: min(self._n, len(self._errors))] * 1e6
        if kept.size == 0:
            return PacingStats(0, self._missed, 0.0, 0.0, 0.0)
        p50, p99 = np.percentile(kept, [50, 99])
        return PacingStats(self._n, self._missed, float(p50), float(p99), float(kept.max()))

