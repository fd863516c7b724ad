"""Control-loop figures: vectorized tick vs a per-robot Python loop, and 1 kHz real-time pacing.

Prints one JSON object. The real-time run is done twice: ``realtime`` under the normal
scheduler, ``realtime_fifo`` under SCHED_FIFO when the OS allows it (its ``scheduler``
field says whether it did). The headline ``wake_error_us`` and ``missed_cycles_pct`` come
from the FIFO run when granted, else from the normal one (``headline_scheduler``).

Two baselines, each timed over the same ticks and repetitions as the vectorized loop:
``per_robot_loop`` runs the very same numpy update one robot at a time (one single-robot
ControlLoop per robot, ticked in a Python loop), which mostly measures numpy's cost per call;
``python_floats`` is what a careful engineer writes without numpy: plain floats per joint,
with the same position/velocity/acceleration limiting law, the same following-error and
stream-timeout checks, the same streamed-target interpolation, and the loop's short path (while no joint
can come within its braking distance of a limit, the limit ahead is v_max alone). The benchmark first checks
that it computes the vectorized loop's set-points (``python_floats_max_diff``, rounding only). ``ratio_256``
is taken against the faster of the two baselines (``ratio_256_baseline`` names it).
``vectorized_256_tcp_limited_us``: the same load with every robot's TCP speed limited.
``vectorized_1x6_240hz_tick_us``: one 6-joint robot ticked at 240 Hz, streaming (a physics-speed episode's
per-step control cost), on the vectorized path; ``scalar_1x6_240hz_tick_us``: the same on the scalar path the
loop takes for few robots (the same set-points to the bit; every other figure here is the vectorized path's,
``scalar_max_robots=0``).
"""

from __future__ import annotations

import itertools
import json
import math
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


def _streaming_loop(n_robots: int, tcp_limit_m_s: float | None = None) -> ControlLoop:
    """A loop whose robots all follow a 1 s chunk of moving targets (the busy case).

    With ``tcp_limit_m_s`` every robot's TCP speed is limited (0.3 m of reach per joint).
    """
    loop = ControlLoop([BenchArm(f"arm{i}") for i in range(n_robots)], DT_S, stream_timeout_s=100.0,
                       scalar_max_robots=0)
    loop.reset(np.zeros((n_robots, N_JOINTS)))
    for r, rows in enumerate(_stream_rows(n_robots)):
        loop.submit_chunk(r, rows, 0.0, 0.02)
    if tcp_limit_m_s is not None:
        loop.limit_tcp_speed(tcp_limit_m_s, [np.full(N_JOINTS, 0.3)] * n_robots)
    return loop


