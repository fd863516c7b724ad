"""The scalar tick (few robots) computes the vectorized tick's set-points, steps and events to the bit.

Two loops over the same robots, one always vectorized (``scalar_max_robots=0``), are driven through the same
long random sequence of chunks (ahead, late, out of range, non-finite, ending), stops, faults, resets, holds,
speed-scale changes, TCP limits and narrowing, stream gaps and measurements (good, off, non-finite, none); after
every call both must agree exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from control_fakes import arm7, scara4

from testbed.control import ControlLoop
from testbed.control.lifecycle import LifecycleState
from testbed.robots import load_robot

DT = 1.0 / 240.0


def _same(a: ControlLoop, b: ControlLoop, where: str) -> None:
    assert a.setpoint.tobytes() == b.setpoint.tobytes(), where
    assert a._step.tobytes() == b._step.tobytes(), where
    for name in ("_seg_slope", "_seg_base", "_seg_ff", "_buf", "_slope", "_t0", "_inv_dt", "_row_dt", "_ff_col",
                 "_last_row", "_deadline", "_streaming"):  # the queued rows and the segment both look up
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), (where, name)
    far = ("_seg_from", "_seg_until", "_far_ticks", "_far_wait", "_far_backoff", "_far_parked")
    assert repr([getattr(a, k) for k in far]) == repr([getattr(b, k) for k in far]), where
    assert a.setpoint_vel.tobytes() == b.setpoint_vel.tobytes(), where
    assert [a.state(r) for r in range(a.n_robots)] == [b.state(r) for r in range(b.n_robots)], where
    assert repr(a.drain_events()) == repr(b.drain_events()), where


def _drive(models: list, seed: int, ticks: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    scalar = ControlLoop(models, DT, stream_timeout_s=0.2)
    vector = ControlLoop(models, DT, stream_timeout_s=0.2, scalar_max_robots=0)
    loops = (scalar, vector)
    assert scalar._scalar and not vector._scalar
    counts = {"scalar": 0, "near": 0, "far": 0, "stops": 0, "faults": 0, "tcp": 0}
    original = scalar._tick_scalar

    def counted(t_s: float, measured: np.ndarray | None) -> np.ndarray:
        counts["scalar"] += 1
        counts["far" if scalar._far_ticks > 0 else "near"] += 1
        return original(t_s, measured)

    scalar._tick_scalar = counted
    lo, hi, _, _ = scalar.limits
    mask = scalar.joint_mask
    home = np.where(mask, (lo + hi) / 2, 0.0)
    for loop in loops:
        loop.reset(home)
    reach = [np.abs(rng.uniform(0.05, 0.6, m.n_joints)) for m in models]
    t = 0.0
    chunk_dt = 1.0 / 20.0
    for k in range(ticks):
        t = k * DT
        if rng.random() < 0.02:  # a chunk: usually near now, sometimes ahead or late; near the limits often
            r = int(rng.integers(len(models)))
            n = models[r].n_joints
            rows = int(rng.integers(1, 15))
            lo_r, hi_r = lo[r, :n], hi[r, :n]
            centre = rng.uniform(lo_r, hi_r) if rng.random() < 0.7 else np.where(rng.random(n) < 0.5, lo_r, hi_r)
            walk = np.cumsum(rng.normal(0, float(rng.choice([0.15, 0.01])), (rows, n)), axis=0)
            targets = centre + walk
            if rng.random() < 0.3:  # parked exactly: on a joint limit, at 0 (a limit of the prismatic joint), or -0
                exact = rng.choice([lo_r, hi_r, np.zeros(n), np.full(n, -0.0)])
                targets = np.repeat(exact[None, :], rows, axis=0)
            if rng.random() < 0.05:
                targets[int(rng.integers(rows)), int(rng.integers(n))] = math.nan
            t0 = t + float(rng.choice([0.0, DT, chunk_dt, 0.3, -0.1]))
            dt_rows = float(rng.choice([chunk_dt, 0.01, 0.1]))
            hold_after = rng.random() < 0.1
            for loop in loops:
                loop.submit_chunk(r, targets, t0, dt_rows, hold_after=hold_after)
            _same(scalar, vector, f"submit {k}")
        event = rng.random()
        r = int(rng.integers(len(models)))
        if event < 0.002:
            for loop in loops:
                loop.protective_stop(r, "test")
            counts["stops"] += 1
        elif event < 0.003:
            for loop in loops:
                loop.emergency_stop(r, "test")
        elif event < 0.004:
            for loop in loops:
                loop.fault(r, "test")
            counts["faults"] += 1
        elif event < 0.010:
            start = np.where(mask, rng.uniform(lo, hi), 0.0) if rng.random() < 0.5 else scalar.setpoint.copy()
            if rng.random() < 0.3:  # some joints exactly at -0.0 (a signed zero meets 0.0 limits and targets)
                start = np.where(mask & (lo <= 0) & (rng.random(mask.shape) < 0.5), -0.0, start)
            for loop in loops:
                loop.reset(start)
        elif event < 0.012:
            for loop in loops:
                loop.hold(r)
        elif event < 0.015:
            scale = float(rng.choice([1.0, 0.5, 0.25, 0.8]))
            for loop in loops:
                loop.speed_scale = scale
        elif event < 0.0165:
            limits = [float(rng.choice([0.2, 0.5, math.inf])) for _ in models]
            for loop in loops:
                loop.limit_tcp_speed(limits, reach)
            counts["tcp"] += 1
        elif event < 0.019:
            narrowed = reach[r] * rng.uniform(0.2, 1.0, models[r].n_joints)
            for loop in loops:
                loop.narrow_tcp_reach(r, narrowed)
        elif event < 0.03:
            for loop in loops:
                loop.limit_tcp_speed(math.inf, reach)  # back to unlimited
        # measurements: mostly near the set-point, sometimes off (following error), non-finite, or none
        m = rng.random()
        if m < 0.05:
            measured = None
        else:
            measured = scalar.setpoint + np.where(mask, rng.normal(0, 0.01, mask.shape), 0.0)
            if m < 0.052:
                measured[r, int(rng.integers(models[r].n_joints))] += 1.0
            elif m < 0.053:
                measured[r, 0] = math.nan
            elif m < 0.06:
                measured = measured.copy()
                measured[~mask] = 0.0
        outs = [loop.tick(t, None if measured is None else measured.copy()) for loop in loops]
        assert outs[0].tobytes() == outs[1].tobytes(), f"tick {k}"
        _same(scalar, vector, f"tick {k}")
        if rng.random() < 0.003 and any(scalar.state(i) is not LifecycleState.ACTIVE for i in range(len(models))):
            for loop in loops:
                loop.reset(scalar.setpoint.copy())
    return counts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scalar_tick_equals_vectorized_for_two_robots_with_padding(seed: int) -> None:
    counts = _drive([arm7(), scara4()], seed, 12_000)
    # every kind of tick was taken by the scalar path, and the rare branches happened
    assert counts["near"] > 500 and counts["far"] > 500, counts
    assert counts["stops"] and counts["faults"] and counts["tcp"], counts


def test_scalar_tick_equals_vectorized_for_one_gp7() -> None:
    counts = _drive([load_robot("gp7")], 5, 12_000)
    assert counts["near"] > 500 and counts["far"] > 500, counts


def test_numpy_minimum_and_maximum_return_the_second_operand_on_a_tie() -> None:
    """The scalar tick writes min(a, b) as ``a if a < b else b`` (max alike): numpy's choice on -0.0 against 0.0."""
    for n in (1, 4, 6, 7, 14):
        for f, a, b in ((np.minimum, 0.0, -0.0), (np.minimum, -0.0, 0.0), (np.maximum, 0.0, -0.0),
                        (np.maximum, -0.0, 0.0)):
            x, y, out = np.full((1, n), a), np.full((1, n), b), np.empty((1, n))
            f(x, y, out=out)
            assert np.all(np.signbit(out) == np.signbit(b)), (f, a, b, n)
            assert math.copysign(1.0, a if (a < b if f is np.minimum else a > b) else b) == math.copysign(1.0, b)


