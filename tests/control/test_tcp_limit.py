"""The loop's TCP speed limiter: limited robots held to their limit every tick, the others untouched."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from testbed.control import ControlLoop, KinematicChain, LifecycleState
from testbed.control.tcp_guard import TcpSpeedGuard
from testbed.errors import ControllerError
from testbed.robots import load_robot

DT = 0.004
MODELS = [load_robot("gp7"), load_robot("scara_t6"), load_robot("sia10f")]
CHAINS = [KinematicChain.from_urdf(m.urdf_path, m.tcp_link) for m in MODELS]
REACH = [c.axis_reach_m() for c in CHAINS]
# forward kinematics rounds at ~1e-16 m: a chord over a 4 ms cycle is exact to ~1e-13 m/s
FK_ROUNDING_M_S = 1e-9


def home() -> np.ndarray:
    q = np.zeros((len(MODELS), 7))
    for i, m in enumerate(MODELS):
        q[i, : m.n_joints] = m.home
    return q


def make_loop(limits: list[float] | None = None, **kw: object) -> ControlLoop:
    loop = ControlLoop(MODELS, DT, **kw)  # type: ignore[arg-type]
    loop.reset(home())
    if limits is not None:
        loop.limit_tcp_speed(limits, REACH)
    loop.drain_events()
    return loop


def far_goal(robot: int) -> np.ndarray:
    """A goal that swings the robot's first two joints a long way (far beyond 250 mm/s at full joint speed)."""
    m = MODELS[robot]
    goal = np.asarray(m.home, float).copy()
    goal[0] += 1.0
    goal[1] += 0.4
    return goal


def chord_speeds(history: np.ndarray, robot: int) -> np.ndarray:
    """TCP speed between consecutive set-points of ``robot`` (m/s), by forward kinematics."""
    n = MODELS[robot].n_joints
    tcp = np.array([CHAINS[robot].forward(q[robot, :n])[:3, 3] for q in history])
    return np.linalg.norm(np.diff(tcp, axis=0), axis=1) / DT


def run(loop: ControlLoop, ticks: int, t0: float = 0.0) -> np.ndarray:
    return np.array([loop.tick(t0 + k * DT, loop.setpoint).copy() for k in range(ticks)])


def test_axis_reach_bounds_every_jacobian_column_and_is_exact_for_a_scara() -> None:
    rng = np.random.default_rng(3)
    for model, chain, reach in zip(MODELS, CHAINS, REACH, strict=True):
        for _ in range(200):
            q = model.lower + (model.upper - model.lower) * rng.uniform(0, 1, model.n_joints)
            assert np.all(np.linalg.norm(chain.jacobian(q)[:3], axis=0) <= reach + 1e-12)
    scara = MODELS[1]
    outstretched = np.linalg.norm(CHAINS[1].jacobian(np.zeros(scara.n_joints))[:3], axis=0)
    assert np.allclose(REACH[1], outstretched) and REACH[1][2] == 1.0 and REACH[1][3] == pytest.approx(0, abs=1e-9)


def test_limited_robot_is_held_to_its_limit_and_still_reaches_the_goal() -> None:
    loop = make_loop([0.25, np.inf, np.inf])
    loop.submit_chunk(0, far_goal(0)[None], 0.0, 0.01, hold_after=True)
    history = run(loop, 3000)
    speeds = chord_speeds(history, 0)
    assert speeds.max() <= 0.25
    assert np.allclose(loop.setpoint[0, :6], far_goal(0), atol=1e-9)
    events = [e for e in loop.drain_events() if e.kind == "tcp_speed_limited"]
    assert len(events) == 1  # one move, one engagement (not one event a tick)
    assert events[0].robot == 0 and events[0].detail["limit_m_s"] == 0.25
    assert events[0].detail["commanded_bound_m_s"] > 0.25


def test_robots_without_a_limit_move_exactly_as_in_a_loop_without_any() -> None:
    limited, free = make_loop([0.25, np.inf, np.inf]), make_loop()
    for loop in (limited, free):
        for r in range(3):
            loop.submit_chunk(r, far_goal(r)[None], 0.0, 0.01, hold_after=True)
    a, b = run(limited, 800), run(free, 800)
    assert np.array_equal(a[:, 1:], b[:, 1:])
    assert not np.array_equal(a[:, 0], b[:, 0])


