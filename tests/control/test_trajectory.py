"""Trajectory generation against analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from testbed.control import ControlLoop
from testbed.control.kinematics import KinematicChain
from testbed.control.trajectory import (
    JointTrajectory,
    PtpMotion,
    TrajectoryPoint,
    arc_path,
    line_path,
    plan_cartesian,
    sample_rows,
    trapezoid_profile,
)
from testbed.control.trajectory_mode import TrajectoryController, TrajectoryStatus
from testbed.errors import ControllerError


def test_ptp_duration_matches_s_curve_formula() -> None:
    # rest to rest over 1 with v=1, a=2, j=10: jerk phases 0.2 s, accel phase 0.7 s covering 0.35,
    # cruise 0.3 s: 1.7 s in all
    m = PtpMotion(np.zeros(1), np.ones(1), np.ones(1), np.full(1, 2.0), np.full(1, 10.0))
    assert m.duration_s == pytest.approx(1.7, abs=1e-9)
    pos, vel, acc = m.sample(0.85)
    assert pos[0] == pytest.approx(0.5) and vel[0] == pytest.approx(1.0) and acc[0] == pytest.approx(0.0)
    assert m.sample(5.0)[0][0] == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(
    start=st.lists(st.floats(-2, 2), min_size=3, max_size=3),
    end=st.lists(st.floats(-2, 2), min_size=3, max_size=3),
)
@example(start=[0.0, 0.0, 0.0], end=[5.960464477539063e-08, 0.0, 5.960464477539063e-08])
def test_ptp_is_time_synchronized_and_within_limits(start: list[float], end: list[float]) -> None:
    vmax, amax, jmax = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]), np.array([40.0, 50.0, 60.0])
    m = PtpMotion(np.array(start), np.array(end), vmax, amax, jmax)
    ts = np.linspace(0, m.duration_s, 200)
    samples = [m.sample(float(t)) for t in ts]
    vel = np.array([s[1] for s in samples])
    acc = np.array([s[2] for s in samples])
    assert np.all(np.abs(vel) <= vmax + 1e-9) and np.all(np.abs(acc) <= amax + 1e-9)
    assert np.allclose(samples[-1][0], end, atol=1e-9)
    # synchronized: every moving joint still moves until shortly before the common end
    moving = np.abs(np.array(end) - np.array(start)) > 1e-3
    late = [m.sample(m.duration_s * 0.9)[1]]
    assert np.all(np.abs(late[0][moving]) > 0)


@pytest.mark.parametrize("size", [5.96e-08, 1e-8, 1e-9, 3e-7])
def test_a_tiny_ptp_move_ends_exactly_at_its_target(size: float) -> None:
    # ruckig's time-synchronized profile for the slower joint stopped ~1e-8 short of a tiny target
    # (0 -> 5.96e-8 ended at 5.30e-8); the motion is replanned phase-synchronized instead
    vmax, amax, jmax = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]), np.array([40.0, 50.0, 60.0])
    end = np.array([size, 0.0, size])
    m = PtpMotion(np.zeros(3), end, vmax, amax, jmax)
    assert np.allclose(m.sample(m.duration_s)[0], end, rtol=0, atol=1e-15)
    for t in np.linspace(0, m.duration_s, 50):
        p, v, a = m.sample(float(t))
        assert np.all(np.abs(v) <= vmax) and np.all(np.abs(a) <= amax)
        assert np.all((p >= -1e-18) & (p <= end + 1e-18))  # never past the target


def test_trapezoid_profile_durations() -> None:
    total, s = trapezoid_profile(1.0, 0.5, 1.0)  # accel 0.5 s covering 0.125, cruise 1.5 s
    assert total == pytest.approx(2.5)
    assert s(1.25) == pytest.approx(0.5)
    total, s = trapezoid_profile(0.25, 1.0, 1.0)  # triangle: 0.5 s up, 0.5 s down
    assert total == pytest.approx(1.0)
    assert s(1.0) == pytest.approx(0.25)


def test_linear_points_interpolate_linearly_from_start_state() -> None:
    traj = JointTrajectory([TrajectoryPoint([1.0, 2.0], 1.0), TrajectoryPoint([1.0, 0.0], 2.0)], 2)
    assert traj.kind == "linear"
    bound = traj.bind(np.array([0.0, 0.0]))
    assert np.allclose(bound.sample(0.5)[0], [0.5, 1.0])
    assert np.allclose(bound.sample(1.5)[0], [1.0, 1.0])
    assert np.allclose(bound.sample(9.0)[0], [1.0, 0.0])


def test_cubic_points_meet_positions_and_velocities() -> None:
    traj = JointTrajectory([TrajectoryPoint([1.0], 1.0, velocities=[0.5]), TrajectoryPoint([0.0], 3.0, [0.0])], 1)
    assert traj.kind == "cubic"
    bound = traj.bind(np.array([0.0]), np.array([0.0]))
    p, v, _ = bound.sample(1.0 - 1e-9)
    assert p[0] == pytest.approx(1.0) and v[0] == pytest.approx(0.5)
    p, v, _ = bound.sample(0.0)
    assert p[0] == pytest.approx(0.0) and v[0] == pytest.approx(0.0)


def test_quintic_points_meet_accelerations() -> None:
    pts = [TrajectoryPoint([1.0], 1.0, [0.2], [-0.3]), TrajectoryPoint([2.0], 2.0, [0.0], [0.0])]
    traj = JointTrajectory(pts, 1)
    assert traj.kind == "quintic"
    bound = traj.bind(np.array([0.0]), np.array([0.0]))
    p, v, a = bound.sample(1.0 - 1e-9)
    assert (p[0], v[0], a[0]) == pytest.approx((1.0, 0.2, -0.3), abs=1e-6)
    p, v, a = bound.sample(1.0)
    assert (p[0], v[0], a[0]) == pytest.approx((1.0, 0.2, -0.3), abs=1e-6)


def test_mixed_point_kinds_are_refused() -> None:
    with pytest.raises(ControllerError, match="points mix interpolation kinds"):
        JointTrajectory([TrajectoryPoint([1.0], 1.0), TrajectoryPoint([0.0], 2.0, [0.0])], 1)


def test_non_increasing_time_is_refused_naming_the_point() -> None:
    with pytest.raises(ControllerError, match="point 1: time_from_start_s must increase"):
        JointTrajectory([TrajectoryPoint([1.0], 1.0), TrajectoryPoint([0.0], 1.0)], 1)


def test_arc_through_three_points_is_a_half_circle() -> None:
    poses = []
    for xyz in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]):
        p = np.eye(4)
        p[:3, 3] = xyz
        poses.append(p)
    arc = arc_path(*poses)
    assert arc.length_m == pytest.approx(math.pi)
    assert np.allclose(arc.pose(0.5)[:3, 3], [0.0, 1.0, 0.0], atol=1e-12)
    assert np.allclose(arc.pose(1.0)[:3, 3], [-1.0, 0.0, 0.0], atol=1e-12)
    for u in np.linspace(0, 1, 11):
        assert np.linalg.norm(arc.pose(float(u))[:3, 3]) == pytest.approx(1.0)


def test_collinear_arc_is_refused() -> None:
    poses = []
    for x in (0.0, 1.0, 2.0):
        p = np.eye(4)
        p[0, 3] = x
        poses.append(p)
    with pytest.raises(ControllerError, match="collinear"):
        arc_path(*poses)


def test_linear_move_keeps_the_tcp_on_the_line() -> None:
    from testbed.robots import load_robot

    model = load_robot("scara_t6")
    chain = KinematicChain.from_urdf(model.urdf_path, model.tcp_link)
    q0 = np.array([0.3, 1.2, 0.05, 0.0])
    start = chain.forward(q0)
    end = start.copy()
    end[:3, 3] += [0.1, -0.15, -0.05]
    motion = plan_cartesian(chain, q0, line_path(start, end), 0.2, 1.0, model.velocity, orientation="yaw")
    rows = sample_rows(motion, 0.004)
    d = end[:3, 3] - start[:3, 3]
    for q in rows[:: max(1, len(rows) // 20)]:
        p = chain.forward(q)[:3, 3] - start[:3, 3]
        off_line = p - d * (p @ d) / (d @ d)
        assert np.linalg.norm(off_line) < 2e-4
    assert np.allclose(chain.forward(rows[-1])[:3, 3], end[:3, 3], atol=1e-4)
    # ~0.19 m at 0.2 m/s with 1 m/s^2 ramps: length / speed + speed / accel
    assert motion.duration_s == pytest.approx(np.linalg.norm(d) / 0.2 + 0.2, rel=0.05)


def test_unreachable_line_is_refused() -> None:
    from testbed.robots import load_robot

    model = load_robot("scara_t6")
    chain = KinematicChain.from_urdf(model.urdf_path, model.tcp_link)
    q0 = np.array([0.0, 1.0, 0.05, 0.0])
    start = chain.forward(q0)
    end = start.copy()
    end[:3, 3] = [1.5, 0.0, start[2, 3]]
    with pytest.raises(ControllerError, match="path unreachable at"):
        plan_cartesian(chain, q0, line_path(start, end), 0.5, 2.0, model.velocity, orientation="yaw")


def _loop_with_arm() -> ControlLoop:
    from control_fakes import arm7

    loop = ControlLoop([arm7()], 0.001)
    loop.reset(np.zeros((1, 7)))
    return loop


def _run(loop: ControlLoop, ctrl: TrajectoryController, t0: float, t1: float, offset: float = 0.0) -> None:
    for k in range(round((t1 - t0) / 0.001)):
        t = t0 + k * 0.001
        loop.tick(t)
        ctrl.tick(t, loop.setpoint[0] + offset)


def test_trajectory_controller_reaches_goal() -> None:
    loop = _loop_with_arm()
    ctrl = TrajectoryController(loop, 0)
    traj = JointTrajectory([TrajectoryPoint([0.2] * 7, 1.0, [0.0] * 7)], 7)
    ctrl.follow(traj, 0.0)
    _run(loop, ctrl, 0.0, 1.2)
    assert ctrl.status == TrajectoryStatus("succeeded")
    assert np.allclose(loop.setpoint[0], 0.2, atol=1e-6)


def test_trajectory_controller_aborts_on_path_tolerance_and_holds() -> None:
    loop = _loop_with_arm()
    ctrl = TrajectoryController(loop, 0, path_tolerance=0.05)
    ctrl.follow(JointTrajectory([TrajectoryPoint([0.5] * 7, 1.0)], 7), 0.0)
    _run(loop, ctrl, 0.0, 0.3, offset=0.06)  # the robot lags 6 cm/rad behind its set-point
    assert ctrl.status == TrajectoryStatus("aborted", "path_tolerance")
    held = loop.setpoint.copy()
    _run(loop, ctrl, 0.3, 1.5)
    assert np.all(np.abs(loop.setpoint - held) < 0.05)  # it brakes to a stop, it does not go on


def test_new_trajectory_replaces_the_old_one() -> None:
    loop = _loop_with_arm()
    ctrl = TrajectoryController(loop, 0)
    ctrl.follow(JointTrajectory([TrajectoryPoint([1.0] * 7, 2.0)], 7), 0.0)
    _run(loop, ctrl, 0.0, 0.5)
    ctrl.follow(JointTrajectory([TrajectoryPoint([-0.2] * 7, 1.0, [0.0] * 7)], 7), 0.5)
    _run(loop, ctrl, 0.5, 1.8)
    assert ctrl.status.state == "succeeded"
    assert np.allclose(loop.setpoint[0], -0.2, atol=1e-6)


def test_goal_not_reached_in_time_aborts() -> None:
    loop = _loop_with_arm()
    ctrl = TrajectoryController(loop, 0, path_tolerance=1.0, goal_tolerance=0.01, goal_time_tolerance_s=0.1)
    ctrl.follow(JointTrajectory([TrajectoryPoint([0.1] * 7, 0.5)], 7), 0.0)
    _run(loop, ctrl, 0.0, 1.0, offset=0.05)
    assert ctrl.status == TrajectoryStatus("aborted", "goal_tolerance")


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["linear", "cubic", "quintic"]), seed=st.integers(0, 10_000))
def test_batch_sampling_matches_point_sampling(kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(0.1, 1.0, 4))
    points = [
        TrajectoryPoint(
            list(rng.uniform(-1, 1, 3)),
            float(t),
            velocities=list(rng.uniform(-1, 1, 3)) if kind != "linear" else None,
            accelerations=list(rng.uniform(-1, 1, 3)) if kind == "quintic" else None,
        )
        for t in times
    ]
    bound = JointTrajectory(points, 3).bind(np.zeros(3))
    query = np.linspace(-0.2, times[-1] + 0.2, 97)
    expected = np.array([bound.sample(float(t))[0] for t in query])
    np.testing.assert_allclose(bound.sample_many(query), expected, atol=1e-9)
    for point in points:  # every point is met at its time, in position and in what it specifies
        pos, vel, acc = bound.sample(point.time_from_start_s - 1e-12)
        np.testing.assert_allclose(pos, point.positions, atol=1e-6)
        if point.velocities is not None:
            np.testing.assert_allclose(vel, point.velocities, atol=1e-5)
        if point.accelerations is not None:
            np.testing.assert_allclose(acc, point.accelerations, atol=1e-4)