class PythonArm:
    """One arm's set-point generator in plain Python floats: the vectorized loop's law, joint by joint.

    Streaming only (the state a busy cell is in); a following error or a stream timeout ends the
    arm's motion like the loop's protective stop would start to (the benchmark never triggers them,
    but the checks run every tick, as in the loop). It takes the loop's short path too: while no
    joint can come within its braking distance from v_max of a limit, the limit ahead is v_max alone
    and no clamp is needed (counted per arm, in ticks, as the loop counts them for all robots).
    """

    def __init__(self, arm: BenchArm, dt_s: float, stream_timeout_s: float) -> None:
        self.dt_s = dt_s
        self.stream_timeout_s = stream_timeout_s
        n = arm.n_joints
        acc = [float(a) * dt_s * dt_s for a in arm.acceleration]
        self.acc_c = acc
        self.neg_acc_c = [-a for a in acc]
        self.vmax_c = [float(v) * dt_s for v in arm.velocity]
        self.k3 = [1.5 * a for a in acc]
        self.k9 = [(1.5 * a) * (1.5 * a) for a in acc]
        self.k2a = [2.0 * a for a in acc]
        self.lower = [float(x) for x in arm.lower]
        self.upper = [float(x) for x in arm.upper]
        self.mid = [0.5 * (lo + hi) for lo, hi in zip(self.lower, self.upper, strict=True)]
        self.half = [0.5 * (hi - lo) for lo, hi in zip(self.lower, self.upper, strict=True)]
        # the loop's short path: the braking distance from v_max, and the ticks no joint can come that near a limit
        self.far_margin = [((v + k3) * (v + k3) - k9) / k2a * (1.0 + 1e-6) + 1e-12
                           for v, k3, k9, k2a in zip(self.vmax_c, self.k3, self.k9, self.k2a, strict=True)]
        self.far_ticks = 0
        self.ferr = [0.5] * n
        self.p = [0.0] * n
        self.step = [0.0] * n
        self.rows: list[list[float]] = [[0.0] * n, [0.0] * n]
        self.slopes: list[list[float]] = [[0.0] * n, [0.0] * n]
        self.t0 = 0.0
        self.inv_dt = 1.0
        self.ff_ratio = 0.0
        self.last_row = 0.0
        self.deadline = math.inf
        self.running = True

    def submit(self, rows: list[list[float]], t0_s: float, dt_s: float) -> None:
        """Stream ``rows`` (``dt_s`` apart from ``t0_s``), clamped into the joint range."""
        lo, hi = self.lower, self.upper
        rows = [[min(max(x, lo[j]), hi[j]) for j, x in enumerate(row)] for row in rows]
        self.rows = [*rows, rows[-1]]
        self.slopes = [[b - a for a, b in zip(r0, r1, strict=True)] for r0, r1 in itertools.pairwise(rows)]
        self.slopes += [[0.0] * len(rows[0])] * 2
        self.t0 = t0_s
        self.inv_dt = 1.0 / dt_s
        self.ff_ratio = self.dt_s / dt_s
        self.last_row = float(len(rows) - 1)
        self.deadline = t0_s + (len(rows) - 1) * dt_s + self.stream_timeout_s

    def tick(self, t_s: float, measured: list[float]) -> list[float]:
        """One cycle: checks, interpolation, limiting law, integration; returns the set-points."""
        p, step = self.p, self.step
        ferr = self.ferr
        for j in range(len(p)):
            if abs(measured[j] - p[j]) > ferr[j]:
                self.running = False  # following error: the loop's protective stop starts here
        if t_s > self.deadline:
            self.deadline = math.inf
            self.running = False  # stream timeout
        u = (t_s - self.t0) * self.inv_dt
        ff_ratio = self.ff_ratio
        if u < 0.0:  # before the first row: hold it, no feed-forward
            u = ff_ratio = 0.0
        u = self.last_row if u > self.last_row else u
        i = math.floor(u)
        frac = u - i
        row, slope = self.rows[i], self.slopes[i]
        acc_c, neg_acc_c, vmax_c = self.acc_c, self.neg_acc_c, self.vmax_c
        k2a, k9, k3 = self.k2a, self.k9, self.k3
        mid, half, lower, upper = self.mid, self.half, self.lower, self.upper
        sqrt, copysign = math.sqrt, math.copysign
        running = self.running
        if self.far_ticks > 0:
            # every joint further from its limits than it brakes from v_max: the limit ahead is v_max alone
            self.far_ticks -= 1
            for j in range(len(p)):
                pj = p[j]
                ff = slope[j] * ff_ratio
                e = slope[j] * frac + row[j] - pj - ff
                ae = abs(e)
                a = acc_c[j]
                w = sqrt(ae * k2a[j] + k9[j]) - k3[j]
                small = ae if ae < a else a
                w = copysign(w if w > small else small, e) + ff
                v = vmax_c[j]
                vdes = v if w > v else (-v if w < -v else w)
                change = vdes - step[j]
                change = change if change < a else a
                change = change if change > neg_acc_c[j] else neg_acc_c[j]
                s = step[j] + change if running else 0.0
                step[j] = s
                p[j] = pj + s
            return p
        far_margin = self.far_margin
        far_ticks = math.inf
        for j in range(len(p)):
            pj = p[j]
            ff = slope[j] * ff_ratio
            e = slope[j] * frac + row[j] - pj - ff
            ae = abs(e)
            a = acc_c[j]
            # a correction towards the target that still brakes in time, exactly onto it when a cycle suffices
            w = sqrt(ae * k2a[j] + k9[j]) - k3[j]
            small = ae if ae < a else a
            w = copysign(w if w > small else small, e) + ff
            # never faster than v_max, nor than what still stops before the joint limit ahead
            d = abs(copysign(half[j], w) + mid[j] - pj)
            lim = sqrt(d * k2a[j] + k9[j]) - k3[j]
            small = d if d < a else a
            lim = lim if lim > small else small
            lim = lim if lim < vmax_c[j] else vmax_c[j]
            aw = abs(w)
            vdes = copysign(aw if aw < lim else lim, w)
            # ticks until this joint might come within its braking distance (or a step) of a limit
            speed = abs(step[j])
            speed = speed if speed > vmax_c[j] else vmax_c[j]
            margin = far_margin[j] if far_margin[j] > speed else speed
            ticks = (half[j] - abs(pj - mid[j]) - margin) / speed
            far_ticks = ticks if ticks < far_ticks else far_ticks
            change = vdes - step[j]
            change = change if change < a else a
            change = change if change > neg_acc_c[j] else neg_acc_c[j]
            s = step[j] + change if running else 0.0
            step[j] = s
            pj += s
            pj = pj if pj < upper[j] else upper[j]
            p[j] = pj if pj > lower[j] else lower[j]
        self.far_ticks = int(min(far_ticks, 1e6)) if far_ticks >= 1.0 else 0
        return p