def test_each_held_move_is_one_event_and_an_unheld_move_none() -> None:
    loop = make_loop([0.25, np.inf, np.inf])
    goal = far_goal(0)
    loop.submit_chunk(0, goal[None], 0.0, 0.01, hold_after=True)
    run(loop, 3000)
    small = goal.copy()
    small[5] += 0.01  # a 10 mrad turn of the tool flange: slow at the TCP, never held
    loop.submit_chunk(0, small[None], 12.0, 0.01, hold_after=True)
    run(loop, 500, 12.0)
    loop.submit_chunk(0, np.asarray(MODELS[0].home)[None], 14.0, 0.01, hold_after=True)
    run(loop, 3000, 14.0)
    assert [e.t_s for e in loop.drain_events() if e.kind == "tcp_speed_limited"] == [0.0, 14.0]


def test_joint_limits_still_hold_while_held() -> None:
    loop = make_loop([0.25, 0.25, 0.25])
    for r in range(3):
        loop.submit_chunk(r, far_goal(r)[None], 0.0, 0.01, hold_after=True)
    history = run(loop, 3000)
    _, _, vmax, amax = loop.limits
    vel = np.diff(history, axis=0) / DT
    acc = np.diff(vel, axis=0) / DT
    assert np.all(np.abs(vel) <= vmax * (1 + 1e-9) + 1e-12)
    assert np.all(np.abs(acc) <= amax * (1 + 1e-6) + 1e-6)
    for r in range(3):
        assert chord_speeds(history, r).max() <= 0.25


def test_narrowed_reach_lets_a_folded_arm_move_faster_but_never_above_the_limit() -> None:
    speeds = {}
    for narrowed in (False, True):
        loop = make_loop([0.25, np.inf, np.inf])
        loop.submit_chunk(0, far_goal(0)[None], 0.0, 0.01, hold_after=True)
        history = [loop.setpoint.copy()]
        for k in range(700):  # the narrowed move ends at ~620 ticks, the other at ~1450
            if narrowed and k % 10 == 0:
                loop.narrow_tcp_reach(0, np.linalg.norm(CHAINS[0].jacobian(loop.setpoint[0, :6])[:3], axis=0))
            history.append(loop.tick(k * DT, loop.setpoint).copy())
        speeds[narrowed] = chord_speeds(np.array(history), 0)
    assert speeds[True].max() <= 0.25
    assert speeds[True].max() > 0.2 and speeds[False].max() < 0.75 * speeds[True].max()


def test_a_reset_drops_narrowed_reach() -> None:
    loop = make_loop([0.25, np.inf, np.inf])
    loop.narrow_tcp_reach(0, np.zeros(6))
    loop.reset(home())
    loop.submit_chunk(0, far_goal(0)[None], 0.0, 0.01, hold_after=True)
    history = run(loop, 200)
    reach = REACH[0]
    steps = np.abs(np.diff(history[:, 0, :6], axis=0))
    assert np.all(steps @ reach <= 0.25 * DT)


def test_a_lowered_limit_holds_from_the_next_tick() -> None:
    loop = make_loop()
    loop.submit_chunk(0, far_goal(0)[None], 0.0, 0.01, hold_after=True)
    run(loop, 100)
    loop.limit_tcp_speed([0.1, np.inf, np.inf], REACH)
    history = np.array([loop.setpoint.copy(), *run(loop, 100, 100 * DT)])
    assert chord_speeds(history, 0).max() <= 0.1


def test_guard_that_holds_never_needs_to_stop() -> None:
    loop = make_loop()
    guard = TcpSpeedGuard(loop, MODELS, limits_m_s=[0.25, np.inf, 0.25], every_n_ticks=1)
    for r in range(3):
        loop.submit_chunk(r, far_goal(r)[None], 0.0, 0.01, hold_after=True)
    for k in range(2000):
        loop.tick(k * DT, loop.setpoint)
        assert guard.check() == []
        assert guard.last_speeds_m_s[0] <= 0.25 and guard.last_speeds_m_s[2] <= 0.25
    assert all(loop.state(r) is LifecycleState.ACTIVE for r in range(3))


