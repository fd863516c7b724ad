"""One GP7's control tick at 240 Hz, streamed like the expert streams it, in its moving and its holding ticks.

Prints one JSON object. The stream: 10-row chunks 1/20 s apart, a new one every 12 ticks, starting at the tick's
time; the arm moves to a new pose (a 0.5 s ramp), holds it for 1 s (chunks of constant rows, as the expert sends
while it waits), and so on. Each tick is followed by a read of ``setpoint_vel`` (as the run loop does) and timed
in thread CPU time (robust to other load on the machine; each timer read adds a fraction of a µs). A tick counts as
holding when it left ``setpoint_version`` alone (set-points and velocities unchanged), else as moving.

``with_fast_path`` is the loop as shipped; ``without_fast_path`` the same loop with its hold fast path switched off
(every scalar tick runs the whole law), timed in turns in the same run over the same ticks: ``ratio_holding`` is
the holding ticks' cost without over with. Both compute the same set-points to the bit (checked here every tick).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

from testbed.control import ControlLoop
from testbed.robots import load_robot

DT = 1.0 / 240.0
ROW_DT = 1.0 / 20.0


class NoFastPath(ControlLoop):
    """The loop with its hold fast path switched off."""

    _held = property(lambda self: False, lambda self, value: None)


def _run(cls: type[ControlLoop], seconds: float) -> tuple[dict[str, list[float]], list[bytes]]:
    """Per phase, thread-CPU µs of each tick (+ ``setpoint_vel``); and the set-points of every tick."""
    rng = np.random.default_rng(0)
    loop = cls([load_robot("gp7")], DT)
    lo, hi, _, _ = loop.limits
    lo, hi = lo[0, :6], hi[0, :6]
    pose = (lo + hi) / 2
    loop.reset(pose[None, :])
    times: dict[str, list[float]] = {"moving": [], "holding": []}
    setpoints = []
    clock = time.thread_time_ns
    goal, move_from, phase_start = pose, pose, 0
    for k in range(round(seconds / DT)):
        t = k * DT
        if k % 12 == 0:
            if k - phase_start >= 360:  # 0.5 s ramp + 1 s hold: a new pose
                move_from, goal, phase_start = goal, np.clip(goal + rng.normal(0, 0.3, 6), lo, hi), k
            s = (k - phase_start) / 120 + np.arange(10) * ROW_DT / 0.5  # ramp progress of each row
            rows = move_from + (goal - move_from) * np.clip(s, 0.0, 1.0)[:, None]
            loop.submit_chunk(0, rows, t, ROW_DT)
        measured = loop.setpoint + rng.normal(0, 1e-4, (1, 6))
        version = loop.setpoint_version
        start = clock()
        sp = loop.tick(t, measured)
        loop.setpoint_vel  # noqa: B018 - read every step by the run loop
        took = clock() - start
        times["holding" if loop.setpoint_version == version else "moving"].append(took / 1000)
        setpoints.append(sp.tobytes())
    return times, setpoints


def main() -> int:
    """Measure and print the JSON figures."""
    rounds, seconds = 5, 20.0
    acc: dict[str, dict[str, list[float]]] = {"with_fast_path": {}, "without_fast_path": {}}
    reference = None
    for _ in range(rounds):
        for name, cls in (("with_fast_path", ControlLoop), ("without_fast_path", NoFastPath)):
            times, setpoints = _run(cls, seconds)
            if reference is None:
                reference = setpoints
            elif setpoints != reference:
                raise RuntimeError(f"{name}: set-points differ from the first run's")
            for phase, values in times.items():
                acc[name].setdefault(phase, []).append(statistics.median(values))
                acc[name].setdefault(phase + "_mean", []).append(statistics.fmean(values))
                acc[name].setdefault(phase + "_ticks", []).append(len(values))
    out: dict[str, object] = {"benchmark": "control_hold", "robot": "gp7", "tick_hz": 240, "rounds": rounds,
                              "seconds_per_round": seconds}
    for name, figures in acc.items():  # best round of each (least disturbed)
        out[name] = {
            "moving_tick_us_p50": round(min(figures["moving"]), 2),
            "moving_tick_us_mean": round(min(figures["moving_mean"]), 2),
            "holding_tick_us_p50": round(min(figures["holding"]), 2),
            "holding_tick_us_mean": round(min(figures["holding_mean"]), 2),
            "holding_share": round(figures["holding_ticks"][0]
                                   / (figures["holding_ticks"][0] + figures["moving_ticks"][0]), 3),
        }
    with_, without = out["with_fast_path"], out["without_fast_path"]
    out["ratio_holding"] = round(without["holding_tick_us_mean"] / with_["holding_tick_us_mean"], 2)
    out["ratio_moving"] = round(without["moving_tick_us_mean"] / with_["moving_tick_us_mean"], 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