def _stream_rows(n_robots: int) -> list[np.ndarray]:
    """Per robot, the 1 s chunk of moving targets (rows 0.02 s apart) every benchmark loop follows."""
    phase = np.linspace(0.0, 1.0, n_robots)
    t = np.arange(0.0, 1.0, 0.02)
    return [0.8 * np.sin(2 * np.pi * (t[:, None] + phase[r])) * np.ones(N_JOINTS) for r in range(n_robots)]


def _python_arms(n_robots: int) -> list[PythonArm]:
    arms = [PythonArm(BenchArm(f"arm{i}"), DT_S, stream_timeout_s=100.0) for i in range(n_robots)]
    for arm, rows in zip(arms, _stream_rows(n_robots), strict=True):
        arm.submit(rows.tolist(), 0.0, 0.02)
    return arms


def _python_floats_max_diff(n_robots: int, n_ticks: int) -> float:
    """Largest |set-point difference| between the plain-Python arms and the vectorized loop over ``n_ticks``."""
    loop = _streaming_loop(n_robots)
    arms = _python_arms(n_robots)
    measured = np.zeros((n_robots, N_JOINTS))
    meas_py = [[0.0] * N_JOINTS for _ in range(n_robots)]
    worst = 0.0
    for k in range(n_ticks):
        t = (k % 900) * DT_S
        measured[:] = loop.tick(t, measured)
        meas_py = [list(arm.tick(t, meas)) for arm, meas in zip(arms, meas_py, strict=True)]
        worst = max(worst, float(np.max(np.abs(np.array(meas_py) - measured))))
    return worst


def _time_python_floats(n_robots: int, n_ticks: int, repeats: int) -> float:
    arms = _python_arms(n_robots)
    measured = [[0.0] * N_JOINTS for _ in range(n_robots)]
    best = float("inf")
    k = 0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n_ticks):
            t = (k % 900) * DT_S
            for r, arm in enumerate(arms):
                measured[r][:] = arm.tick(t, measured[r])
            k += 1
        best = min(best, (time.perf_counter() - start) / n_ticks)
    return best * 1e6


def _time_vectorized(n_robots: int, n_ticks: int, repeats: int, tcp_limit_m_s: float | None = None) -> float:
    return _best_tick_us(_streaming_loop(n_robots, tcp_limit_m_s), DT_S, 900, n_ticks, repeats)