def test_bad_limits_and_reach_are_refused() -> None:
    loop = make_loop()
    with pytest.raises(ControllerError, match=r"limits must be > 0 \(inf: none\)"):
        loop.limit_tcp_speed([0.25, 0.0, np.inf], REACH)
    with pytest.raises(ControllerError, match=r"need a limit or 3 limits"):
        loop.limit_tcp_speed([0.25, 0.25], REACH)
    with pytest.raises(ControllerError, match=r"robot 1 \(scara_t6\): reach must be 4 finite numbers >= 0"):
        loop.limit_tcp_speed(0.25, [REACH[0], [1.0, 2.0], REACH[2]])
    with pytest.raises(ControllerError, match=r"robot 0 \(gp7\): reach must be 6 finite numbers >= 0"):
        loop.narrow_tcp_reach(0, [np.nan] * 6)


def test_tick_allocates_nothing_while_holding() -> None:
    loop = make_loop([0.25, 0.3, np.inf])
    for r in range(3):
        loop.submit_chunk(r, far_goal(r)[None], 0.0, 0.01, hold_after=True)
    loop.narrow_tcp_reach(0, REACH[0] * 0.5)
    measured = home()
    for k in range(10):  # warm up
        measured[:] = loop.tick(k * DT, measured)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for k in range(10, 1010):
        measured[:] = loop.tick(k * DT, measured)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert grown < 4096


@st.composite
def command(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["chunk", "chunk", "chunk", "ticks", "ticks", "pstop"]))
    robot = draw(st.integers(0, len(MODELS) - 1))
    if kind == "chunk":
        m = MODELS[robot]
        steps = draw(st.integers(1, 5))
        u = np.array(draw(st.lists(st.floats(-0.2, 1.2), min_size=steps * m.n_joints, max_size=steps * m.n_joints)))
        rows = m.lower + (m.upper - m.lower) * u.reshape(steps, m.n_joints)  # a little out of range at times
        return ("chunk", robot, rows, draw(st.floats(-0.05, 0.05)), draw(st.sampled_from([0.004, 0.02, 0.1])),
                draw(st.booleans()))
    if kind == "ticks":
        return ("ticks", draw(st.integers(1, 60)))
    return ("pstop", robot)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    commands=st.lists(command(), min_size=1, max_size=15),
    limits=st.lists(st.one_of(st.just(np.inf), st.floats(0.02, 1.5)), min_size=3, max_size=3),
    every=st.one_of(st.none(), st.integers(1, 30)),
)
def test_set_point_tcp_speed_never_exceeds_the_limit_for_any_stream(
    commands: list[tuple], limits: list[float], every: int | None
) -> None:
    loop = ControlLoop(MODELS, DT, stream_timeout_s=0.05)
    loop.reset(home())
    # with a guard, the loop also narrows its bound to the axis distances at each check
    guard = TcpSpeedGuard(loop, MODELS, limits_m_s=limits, every_n_ticks=every, chains=CHAINS) if every else None
    if guard is None:
        loop.limit_tcp_speed(limits, REACH)
    history = [loop.setpoint.copy()]
    t = 0.0

    def tick() -> None:
        nonlocal t
        t += DT
        history.append(loop.tick(t, loop.setpoint).copy())
        if guard is not None:
            assert guard.check() == []

    for cmd in commands:
        if cmd[0] == "chunk":
            _, robot, rows, t_offset, dt, hold = cmd
            loop.submit_chunk(robot, rows, t + t_offset, dt, hold_after=hold)
        elif cmd[0] == "pstop":
            loop.protective_stop(cmd[1], "test")
        else:
            for _ in range(cmd[1]):
                tick()
    for _ in range(30):  # let every motion and stop play out
        tick()
    sp = np.array(history)
    worst = 0.0
    for r, limit in enumerate(limits):
        if np.isfinite(limit):
            fastest = float(chord_speeds(sp, r).max())
            assert fastest <= limit + FK_ROUNDING_M_S
            worst = max(worst, fastest / limit)
    target(worst, label="fastest set-point TCP speed / limit")  # search towards streams that press on the limit
    event("held" if any(e.kind == "tcp_speed_limited" for e in loop.drain_events()) else "never held")
    lower, upper, vmax, amax = loop.limits
    assert np.all(sp >= lower - 1e-12) and np.all(sp <= upper + 1e-12)
    vel = np.diff(sp, axis=0) / DT
    assert np.all(np.abs(vel) <= vmax * (1 + 1e-9) + 1e-12)
    acc = np.diff(vel, axis=0) / DT
    assert np.all(np.abs(acc) <= amax * (1 + 1e-6) + 1e-6)
