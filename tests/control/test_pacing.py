"""Periodic pacing: wake-up error and missed-cycle accounting, on a fake clock."""

from __future__ import annotations

import pytest

from testbed.control.pacing import Pacer
from testbed.errors import ControllerError


class FakeClock:
    """A clock that moves only when slept on or when work is simulated."""

    def __init__(self, oversleep_s: float = 0.0) -> None:
        self.now = 100.0
        self.oversleep_s = oversleep_s
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += 1e-7  # reading the clock costs a little time, so spinning ends
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s + self.oversleep_s


def test_wake_error_is_small_when_sleep_is_accurate() -> None:
    clock = FakeClock()
    pacer = Pacer(0.001, clock=clock, sleep=clock.sleep)
    pacer.start()
    deadlines = [pacer.wait() for _ in range(100)]
    stats = pacer.stats()
    assert stats.cycles == 100 and stats.missed_cycles == 0
    assert stats.wake_error_us_max < 1.0
    assert deadlines[1] - deadlines[0] == pytest.approx(0.001)


def test_oversleeping_shows_up_as_wake_error() -> None:
    clock = FakeClock(oversleep_s=0.0003)  # sleep wakes 300 us late, more than the 200 us spin
    pacer = Pacer(0.001, spin_s=0.0002, clock=clock, sleep=clock.sleep)
    pacer.start()
    for _ in range(10):
        pacer.wait()
    stats = pacer.stats()
    assert stats.wake_error_us_p50 == pytest.approx(100.0, abs=1.0)
    assert stats.missed_cycles == 0


def test_a_long_stall_counts_the_skipped_cycles_and_keeps_the_grid() -> None:
    clock = FakeClock()
    pacer = Pacer(0.001, clock=clock, sleep=clock.sleep)
    start = pacer.start()
    pacer.wait()
    clock.now += 0.0035  # the cycle's work overran by 3.5 periods
    late_deadline = pacer.wait()
    stats = pacer.stats()
    assert stats.missed_cycles == 2
    assert late_deadline == pytest.approx(start + 0.004)
    assert pacer.wait() == pytest.approx(start + 0.005)
    assert stats.missed_cycles_pct == pytest.approx(100 * 2 / 4)


def test_bad_period_is_refused() -> None:
    with pytest.raises(ControllerError, match="period_s must be a finite number > 0, got 0"):
        Pacer(0)