def _best_tick_us(loop: ControlLoop, dt_s: float, wrap: int, n_ticks: int, repeats: int) -> float:
    """The loop's µs per tick in the best of ``repeats`` runs of ``n_ticks``; time runs over ``wrap`` ticks of
    its streamed chunk and starts over, and each tick measures the set-points it gave."""
    measured = np.zeros(loop.setpoint.shape)
    best = float("inf")
    k = 0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n_ticks):
            measured[:] = loop.tick((k % wrap) * dt_s, measured)
            k += 1
        best = min(best, (time.perf_counter() - start) / n_ticks)
    return best * 1e6


def _time_one_robot_240hz(n_joints: int, n_ticks: int, repeats: int, scalar: bool = False) -> float:
    """One robot of ``n_joints`` at 240 Hz (a physics-speed episode: one tick per simulation step), streaming;
    on the loop's scalar path or (default) its vectorized one."""
    arm = BenchArm("arm")
    arm.n_joints, arm.joint_types = n_joints, ("revolute",) * n_joints
    for field in ("lower", "upper", "velocity", "acceleration", "jerk"):
        setattr(arm, field, getattr(arm, field)[:n_joints])
    dt_s = 1.0 / 240.0
    loop = ControlLoop([arm], dt_s, stream_timeout_s=100.0, scalar_max_robots=1 if scalar else 0)
    loop.reset(np.zeros((1, n_joints)))
    loop.submit_chunk(0, _stream_rows(1)[0][:, :n_joints], 0.0, 0.02)
    return _best_tick_us(loop, dt_s, 200, n_ticks, repeats)


def _time_per_robot(n_robots: int, n_ticks: int, repeats: int) -> float:
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
    # (ticks, best of) per robot count, the same for the vectorized loop and both baselines; short
    # repetitions, so that on a busy machine the slow baselines find undisturbed windows as often as
    # the vectorized loop does (long ones would flatter the ratio)
    plan = {1: (100, 40), 16: (100, 40), 256: (40, 50)}
    max_diff = _python_floats_max_diff(16, 1800)
    if max_diff > 1e-9:  # the loop computes its targets as base + slope * t, the baseline row by row: rounding only
        raise RuntimeError(f"the plain-Python baseline does not compute the loop's set-points (max diff {max_diff})")
    vec = {n: _time_vectorized(n, *plan[n]) for n in plan}
    # every robot TCP-limited: a limit it never reaches (the check alone), and one that holds every robot
    tcp_limited = {"never_reached": _time_vectorized(256, *plan[256], tcp_limit_m_s=1e3),
                   "all_held": _time_vectorized(256, *plan[256], tcp_limit_m_s=0.25)}
    one_robot_240hz = _time_one_robot_240hz(6, *plan[1])
    one_robot_240hz_scalar = _time_one_robot_240hz(6, *plan[1], scalar=True)
    loop_us = {n: _time_per_robot(n, *plan[n]) for n in plan}
    py_us = {n: _time_python_floats(n, *plan[n]) for n in plan}
    baseline = "python_floats" if py_us[256] <= loop_us[256] else "per_robot_loop"
    baseline_256 = min(py_us[256], loop_us[256])
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
        "python_floats_tick_us": {str(n): round(v, 2) for n, v in py_us.items()},
        "python_floats_max_diff": max_diff,
        "ticks_and_repeats": {str(n): list(v) for n, v in plan.items()},
        # against the faster baseline: a figure that flatters the vectorized loop would be a defect
        "ratio_256": round(baseline_256 / vec[256], 1),
        "ratio_256_baseline": baseline,
        "ratio_256_vs_per_robot_loop": round(loop_us[256] / vec[256], 1),
        "ratio_256_vs_python_floats": round(py_us[256] / vec[256], 1),
        "vectorized_256_us": round(vec[256], 2),
        "vectorized_256_tcp_limited_us": {k: round(v, 2) for k, v in tcp_limited.items()},
        "vectorized_1x6_240hz_tick_us": round(one_robot_240hz, 2),
        "scalar_1x6_240hz_tick_us": round(one_robot_240hz_scalar, 2),
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