def test_scalar_far_count_equals_vectorized_on_random_states() -> None:
    """The count of ticks far from every limit, from states built to sit near limits and parked on targets."""
    rng = np.random.default_rng(11)
    models = [arm7(), scara4()]
    loop = ControlLoop(models, DT, scalar_max_robots=0)
    lo, hi, _, _ = loop.limits
    mask = loop.joint_mask
    seen = {"far": 0, "near": 0, "parked": 0}
    for _ in range(3000):
        if rng.random() < 0.1:
            loop.speed_scale = float(rng.choice([1.0, 0.5, 0.2]))
        consts = loop._scalar_constants()
        assert consts
        p = np.where(mask, rng.uniform(lo, hi), 0.0)
        if rng.random() < 0.5:  # close to a limit
            p = np.where(rng.random(mask.shape) < 0.5, np.where(rng.random(mask.shape) < 0.5, lo + 1e-3, hi - 1e-3), p)
        p = np.where(mask, p, 0.0)
        step = rng.normal(0, 0.01, mask.shape) * (rng.random(mask.shape) < 0.5)
        slope = rng.normal(0, 0.1, mask.shape) * (rng.random(mask.shape) < 0.5)
        base = np.where(rng.random(mask.shape) < 0.6, p, p + rng.normal(0, 0.1, mask.shape))
        results = []
        for scalar in (False, True):
            loop._p[:], loop._step[:], loop._seg_slope[:], loop._seg_base[:] = p, step, slope, base
            loop._far_ticks = loop._far_wait = 0
            loop._far_backoff = int(rng.integers(1, 64)) if not results else results[0][4]
            backoff = loop._far_backoff
            if scalar:
                seg = (slope.ravel().tolist(), base.ravel().tolist(), [0.0] * slope.size)
                loop._count_far_ticks_scalar(p.ravel().tolist(), step.ravel().tolist(), seg)
            else:
                loop._count_far_ticks()
            results.append((loop._far_ticks, loop._far_wait, loop._far_backoff, loop._far_parked, backoff))
        assert results[0] == results[1]
        seen["far" if results[0][0] else "near"] += 1
        seen["parked"] += results[0][3]
    assert min(seen.values()) > 50, seen
