"""Control-loop figures: vectorized tick vs a per-robot Python loop, and 1 kHz real-time pacing.

Prints one JSON object. The real-time run is done twice: ``realtime`` under the normal
scheduler, ``realtime_fifo`` under SCHED_FIFO when the OS allows it (its ``scheduler``
field says whether it did). The headline ``wake_error_us`` and ``missed_cycles_pct`` come
from the FIFO run when granted, else from the normal one (``headline_scheduler``).

The per-robot baseline runs the very same update one robot at a time (one single-robot
ControlLoop per robot, ticked in a Python loop), which is what a non-vectorized design pays.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from dataclasses import dataclass

import numpy as np

from testbed.control import ControlLoop
from testbed.control.pacing import Pacer, current_scheduler, request_realtime_priority

DT_S = 0.001
N_JOINTS = 7


@dataclass
class BenchArm:
    """A 7-joint arm description with the fields the control loop reads."""

    name: str
    n_joints: int = N_JOINTS
    joint_types: tuple[str, ...] = ("revolute",) * N_JOINTS

    def __post_init__(self) -> None:
        self.lower = np.full(N_JOINTS, -3.0)
        self.upper = np.full(N_JOINTS, 3.0)
        self.velocity = np.linspace(2.0, 4.0, N_JOINTS)
        self.acceleration = np.linspace(10.0, 20.0, N_JOINTS)
        self.jerk = self.acceleration * 20.0


def _streaming_loop(n_robots: int) -> ControlLoop:
    """A loop whose robots all follow a 1 s chunk of moving targets (the busy case)."""
    loop = ControlLoop([BenchArm(f"arm{i}") for i in range(n_robots)], DT_S, stream_timeout_s=100.0)
    loop.reset(np.zeros((n_robots, N_JOINTS)))
    phase = np.linspace(0.0, 1.0, n_robots)
    t = np.arange(0.0, 1.0, 0.02)
    for r in range(n_robots):
        rows = 0.8 * np.sin(2 * np.pi * (t[:, None] + phase[r])) * np.ones(N_JOINTS)
        loop.submit_chunk(r, rows, 0.0, 0.02)
    return loop


def _time_vectorized(n_robots: int, n_ticks: int, repeats: int = 5) -> float:
    loop = _streaming_loop(n_robots)
    measured = np.zeros((n_robots, N_JOINTS))
    best = float("inf")
    k = 0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n_ticks):
            measured[:] = loop.tick((k % 900) * DT_S, measured)
            k += 1
        best = min(best, (time.perf_counter() - start) / n_ticks)
    return best * 1e6


def _time_per_robot(n_robots: int, n_ticks: int, repeats: int = 3) -> float:
    loops = [_streaming_loop(1) for _ in range(n_robots)]
    measured = [np.zeros((1, N_JOINTS)) for _ in range(n_robots)]
    best = float("inf")
    k = 0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n_ticks):
            t = (k % 900) * DT_S
            for loop, meas in zip(loops, measured, strict=True):
                meas[:] = loop.tick(t, meas)
            k += 1
        best = min(best, (time.perf_counter() - start) / n_ticks)
    return best * 1e6


def _realtime(n_robots: int, seconds: float, realtime_priority: bool = False) -> dict[str, object]:
    if realtime_priority:
        request_realtime_priority()
    loop = _streaming_loop(n_robots)
    measured = np.zeros((n_robots, N_JOINTS))
    pacer = Pacer(DT_S)
    pacer.start()
    for k in range(round(seconds / DT_S)):
        pacer.wait()
        measured[:] = loop.tick((k % 900) * DT_S, measured)
    stats = pacer.stats()
    return {
        "scheduler": current_scheduler(),
        "robots": n_robots,
        "seconds": seconds,
        "cycles": stats.cycles,
        "wake_error_us": {
            "p50": round(stats.wake_error_us_p50, 2),
            "p99": round(stats.wake_error_us_p99, 2),
            "max": round(stats.wake_error_us_max, 2),
        },
        "missed_cycles": stats.missed_cycles,
        "missed_cycles_pct": round(stats.missed_cycles_pct, 4),
    }


def main() -> int:
    """Measure and print the JSON figures."""
    vec = {n: _time_vectorized(n, 2000) for n in (1, 16, 256)}
    loop_us = {n: _time_per_robot(n, 2000 if n < 256 else 200) for n in (1, 16, 256)}
    rt = _realtime(16, 10.0)
    # the same run under SCHED_FIFO, in a child process so this one keeps its normal policy
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        rt_fifo = pool.apply(_realtime, (16, 10.0, True))
    headline = rt_fifo if rt_fifo["scheduler"] == "SCHED_FIFO" else rt
    out = {
        "benchmark": "control_loop",
        "joints": N_JOINTS,
        "cycle_ms": DT_S * 1e3,
        "vectorized_tick_us": {str(n): round(v, 2) for n, v in vec.items()},
        "per_robot_loop_tick_us": {str(n): round(v, 2) for n, v in loop_us.items()},
        "ratio_256": round(loop_us[256] / vec[256], 1),
        "vectorized_256_us": round(vec[256], 2),
        "targets": {"ratio_256_min": 50, "vectorized_256_us_max": 50, "wake_p99_us_max": 50,
                    "missed_cycles_pct_max": 0.01},
        "realtime": rt,
        "realtime_fifo": rt_fifo,
        # headline: the configuration a realtime run uses (SCHED_FIFO when the OS grants it)
        "headline_scheduler": headline["scheduler"],
        "wake_error_us": headline["wake_error_us"],
        "missed_cycles_pct": headline["missed_cycles_pct"],
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
