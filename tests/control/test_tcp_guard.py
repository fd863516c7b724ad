"""TCP speed supervision and several real robot models in one vectorized loop."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.control import ControlLoop, LifecycleState
from testbed.control.tcp_guard import TcpSpeedGuard
from testbed.robots import load_robot


@pytest.fixture(scope="module")
def models():
    return [load_robot("gp7"), load_robot("scara_t6"), load_robot("sia10f")]


def home(loop: ControlLoop, models) -> np.ndarray:
    q = np.zeros((loop.n_robots, loop.max_joints))
    for i, m in enumerate(models):
        q[i, : m.n_joints] = m.home
    return q


def test_three_models_share_one_loop(models) -> None:
    loop = ControlLoop(models, 0.001)
    assert (loop.n_robots, loop.max_joints) == (3, 7)
    loop.reset(home(loop, models))
    goal = [np.asarray(m.home) + 0.1 * np.sign(np.asarray(m.upper) - np.asarray(m.home)) for m in models]
    for i, g in enumerate(goal):
        loop.submit_chunk(i, g[None], 0.0, 0.01, hold_after=True)
    for k in range(2000):
        loop.tick(k * 0.001, loop.setpoint)
    for i, g in enumerate(goal):
        assert np.allclose(loop.setpoint[i, : len(g)], g, atol=1e-9)
    assert np.all(loop.setpoint[1, 4:] == 0.0)


def test_fast_streamed_motion_is_stopped_by_tcp_guard(models) -> None:
    loop = ControlLoop(models, 0.001)
    loop.reset(home(loop, models))
    guard = TcpSpeedGuard(loop, models, limits_m_s=[0.25, 2.0, 1.0], every_n_ticks=1, hold=False)
    target = np.asarray(models[0].home, float).copy()
    target[0] += 1.5  # swinging the base of an outstretched arm: far beyond 0.25 m/s at the tool
    loop.submit_chunk(0, target[None], 0.0, 0.01, hold_after=True)
    stopped_at = None
    for k in range(1000):
        loop.tick(k * 0.001, loop.setpoint)
        if guard.check() and stopped_at is None:
            stopped_at = k
    assert stopped_at is not None
    assert loop.state(0) is LifecycleState.PROTECTIVE_STOP
    assert loop.state(1) is LifecycleState.ACTIVE and loop.state(2) is LifecycleState.ACTIVE
    (event,) = [e for e in loop.drain_events() if e.kind == "protective_stop"]
    assert event.detail["reason"].startswith("tcp_speed:") and "exceeds the limit 250 mm/s" in event.detail["reason"]
    assert guard.last_speeds_m_s[0] > 0.25


def test_slow_motion_passes_tcp_guard(models) -> None:
    loop = ControlLoop(models, 0.001, speed_scale=0.02)
    loop.reset(home(loop, models))
    guard = TcpSpeedGuard(loop, models, reduced=True)
    target = np.asarray(models[0].home, float).copy()
    target[0] += 0.2
    loop.submit_chunk(0, target[None], 0.0, 0.01, hold_after=True)
    for k in range(500):
        loop.tick(k * 0.001, loop.setpoint)
        assert guard.check() == []
    assert 0 < guard.last_speeds_m_s[0] <= models[0].reduced_tcp_speed_m_s


def test_reset_starts_the_guard_over_as_if_new(models) -> None:
    # a guard reset after some checks behaves, tick for tick, like a guard built at that moment
    def run(loop: ControlLoop, guard: TcpSpeedGuard, ticks: int) -> list[tuple[np.ndarray, np.ndarray]]:
        loop.reset(home(loop, models))
        target = np.asarray(models[0].home, float).copy()
        target[0] += 0.6
        loop.submit_chunk(0, target[None], 0.0, 0.01, hold_after=True)
        seen = []
        for k in range(ticks):
            loop.tick(k * 0.001, loop.setpoint)
            guard.check()
            seen.append((loop.setpoint.copy(), guard.last_speeds_m_s.copy()))
        return seen

    used = ControlLoop(models, 0.001)
    used.reset(home(used, models))
    guard = TcpSpeedGuard(used, models, limits_m_s=[0.3, 2.0, 1.0], every_n_ticks=7)
    run(used, guard, 403)  # an episode: the count ends between checks, the reach narrowed
    used.reset(home(used, models))
    guard.reset()
    assert not guard.last_speeds_m_s.any()
    fresh = ControlLoop(models, 0.001)
    fresh.reset(home(fresh, models))
    new = TcpSpeedGuard(fresh, models, limits_m_s=[0.3, 2.0, 1.0], every_n_ticks=7)
    again, first = run(used, guard, 600), run(fresh, new, 600)
    for (sp_a, v_a), (sp_b, v_b) in zip(again, first, strict=True):
        np.testing.assert_array_equal(sp_a, sp_b)
        np.testing.assert_array_equal(v_a, v_b)
    assert guard.last_speeds_m_s[0] > 0  # it did check
