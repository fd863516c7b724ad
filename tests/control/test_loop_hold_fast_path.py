"""The scalar tick's hold fast path changes nothing: set-points, steps, velocities, events and counters to the bit.

Three loops over the same robots are driven through the same long random sequence: the scalar tick with its hold
fast path, the scalar tick with the fast path switched off (``_held`` never set), and the vectorized tick. The
sequence is built like an expert's stream (10-row chunks 1/20 s apart, a new one every 12 ticks at 240 Hz) with long
holds (constant chunks, ``hold``, ``hold_after`` chunks that run out), parked targets on joint limits and at -0.0,
moves, late and missing chunks (stream timeouts), stops, faults, resets, speed-scale changes, TCP limits and
following errors. After every call all three must agree exactly, and ``setpoint_version`` must change whenever the
set-points or their velocities do.
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
ROW_DT = 1.0 / 20.0


class NoFastPath(ControlLoop):
    """The loop with its hold fast path switched off: every scalar tick runs the whole law."""

    _held = property(lambda self: False, lambda self, value: None)


def _same(loops: tuple[ControlLoop, ...], where: str, *, vel: bool) -> str:
    a = loops[0]
    events = repr(a.drain_events())
    for b in loops[1:]:
        assert a.setpoint.tobytes() == b.setpoint.tobytes(), where
        assert a._step.tobytes() == b._step.tobytes(), where
        for name in ("_seg_slope", "_seg_base", "_seg_ff", "_deadline", "_streaming"):
            assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), (where, name)
        far = ("_seg_from", "_seg_until", "_far_ticks", "_far_wait", "_far_backoff", "_far_parked")
        assert repr([getattr(a, k) for k in far]) == repr([getattr(b, k) for k in far]), where
        if vel:
            assert a.setpoint_vel.tobytes() == b.setpoint_vel.tobytes(), where
        assert [a.state(r) for r in range(a.n_robots)] == [b.state(r) for r in range(b.n_robots)], where
        assert a.transition_count == b.transition_count, where
        assert repr(b.drain_events()) == events, where
    return events


def _drive(models: list, seed: int, ticks: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    fast = ControlLoop(models, DT, stream_timeout_s=0.3)
    slow = NoFastPath(models, DT, stream_timeout_s=0.3)
    vector = ControlLoop(models, DT, stream_timeout_s=0.3, scalar_max_robots=0)
    loops = (fast, slow, vector)
    assert fast._scalar and slow._scalar and not vector._scalar
    counts = {"held": 0, "moved": 0, "stops": 0, "faults": 0, "timeouts": 0, "resets": 0}
    lo, hi, _, _ = fast.limits
    mask = fast.joint_mask
    n_robots = len(models)
    home = np.where(mask, (lo + hi) / 2, 0.0)
    for loop in loops:
        loop.reset(home)
    targets = [home[r, : m.n_joints].copy() for r, m in enumerate(models)]
    next_chunk = [0] * n_robots
    reach = [np.full(m.n_joints, 0.4) for m in models]
    last_vel = {id(loop): (loop.setpoint_version, loop.setpoint.tobytes(), loop.setpoint_vel.tobytes())
                for loop in loops}
    for k in range(ticks):
        t = k * DT
        for r, m in enumerate(models):
            if k < next_chunk[r]:
                continue
            n = m.n_joints
            next_chunk[r] = k + 12 if rng.random() < 0.97 else k + int(rng.integers(13, 400))  # some gaps: timeouts
            kind = rng.random()
            if kind < 0.55:  # hold where the last chunk went (the expert waiting): constant rows
                rows = np.repeat(targets[r][None, :], 10, axis=0)
            elif kind < 0.65:  # hold where the set-point is now
                rows = np.repeat(fast.setpoint[r, :n][None, :], 10, axis=0)
            elif kind < 0.72:  # parked exactly on a limit, at 0 or at -0.0
                exact = [lo[r, :n], hi[r, :n], np.zeros(n), np.full(n, -0.0)][int(rng.integers(4))]
                rows = np.repeat(exact[None, :], 10, axis=0)
            else:  # a move: a ramp to a new point, then holding it
                goal = np.clip(targets[r] + rng.normal(0, 0.3, n), lo[r, :n], hi[r, :n])
                ramp = np.minimum(np.arange(1, 11) / float(rng.integers(3, 12)), 1.0)[:, None]
                rows = targets[r] + (goal - targets[r]) * ramp
            targets[r] = rows[-1].copy()
            t0 = t + float(rng.choice([0.0, 0.0, 0.0, -DT, 0.02]))
            hold_after = rng.random() < 0.05
            for loop in loops:
                loop.submit_chunk(r, rows, t0, ROW_DT, hold_after=hold_after)
            _same(loops, f"submit {k}", vel=True)
        event = rng.random()
        r = int(rng.integers(n_robots))
        if event < 0.001:
            for loop in loops:
                loop.protective_stop(r, "test")
            counts["stops"] += 1
        elif event < 0.0015:
            for loop in loops:
                loop.emergency_stop(r, "test")
        elif event < 0.002:
            for loop in loops:
                loop.fault(r, "test")
            counts["faults"] += 1
        elif event < 0.004:
            for loop in loops:
                loop.hold(r)
        elif event < 0.005:
            scale = float(rng.choice([1.0, 0.5, 0.8]))
            for loop in loops:
                loop.speed_scale = scale
        elif event < 0.0055:
            limit = float(rng.choice([0.3, math.inf]))
            for loop in loops:
                loop.limit_tcp_speed(limit, reach)
        elif event < 0.0065:
            for loop in loops:
                loop.limit_tcp_speed(math.inf, reach)
        m = rng.random()
        if m < 0.03:
            measured = None
        else:
            measured = fast.setpoint + np.where(mask, rng.normal(0, 1e-3, mask.shape), 0.0)
            if m < 0.031:
                measured[r, 0] += 1.0  # a following error
            elif m < 0.0315:
                measured[r, 0] = math.nan
        held_before, version_before = fast._held, fast.setpoint_version
        outs = [loop.tick(t, None if measured is None else measured.copy()) for loop in loops]
        assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes(), f"tick {k}"
        vel = rng.random() < 0.7  # read the velocities on most ticks, as a run loop does (they are computed lazily)
        counts["timeouts"] += "stream_timeout" in _same(loops, f"tick {k}", vel=vel)
        for loop in loops:
            version, sp, v = last_vel[id(loop)]
            if loop.setpoint_version == version:  # unchanged count: unchanged set-points and velocities
                assert loop.setpoint.tobytes() == sp and loop.setpoint_vel.tobytes() == v, f"version {k}"
            elif vel:
                last_vel[id(loop)] = (loop.setpoint_version, loop.setpoint.tobytes(), loop.setpoint_vel.tobytes())
        if held_before and fast._held and fast.setpoint_version == version_before:
            counts["held"] += 1
        elif not fast._held:
            counts["moved"] += 1
        stopped = any(fast.state(i) is not LifecycleState.ACTIVE for i in range(n_robots))
        if rng.random() < 0.001 or (stopped and rng.random() < 0.02):
            start = fast.setpoint.copy() if rng.random() < 0.7 else np.where(mask, rng.uniform(lo, hi), 0.0)
            for loop in loops:
                loop.reset(start)
            targets = [start[i, : mm.n_joints].copy() for i, mm in enumerate(models)]
            counts["resets"] += 1
            _same(loops, f"reset {k}", vel=True)
    return counts


@pytest.mark.parametrize("seed", [0, 1])
def test_hold_fast_path_changes_nothing_for_one_gp7(seed: int) -> None:
    counts = _drive([load_robot("gp7")], seed, 15_000)
    # the fast path was taken often, the arm moved often, and the rare branches happened
    assert counts["held"] > 2500 and counts["moved"] > 3000, counts
    assert counts["stops"] and counts["faults"] and counts["resets"] and counts["timeouts"], counts


def test_hold_fast_path_changes_nothing_for_two_robots_with_padding() -> None:
    counts = _drive([arm7(), scara4()], 7, 15_000)
    assert counts["held"] > 800 and counts["moved"] > 3000, counts
    assert counts["stops"] and counts["faults"] and counts["resets"] and counts["timeouts"], counts


def test_setpoint_version_and_velocities_follow_the_steps() -> None:
    """A moving tick changes the count and the velocities; a holding one neither; reset changes the count."""
    loop = ControlLoop([load_robot("gp7")], DT)
    lo, hi, _, _ = loop.limits
    home = np.where(loop.joint_mask, (lo + hi) / 2, 0.0)
    loop.reset(home)
    rows = np.repeat(home[:, :6], 10, axis=0)
    rows[:, 0] += np.linspace(0.0, 0.05, 10)
    loop.submit_chunk(0, rows, 0.0, ROW_DT, hold_after=True)
    seen = []
    for k in range(1, 600):
        version = loop.setpoint_version
        before = loop.setpoint.copy()
        loop.tick(k * DT, loop.setpoint.copy())
        vel = loop.setpoint_vel.copy()
        assert vel.tobytes() == (loop._step * (1.0 / DT)).tobytes()
        if loop.setpoint_version == version:
            assert np.array_equal(before, loop.setpoint) and not vel.any()
        seen.append(loop.setpoint_version != version)
    assert any(seen[:100]) and not any(seen[-300:]), "moves first, then holds at the last row"
    assert loop._held
    version = loop.setpoint_version
    loop.reset(home)
    assert loop.setpoint_version != version and not loop._held
    assert not loop.setpoint_vel.any()


@pytest.mark.parametrize("scalar_max_robots", [2, 0])
def test_segments_after_the_last_row_are_looked_up_once(scalar_max_robots: int) -> None:
    """Past every robot's last row the segments hold for good: looked up once, not every tick (``inf - inf``)."""
    loop = ControlLoop([arm7(), scara4()], DT, scalar_max_robots=scalar_max_robots)
    lo, hi, _, _ = loop.limits
    home = np.where(loop.joint_mask, (lo + hi) / 2, 0.0)
    loop.reset(home)
    for r, n in enumerate((7, 4)):
        loop.submit_chunk(r, np.repeat(home[r : r + 1, :n], 3, axis=0) + 0.01, 0.0, ROW_DT, hold_after=True)
    lookups = []
    for name in ("_select_segments", "_select_segments_scalar"):
        original = getattr(loop, name)

        def counted(t_s: float, _original=original, _name=name) -> None:
            lookups.append((_name, t_s))
            _original(t_s)

        setattr(loop, name, counted)
    for k in range(1, 241):
        loop.tick(k * DT, loop.setpoint.copy())
    # rows at 0, 1/20 and 2/20 s: one look-up per row, then none after the last
    assert len(lookups) == 3, lookups
    assert loop._seg_until == math.inf
    assert np.allclose(loop.setpoint[0, :7], home[0, :7] + 0.01)
    assert np.allclose(loop.setpoint[1, :4], home[1, :4] + 0.01)
