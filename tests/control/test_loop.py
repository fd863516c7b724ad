"""The vectorized control loop: streaming, limits, stops, faults, no allocation."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from control_fakes import arm7, scara4

from testbed.control import ControlLoop, LifecycleState
from testbed.errors import ControllerError

DT = 0.001


def make_loop(**kw: object) -> ControlLoop:
    loop = ControlLoop([arm7(), scara4()], DT, **kw)  # type: ignore[arg-type]
    loop.reset(np.zeros((2, 7)))
    loop.drain_events()
    return loop


def run(loop: ControlLoop, t_from: float, t_to: float, measured: bool = True) -> list[np.ndarray]:
    out = []
    for k in range(round((t_to - t_from) / DT)):
        t = t_from + k * DT
        sp = loop.tick(t, loop.setpoint.copy() if measured else None)
        out.append(sp.copy())
    return out


def test_reset_activates_all_and_pads_short_models() -> None:
    loop = ControlLoop([arm7(), scara4()], DT)
    assert loop.n_robots == 2 and loop.max_joints == 7
    assert loop.joint_mask.tolist() == [[True] * 7, [True] * 4 + [False] * 3]
    start = np.full((2, 7), 0.1)
    loop.reset(start)
    assert loop.state(0) is LifecycleState.ACTIVE and loop.state(1) is LifecycleState.ACTIVE
    assert np.allclose(loop.setpoint[0], 0.1)
    assert np.allclose(loop.setpoint[1], [0.1, 0.1, 0.1, 0.1, 0, 0, 0])
    sp = loop.tick(0.0, loop.setpoint.copy())
    assert np.array_equal(sp, loop.setpoint)
    assert np.allclose(sp[1, 4:], 0.0)


def test_reset_refuses_out_of_range_position_naming_robot_and_joint() -> None:
    loop = ControlLoop([arm7(), scara4()], DT)
    pos = np.zeros((2, 7))
    pos[1, 2] = 0.5  # prismatic stroke is 0..0.2 m
    with pytest.raises(ControllerError, match=r"robot 1 \(scara4\) joint 2 position 0.5 is outside"):
        loop.reset(pos)


def test_reset_refuses_wrong_shape() -> None:
    loop = ControlLoop([arm7(), scara4()], DT)
    with pytest.raises(ControllerError, match=r"shape \(2, 7\)"):
        loop.reset(np.zeros((2, 4)))


def test_streamed_chunk_is_followed_to_its_last_row_and_held() -> None:
    loop = make_loop()
    rows = np.linspace(0.0, 0.5, 11)[:, None] * np.ones(7)
    loop.submit_chunk(0, rows, 0.0, 0.1, hold_after=True)
    run(loop, 0.0, 2.0)
    assert np.allclose(loop.setpoint[0], 0.5, atol=1e-6)
    assert np.allclose(loop.setpoint[1], 0.0)
    assert loop.state(0) is LifecycleState.ACTIVE


def test_slow_chunk_is_interpolated_linearly_between_rows() -> None:
    loop = make_loop()
    rows = np.array([[0.0] * 7, [0.2] * 7])  # 0.2 rad/s, far below every limit
    loop.submit_chunk(0, rows, 0.0, 1.0, hold_after=True)
    run(loop, 0.0, 0.5)
    assert np.allclose(loop.setpoint[0], 0.2 * 0.499, atol=1e-9)


def test_chunk_for_one_robot_leaves_other_robot_still() -> None:
    loop = make_loop()
    loop.submit_chunk(1, np.array([[1.0, 1.0, 0.1, 1.0]]), 0.0, 0.01, hold_after=True)
    run(loop, 0.0, 1.0)
    assert np.allclose(loop.setpoint[0], 0.0)
    assert np.allclose(loop.setpoint[1, :4], [1.0, 1.0, 0.1, 1.0], atol=1e-6)


def test_non_finite_chunk_is_rejected_and_robot_keeps_holding() -> None:
    loop = make_loop()
    rows = np.zeros((5, 7))
    rows[3, 2] = np.nan
    loop.submit_chunk(0, rows + 1.0, 0.0, 0.01)
    events = loop.drain_events()
    assert [(e.kind, e.detail["reason"], e.detail["rows"]) for e in events] == [
        ("command_rejected", "non_finite", [3])
    ]
    run(loop, 0.0, 0.2)
    assert np.allclose(loop.setpoint[0], 0.0)


def test_out_of_range_chunk_is_clamped_with_event() -> None:
    loop = make_loop()
    loop.submit_chunk(1, np.array([[0.0, 0.0, 5.0, 0.0]]), 0.0, 0.01, hold_after=True)
    (event,) = loop.drain_events()
    assert event.kind == "limit_clamped" and event.robot == 1 and event.detail["joints"] == [2]
    assert event.detail["max_excess"] == pytest.approx(4.8)
    run(loop, 0.0, 2.0)
    assert loop.setpoint[1, 2] == pytest.approx(0.2)


def test_wrong_chunk_shape_is_refused_naming_expected_shape() -> None:
    loop = make_loop()
    with pytest.raises(ControllerError, match=r"robot 1 \(scara4\) targets must have shape \(steps >= 1, 4\)"):
        loop.submit_chunk(1, np.zeros((3, 7)), 0.0, 0.01)


def test_stream_timeout_leads_to_protective_stop_after_timeout() -> None:
    loop = make_loop(stream_timeout_s=0.2)
    loop.submit_chunk(0, np.full((10, 7), 0.01), 0.0, 0.01)  # last row at 0.09 s
    run(loop, 0.0, 0.29)
    assert loop.state(0) is LifecycleState.ACTIVE
    run(loop, 0.29, 0.30)
    run(loop, 0.30, 0.301)
    assert loop.state(0) is LifecycleState.PROTECTIVE_STOP
    events = [e for e in loop.drain_events() if e.kind == "protective_stop"]
    assert len(events) == 1
    assert events[0].detail["reason"] == "stream_timeout" and 0.29 < events[0].t_s <= 0.3 + 1e-9
    assert loop.state(1) is LifecycleState.ACTIVE


def test_stopped_robot_ignores_chunks_until_reset() -> None:
    loop = make_loop()
    loop.protective_stop(0, "operator")
    loop.submit_chunk(0, np.ones((3, 7)), 0.0, 0.01)
    loop.submit_chunk(0, np.ones((3, 7)), 0.0, 0.01)
    rejected = [e for e in loop.drain_events() if e.kind == "command_rejected"]
    assert len(rejected) == 1 and rejected[0].detail["reason"] == "not_active"
    run(loop, 0.0, 0.1)
    assert np.allclose(loop.setpoint[0], 0.0)
    loop.reset(loop.setpoint.copy())
    assert loop.state(0) is LifecycleState.ACTIVE
    loop.submit_chunk(0, np.full((1, 7), 0.3), 0.1, 0.01, hold_after=True)
    run(loop, 0.1, 1.5)
    assert np.allclose(loop.setpoint[0], 0.3, atol=1e-6)


def test_emergency_stop_holds_the_set_point_immediately() -> None:
    loop = make_loop()
    loop.submit_chunk(0, np.full((1, 7), 1.5), 0.0, 0.01, hold_after=True)
    run(loop, 0.0, 0.3)
    held = loop.setpoint.copy()
    assert np.all(np.abs(loop.setpoint_vel[0]) > 0)
    loop.emergency_stop(0, "button")
    run(loop, 0.3, 0.5)
    assert np.array_equal(loop.setpoint, held)
    assert loop.state(0) is LifecycleState.EMERGENCY_STOP
    kinds = [e.kind for e in loop.drain_events()]
    assert kinds == ["emergency_stop"]


def test_protective_stop_decelerates_on_path_within_acceleration_limits() -> None:
    loop = make_loop()
    goal = np.array([2.5, 1.5, 2.0, 2.0, 2.5, 1.5, 2.5])
    loop.submit_chunk(0, goal[None], 0.0, 0.01, hold_after=True)
    run(loop, 0.0, 0.25)
    v0 = loop.setpoint_vel[0].copy()
    loop.protective_stop(0, "light curtain")
    sps = np.array(run(loop, 0.25, 1.0))[:, 0]
    vel = np.diff(sps, axis=0) / DT
    acc = np.diff(vel, axis=0) / DT
    assert np.all(np.abs(acc) <= arm7().acceleration + 1e-6)
    assert np.allclose(vel[-1], 0.0)
    # on path: velocity keeps its direction while it shrinks
    moving = np.linalg.norm(vel, axis=1) > 1e-9
    dirs = vel[moving] / np.linalg.norm(vel[moving], axis=1, keepdims=True)
    assert np.allclose(dirs, v0 / np.linalg.norm(v0), atol=1e-6)
    assert loop.state(0) is LifecycleState.PROTECTIVE_STOP


def test_following_error_triggers_protective_stop() -> None:
    loop = make_loop(following_error=0.1)
    measured = loop.setpoint.copy()
    measured[1, 1] = 0.3
    loop.tick(0.0, measured)
    assert loop.state(1) is LifecycleState.PROTECTIVE_STOP and loop.state(0) is LifecycleState.ACTIVE
    (event,) = loop.drain_events()
    assert event.kind == "protective_stop" and "following_error: joints [1]" in event.detail["reason"]


def test_padding_entries_of_measurement_are_ignored() -> None:
    loop = make_loop()
    measured = loop.setpoint.copy()
    measured[1, 5] = np.nan
    loop.tick(0.0, measured)
    assert loop.state(1) is LifecycleState.ACTIVE


def test_invalid_measurement_is_a_fault_robot_holds_and_reset_recovers() -> None:
    loop = make_loop()
    loop.submit_chunk(0, np.full((1, 7), 1.0), 0.0, 0.01, hold_after=True)
    run(loop, 0.0, 0.1)
    held = loop.setpoint.copy()
    measured = held.copy()
    measured[0, 3] = np.inf
    loop.tick(0.1, measured)
    assert loop.state(0) is LifecycleState.ERROR
    assert np.array_equal(loop.setpoint[0], held[0])
    run(loop, 0.101, 0.2)
    assert np.array_equal(loop.setpoint[0], held[0])
    faults = [e for e in loop.drain_events() if e.kind == "fault"]
    assert len(faults) == 1 and "measurement_invalid" in faults[0].detail["reason"]
    comp = loop.component(0)
    comp.reset()
    comp.activate()
    assert loop.state(0) is LifecycleState.ACTIVE
    loop.submit_chunk(0, np.full((1, 7), 0.0), 0.2, 0.01, hold_after=True)
    run(loop, 0.2, 1.5)
    assert np.allclose(loop.setpoint[0], 0.0, atol=1e-6)


def test_new_chunk_keeps_queued_rows_before_its_start() -> None:
    loop = make_loop()
    rows = np.linspace(0.0, 1.0, 101)[:, None] * np.ones(7)  # 1 rad/s ramp, 1 s long
    loop.submit_chunk(0, rows, 0.0, 0.01)
    run(loop, 0.0, 0.5)
    # a chunk starting 0.1 s ahead: the ramp must continue until then, not jump
    loop.submit_chunk(0, np.array([[0.6] * 7, [0.65] * 7]), 0.6, 0.1, hold_after=True)
    sps = np.array(run(loop, 0.5, 0.6))[:, 0, 0]
    assert np.allclose(np.diff(sps) / DT, 1.0, atol=1e-6)
    sps = np.array(run(loop, 0.6, 0.7))[:, 0, 0]
    assert sps[-1] == pytest.approx(0.6 + 0.5 * 0.099, abs=2e-3)
    run(loop, 0.7, 1.5)
    assert loop.setpoint[0, 0] == pytest.approx(0.65, abs=1e-9)


def test_feasible_stream_is_tracked_exactly() -> None:
    loop = make_loop()
    t = np.arange(0.0, 1.0, 0.02)
    rows = 0.3 * np.sin(2 * np.pi * t)[:, None] * np.ones(7)  # peak 1.9 rad/s, 11.8 rad/s^2
    rows[:, :4] *= 0.5
    loop.submit_chunk(0, rows, 0.0, 0.02)
    run(loop, 0.0, 0.5)
    expected = np.interp(0.499, t, rows[:, 0])
    assert loop.setpoint[0, 0] == pytest.approx(expected, abs=5e-3)


def test_speed_scale_reduces_velocity() -> None:
    loop = make_loop(speed_scale=0.25)
    loop.submit_chunk(0, np.full((1, 7), 2.0), 0.0, 0.01, hold_after=True)
    sps = np.array(run(loop, 0.0, 1.0))[:, 0]
    vel = np.abs(np.diff(sps, axis=0)) / DT
    assert np.all(vel <= 0.25 * arm7().velocity + 1e-9)
    assert np.allclose(vel.max(axis=0), 0.25 * arm7().velocity)


def test_bad_speed_scale_is_refused() -> None:
    with pytest.raises(ControllerError, match=r"speed_scale must be in \(0, 1\], got 1.5"):
        ControlLoop([arm7()], DT, speed_scale=1.5)


def test_tick_allocates_nothing() -> None:
    loop = make_loop()
    loop.submit_chunk(0, np.linspace(0, 1, 50)[:, None] * np.ones(7), 0.0, 0.01)
    measured = np.zeros((2, 7))
    for k in range(10):  # warm up
        loop.tick(k * DT, measured)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for k in range(10, 1010):
        measured[:] = loop.tick(k * DT, measured)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert grown < 4096


def test_deactivated_robot_holds_and_ignores_chunks_until_activated() -> None:
    loop = make_loop()
    loop.component(0).deactivate()
    assert loop.state(0) is LifecycleState.INACTIVE
    loop.submit_chunk(0, np.ones((2, 7)), 0.0, 0.01)
    run(loop, 0.0, 0.2)
    assert np.allclose(loop.setpoint[0], 0.0)
    loop.component(0).activate()
    loop.submit_chunk(0, np.full((1, 7), 0.1), 0.2, 0.01, hold_after=True)
    run(loop, 0.2, 1.0)
    assert np.allclose(loop.setpoint[0], 0.1, atol=1e-9)


def test_finalized_controller_cannot_be_reset() -> None:
    loop = make_loop()
    loop.component(1).deactivate()
    loop.component(1).finalize()
    with pytest.raises(ControllerError, match=r"controller 'scara4' is FINALIZED and cannot restart"):
        loop.reset(np.zeros((2, 7)))


def test_every_transition_is_an_event_with_from_and_to() -> None:
    loop = make_loop()
    loop.protective_stop(0, "door open")
    loop.emergency_stop(0, "button")
    loop.reset(loop.setpoint.copy())
    events = [(e.robot, e.kind, e.detail["from"], e.detail["to"]) for e in loop.drain_events()]
    assert events == [
        (0, "protective_stop", "ACTIVE", "PROTECTIVE_STOP"),
        (0, "emergency_stop", "PROTECTIVE_STOP", "EMERGENCY_STOP"),
        (0, "state_change", "EMERGENCY_STOP", "INACTIVE"),
        (0, "state_change", "INACTIVE", "ACTIVE"),
    ]


def test_each_robot_keeps_its_own_speed_scale() -> None:
    loop = make_loop(speed_scale=0.5, robot_speed_scale=[1.0, 0.5], stream_timeout_s=5.0)
    for robot, n in ((0, 7), (1, 4)):
        loop.submit_chunk(robot, np.full((2, n), 0.15), 0.0, 0.01)
    sps = np.array(run(loop, 0.0, 1.0))
    speed = np.abs(np.diff(sps, axis=0)).max(axis=0) / DT  # (robots, joints)
    arm, scara = loop.models
    assert np.all(speed[0, :7] <= arm.velocity * 0.5 * (1 + 1e-9))
    assert np.all(speed[1, :4] <= scara.velocity * 0.25 * (1 + 1e-9))
    assert np.any(speed[0, :7] > arm.velocity * 0.25 * 1.01)  # robot 0 is not slowed by robot 1's factor
    assert (loop.effective_speed_scale(0), loop.effective_speed_scale(1)) == (0.5, 0.25)


def test_each_robot_keeps_its_own_stream_timeout() -> None:
    loop = make_loop(stream_timeout_s=[0.05, 0.5])
    loop.submit_chunk(0, np.zeros((2, 7)), 0.0, 0.01)
    loop.submit_chunk(1, np.zeros((2, 4)), 0.0, 0.01)
    run(loop, 0.0, 0.2)
    # both streams ran out at 0.01 s: robot 0 stopped after its 0.05 s, robot 1 still waits for its 0.5 s
    assert loop.state(0) is LifecycleState.PROTECTIVE_STOP and loop.state(1) is LifecycleState.ACTIVE


def test_per_robot_settings_must_match_the_robots() -> None:
    with pytest.raises(ControllerError, match=r"robot_speed_scale must be a number or 2 numbers"):
        make_loop(robot_speed_scale=[1.0, 0.5, 0.5])
    with pytest.raises(ControllerError, match=r"stream_timeout_s must be finite and in \(0, inf\]"):
        make_loop(stream_timeout_s=[0.5, 0.0])


def test_a_new_chunk_mid_row_takes_effect_at_the_next_tick() -> None:
    loop = make_loop()
    loop.submit_chunk(0, np.array([[0.0] * 7, [1.0] * 7]), 0.0, 1.0)  # rows 1 s apart: 1 rad/s ramp
    run(loop, 0.0, 0.3)
    loop.submit_chunk(0, np.full((1, 7), 0.1), 0.3, 0.01, hold_after=True)  # back to 0.1, mid-row
    run(loop, 0.3, 0.35)
    # it brakes at once (>= 8 rad/s^2 on every joint), not only at the ramp's next row (t = 1 s)
    assert loop.setpoint_vel[0, 0] < 1.0 - 8.0 * 0.045
    run(loop, 0.35, 1.5)
    assert loop.setpoint[0, 0] == pytest.approx(0.1, abs=1e-9)


def test_a_clock_that_goes_back_before_a_chunk_holds_its_first_row() -> None:
    loop = make_loop()
    loop.submit_chunk(0, np.array([[0.2] * 7, [1.0] * 7]), 0.5, 1.0, hold_after=True)
    run(loop, 0.5, 0.6)
    run(loop, 0.0, 0.45)  # a new episode's clock, before the chunk's first row: the target is that row
    assert loop.setpoint[0, 0] == pytest.approx(0.2, abs=1e-9)
