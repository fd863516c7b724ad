"""ControllerService and ControlLoopBackend against a real ControlLoop of the gp7 model."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.bridge import codec
from testbed.bridge.controller_backend import (
    ControlLoopBackend,
    LoopDied,
    TickerThread,
    Transition,
    control_job_loader,
)
from testbed.bridge.controller_service import SERVICE_NAME, ControllerServer, start_controller_server
from testbed.bridge.generated import common_pb2, controller_pb2, controller_pb2_grpc
from testbed.bridge.trajectory_goals import TrajectoryResultCode
from testbed.control import ControlLoop, LifecycleState, TrajectoryPoint
from testbed.errors import BridgeConfigError, ControllerError, FeatureUnavailable, InvalidCommand, JobError
from testbed.robots import load_robot

GP7 = load_robot("gp7")
DT = 0.004
TOKEN = "s3cret-token"
AUTH = [("authorization", f"Bearer {TOKEN}")]


def _backend(stream_timeout_s: float = 0.5, **kwargs: object) -> tuple[ControlLoop, ControlLoopBackend]:
    loop = ControlLoop([GP7], DT, stream_timeout_s=stream_timeout_s)
    loop.reset(GP7.home[None, :].copy())
    return loop, ControlLoopBackend(loop, **kwargs)  # type: ignore[arg-type]


def _tick(backend: ControlLoopBackend, start_cycle: int, n: int) -> int:
    for k in range(start_cycle, start_cycle + n):
        backend.tick(k * DT)
    return start_cycle + n


# ---------------------------------------------------------------------------------------- backend alone
def test_commands_take_effect_at_the_next_tick_not_before() -> None:
    loop, backend = _backend()
    future = backend.change_state("gp7", Transition.DEACTIVATE)
    assert not future.done()
    assert loop.state(0) is LifecycleState.ACTIVE
    backend.tick(0.0)
    assert future.result(0) == "INACTIVE"
    assert loop.state(0) is LifecycleState.INACTIVE


def test_streamed_setpoint_resolves_with_the_state_after_the_cycle_that_applied_it() -> None:
    _, backend = _backend()
    before = backend.snapshot("gp7")
    future = backend.stream_setpoints("gp7", GP7.home + 0.2)
    backend.apply_pending(0.0)
    assert not future.done()  # resolved only once the cycle is published
    backend.tick(0.0)
    snap = future.result(0)
    assert snap.cycle == before.cycle + 1
    assert np.all(snap.setpoint_rad > GP7.home)  # started moving towards the target
    assert snap.lifecycle_state == "ACTIVE"


def test_streamed_targets_are_reached_and_held_after_a_normal_end() -> None:
    _, backend = _backend(stream_timeout_s=0.1)
    target = GP7.home + np.array([0.3, -0.2, 0.25, 0.5, -0.4, 1.0])
    backend.stream_setpoints("gp7", target)
    backend.end_stream("gp7")
    _tick(backend, 0, 500)  # 2 s, well past the stream timeout
    snap = backend.snapshot("gp7")
    assert snap.lifecycle_state == "ACTIVE"
    np.testing.assert_allclose(snap.setpoint_rad, target, atol=1e-9)


def test_a_stream_that_stops_arriving_leads_to_a_protective_stop() -> None:
    _, backend = _backend(stream_timeout_s=0.1)
    backend.stream_setpoints("gp7", GP7.home + 0.1)
    _tick(backend, 0, 100)
    snap = backend.snapshot("gp7")
    assert snap.lifecycle_state == "PROTECTIVE_STOP"
    assert snap.protective_stop


def test_a_chunk_is_followed_row_by_row() -> None:
    _, backend = _backend()
    rows = GP7.home + np.linspace(0.0, 0.05, 11)[:, None] * np.ones(6)
    backend.stream_setpoints("gp7", rows, dt_s=0.1)
    backend.end_stream("gp7")
    cycle = _tick(backend, 0, 125)  # t = 0.496 s: about half-way along the chunk
    mid = backend.snapshot("gp7").setpoint_rad
    assert np.all(mid > GP7.home + 0.015) and np.all(mid < GP7.home + 0.035)
    _tick(backend, cycle, 250)
    np.testing.assert_allclose(backend.snapshot("gp7").setpoint_rad, rows[-1], atol=1e-9)


@pytest.mark.parametrize(
    ("robot", "values", "dt_s", "match"),
    [
        ("mh6x", np.zeros(6), None, r"robot: unknown robot 'mh6x' \(known: gp7\)"),
        ("gp7", np.zeros(7), None, r"joint_pos_rad: robot 'gp7' has 6 joints.*got \(7,\)"),
        ("gp7", np.zeros((2, 5)), None, r"joint_pos_rad: .*got \(2, 5\)"),
        ("gp7", np.zeros((0, 6)), None, r"joint_pos_rad: .*1 <= steps"),
        ("gp7", np.zeros(6, dtype=np.int64), None, r"joint_pos_rad: expected float32 or float64.*int64"),
        ("gp7", np.array([0, 0, np.nan, 0, 0, 0.0]), None, r"joint_pos_rad: NaN or inf .* joint 2 \(joint_3\)"),
        ("gp7", np.array([[0.0] * 6, [0, 0, 0, 0, np.inf, 0]]), None, r"row 1 joint 4 \(joint_5\)"),
        ("gp7", np.zeros(6), -0.1, r"dt_s: expected a finite time > 0"),
        ("gp7", np.zeros(6), float("nan"), r"dt_s: expected a finite time > 0"),
    ],
)
def test_malformed_setpoints_are_refused_naming_the_field(
    robot: str, values: np.ndarray, dt_s: float | None, match: str
) -> None:
    loop, backend = _backend()
    loop.drain_events()
    with pytest.raises(InvalidCommand, match=match):
        backend.stream_setpoints(robot, values, dt_s=dt_s)
    _tick(backend, 0, 5)
    assert loop.drain_events() == []  # nothing reached the loop, not even a rejection
    np.testing.assert_array_equal(backend.snapshot("gp7").setpoint_rad, GP7.home)


def test_unknown_robot_and_transition_are_refused() -> None:
    _, backend = _backend()
    with pytest.raises(InvalidCommand, match="robot: unknown robot 'x'"):
        backend.snapshot("x")
    with pytest.raises(InvalidCommand, match="robot: unknown robot 'x'"):
        backend.change_state("x", Transition.RESET)
    with pytest.raises(InvalidCommand, match="transition: expected one of ACTIVATE"):
        backend.change_state("gp7", "activate")  # type: ignore[arg-type]


def test_duplicate_robot_names_are_refused_with_a_fix() -> None:
    loop = ControlLoop([GP7, GP7], DT)
    with pytest.raises(ControllerError, match=r"unique, \['gp7'\] repeat; pass names="):
        ControlLoopBackend(loop)
    with pytest.raises(ControllerError, match="one name per robot"):
        ControlLoopBackend(loop, names=["a"])
    backend = ControlLoopBackend(loop, names=["left", "right"])
    assert [r.name for r in backend.robots()] == ["left", "right"]
    assert [r.model for r in backend.robots()] == ["gp7", "gp7"]


def test_refused_transition_fails_the_future_with_the_lifecycle_message() -> None:
    _, backend = _backend()
    future = backend.change_state("gp7", Transition.RESET)  # ACTIVE cannot reset
    backend.tick(0.0)
    with pytest.raises(ControllerError, match="transition 'reset' refused in state ACTIVE"):
        future.result(0)


def test_setpoints_for_a_stopped_robot_fail_and_say_how_to_recover() -> None:
    loop, backend = _backend()
    backend.change_state("gp7", Transition.EMERGENCY_STOP)
    backend.tick(0.0)
    future = backend.stream_setpoints("gp7", GP7.home + 0.1)
    backend.tick(DT)
    with pytest.raises(ControllerError, match=r"EMERGENCY_STOP.*send TRANSITION_RESET, then TRANSITION_ACTIVATE"):
        future.result(0)
    assert loop.drain_events()[-1].kind == "emergency_stop"  # no command_rejected: it never reached the loop
    for transition, state in ((Transition.RESET, "INACTIVE"), (Transition.ACTIVATE, "ACTIVE")):
        f = backend.change_state("gp7", transition)
        backend.tick(2 * DT)
        assert f.result(0) == state


def test_a_cancelled_command_never_moves_the_robot() -> None:
    _, backend = _backend()
    future = backend.stream_setpoints("gp7", GP7.home + 0.5)
    assert future.cancel()
    _tick(backend, 0, 50)
    np.testing.assert_array_equal(backend.snapshot("gp7").setpoint_rad, GP7.home)


@pytest.mark.parametrize("stop", [Transition.PROTECTIVE_STOP, Transition.EMERGENCY_STOP])
def test_a_stop_cannot_be_cancelled_and_applies_at_the_next_cycle(stop: Transition) -> None:
    _, backend = _backend(stream_timeout_s=10.0)
    backend.tick(0.0)
    backend.stream_setpoints("gp7", GP7.home + 0.5)
    backend.tick(DT)  # moving
    future = backend.change_state("gp7", stop)
    assert not future.cancel()  # what a caller that gave up waiting does
    backend.tick(2 * DT)
    assert future.result(0) == stop.name
    stopped = backend.snapshot("gp7").setpoint_rad
    _tick(backend, 3, 200)
    snap = backend.snapshot("gp7")
    assert snap.lifecycle_state == stop.name
    np.testing.assert_array_equal(snap.setpoint_rad, stopped)


def test_snapshot_reports_measured_positions_when_the_cell_gives_them() -> None:
    loop, backend = _backend()
    measured = loop.setpoint.copy() + 0.01
    backend.apply_pending(0.0)
    loop.tick(0.0, measured)
    backend.publish(0.0, measured)
    snap = backend.snapshot("gp7")
    np.testing.assert_allclose(snap.joint_pos_rad, GP7.home + 0.01)
    np.testing.assert_allclose(snap.setpoint_rad, GP7.home)
    assert snap.t_s == 0.0 and snap.speed_scale == 1.0


def test_snapshot_arrays_are_copies() -> None:
    _, backend = _backend()
    backend.tick(0.0)
    snap = backend.snapshot("gp7")
    backend.stream_setpoints("gp7", GP7.home + 0.3)
    _tick(backend, 1, 20)
    np.testing.assert_array_equal(snap.setpoint_rad, GP7.home)


def test_wait_cycles_times_out_when_nothing_ticks() -> None:
    _, backend = _backend()
    assert backend.wait_cycles(1, timeout_s=0.01) is False


# ---------------------------------------------------------------------------------------- jobs
@dataclass
class _Outputs:
    gripper: bool | None
    done: bool
    failed: str | None = None


class _FakeJob:
    """Moves joint 1 by 0.1 rad over 20 cycles, grips at the start, ends after 40 cycles.

    Its plan waits for ``release`` (set by default) and records the thread it ran on; ``fail``
    makes the plan raise that exception instead.
    """

    def __init__(self, loop: ControlLoop, robot: int, *, fail: BaseException | None = None) -> None:
        self.name = "fake_job"
        self._loop = loop
        self._robot = robot
        self.ticks = 0
        self.started_at: float | None = None
        self.release = threading.Event()
        self.release.set()
        self.planning = threading.Event()
        self.planned_on: int | None = None
        self.planned_from: np.ndarray | None = None
        self._fail = fail

    def plan(self, q_start: np.ndarray) -> str:
        self.planned_on = threading.get_ident()
        self.planned_from = q_start.copy()
        self.planning.set()
        assert self.release.wait(10), "the test never released the plan"
        if self._fail is not None:
            raise self._fail
        return "the plan"

    def start(self, t_s: float, plan: object) -> None:
        assert plan == "the plan"
        self.started_at = t_s

    def tick(self, t_s: float) -> _Outputs:
        if self.ticks == 0:
            target = GP7.home + np.array([0.1, 0, 0, 0, 0, 0])
            self._loop.submit_chunk(self._robot, target[None, :], t_s, DT, hold_after=True)
        self.ticks += 1
        return _Outputs(gripper=True if self.ticks == 1 else None, done=self.ticks >= 40)


def _tick_until_done(backend: ControlLoopBackend, future: Future, cycle: int, timeout_s: float = 10.0) -> int:
    """Tick (about every ms) until ``future`` is done; returns the next cycle."""
    deadline = time.monotonic() + timeout_s
    while not future.done():
        assert time.monotonic() < deadline, "the job was never started nor refused"
        backend.tick(cycle * DT)
        cycle += 1
        time.sleep(0.001)
    return cycle


def _job_backend(**job_kwargs: object) -> tuple[ControlLoop, ControlLoopBackend, list[_FakeJob]]:
    loop, _ = _backend()
    jobs: list[_FakeJob] = []

    def loader(robot: int, text: str) -> _FakeJob:
        if "MOVJ" not in text:
            raise JobError("job_yaml line 1: expected a MOVJ step")
        jobs.append(_FakeJob(loop, robot, **job_kwargs))  # type: ignore[arg-type]
        return jobs[-1]

    return loop, ControlLoopBackend(loop, job_loader=loader), jobs


def test_job_without_a_loader_is_refused_naming_what_is_missing() -> None:
    _, backend = _backend(job_loader=False)
    with pytest.raises(FeatureUnavailable, match=r"no job loader \(job_loader=False was given\)"):
        backend.send_job("gp7", "name: pick\nsteps: [{MOVJ: home, VJ: 10}]\n")
    with pytest.raises(JobError, match="job_yaml: not valid YAML"):
        backend.send_job("gp7", "name: [unclosed\n")


def test_job_runs_through_the_loader_sets_the_gripper_and_ends() -> None:
    _, backend, jobs = _job_backend()
    with backend:
        with pytest.raises(JobError, match="line 1"):
            backend.send_job("gp7", "name: x")
        future = backend.send_job("gp7", "name: fake_job\nsteps: [MOVJ]")
        cycle = _tick_until_done(backend, future, 0)
        assert future.result(0) == "fake_job"
        snap = backend.snapshot("gp7")
        assert snap.job == "fake_job" and snap.gripper_on
        assert backend.gripper_request(0) is True
        refused = backend.stream_setpoints("gp7", GP7.home)
        cycle = _tick(backend, cycle, 1)
        with pytest.raises(ControllerError, match="running job 'fake_job'"):
            refused.result(0)
        _tick(backend, cycle, 60)
        snap = backend.snapshot("gp7")
        assert snap.job == "" and jobs[0].ticks == 40
        assert snap.setpoint_rad[0] == pytest.approx(GP7.home[0] + 0.1)


def test_a_job_is_planned_on_a_thread_other_than_the_ticking_one() -> None:
    _, backend, jobs = _job_backend()
    with backend:
        future = backend.send_job("gp7", "MOVJ")
        _tick_until_done(backend, future, 0)  # this (test) thread ticks
        assert future.result(0) == "fake_job"
        assert jobs[0].planned_on is not None and jobs[0].planned_on != threading.get_ident()


def test_ticks_go_on_while_a_job_is_being_planned_and_the_robot_holds() -> None:
    _, backend, jobs = _job_backend()
    with backend:
        future = backend.send_job("gp7", "MOVJ")
        jobs[0].release.clear()  # the plan will wait until the test lets it finish
        backend.tick(0.0)
        assert jobs[0].planning.wait(10)
        before = backend.snapshot("gp7").cycle
        cycle = _tick(backend, 1, 50)  # none of these waits for the plan
        snap = backend.snapshot("gp7")
        assert snap.cycle == before + 50 and not future.done()
        np.testing.assert_array_equal(snap.setpoint_rad, GP7.home)
        np.testing.assert_array_equal(jobs[0].planned_from, GP7.home)
        refused = backend.stream_setpoints("gp7", GP7.home + 0.1)
        cycle = _tick(backend, cycle, 1)
        with pytest.raises(ControllerError, match="starting job 'fake_job' \\(it is being planned\\)"):
            refused.result(0)
        jobs[0].release.set()
        _tick_until_done(backend, future, cycle)
        assert future.result(0) == "fake_job" and jobs[0].started_at is not None


def test_a_plan_that_fails_fails_the_job_and_the_robot_holds() -> None:
    _, backend, _ = _job_backend(fail=JobError("job_yaml:4 program[1] 'MOVL a V=100': pose 'a' is unreachable"))
    with backend:
        future = backend.send_job("gp7", "MOVJ")
        cycle = _tick_until_done(backend, future, 0)
        with pytest.raises(JobError, match="pose 'a' is unreachable"):
            future.result(0)
        _tick(backend, cycle, 5)
        snap = backend.snapshot("gp7")
        assert snap.lifecycle_state == "ACTIVE" and snap.job == ""
        np.testing.assert_array_equal(snap.setpoint_rad, GP7.home)


def test_a_bug_in_a_plan_reaches_the_caller_as_it_is() -> None:
    _, backend, _ = _job_backend(fail=ZeroDivisionError("a bug in the planner"))
    with backend:
        future = backend.send_job("gp7", "MOVJ")
        _tick_until_done(backend, future, 0)
        with pytest.raises(ZeroDivisionError, match="a bug in the planner"):
            future.result(0)
        again = backend.send_job("gp7", "MOVJ")  # the planning thread survived it
        _tick_until_done(backend, again, 100)
        with pytest.raises(ZeroDivisionError):
            again.result(0)


def test_a_dead_planning_thread_fails_its_jobs_and_refuses_new_ones() -> None:
    _, backend, _ = _job_backend(fail=SystemExit("planner killed"))
    with backend:
        future = backend.send_job("gp7", "MOVJ")
        _tick_until_done(backend, future, 0)
        with pytest.raises(ControllerError, match=r"job planning thread died \(SystemExit: planner killed\)") as err:
            future.result(0)
        assert isinstance(err.value.__cause__, SystemExit)
        with pytest.raises(ControllerError, match="job planning thread died"):
            backend.send_job("gp7", "MOVJ")


def test_a_stop_while_a_job_is_planned_means_it_never_starts() -> None:
    _, backend, jobs = _job_backend()
    with backend:
        future = backend.send_job("gp7", "MOVJ")
        jobs[0].release.clear()
        backend.tick(0.0)
        assert jobs[0].planning.wait(10)
        backend.change_state("gp7", Transition.PROTECTIVE_STOP)
        cycle = _tick(backend, 1, 1)
        with pytest.raises(ControllerError, match="left ACTIVE while job 'fake_job' was being planned"):
            future.result(0)
        jobs[0].release.set()
        for transition in (Transition.RESET, Transition.ACTIVATE):
            backend.change_state("gp7", transition)
            cycle = _tick(backend, cycle, 1)
        time.sleep(0.05)  # the plan comes back meanwhile; it must be dropped, not started
        _tick(backend, cycle, 50)
        assert jobs[0].started_at is None and backend.snapshot("gp7").job == ""
        np.testing.assert_array_equal(backend.snapshot("gp7").setpoint_rad, GP7.home)


def test_a_job_cancelled_while_it_is_planned_never_starts() -> None:
    _, backend, jobs = _job_backend()
    with backend:
        future = backend.send_job("gp7", "MOVJ")
        jobs[0].release.clear()
        backend.tick(0.0)
        assert jobs[0].planning.wait(10)
        assert future.cancel()  # e.g. the gRPC call timed out
        jobs[0].release.set()
        time.sleep(0.05)
        _tick(backend, 1, 50)
        assert jobs[0].started_at is None and backend.snapshot("gp7").job == ""
        np.testing.assert_array_equal(backend.snapshot("gp7").setpoint_rad, GP7.home)


def test_a_stop_aborts_the_running_job() -> None:
    loop, _ = _backend()
    with ControlLoopBackend(loop, job_loader=lambda r, text: _FakeJob(loop, r)) as backend:
        future = backend.send_job("gp7", "name: fake_job")
        cycle = _tick_until_done(backend, future, 0)
        backend.change_state("gp7", Transition.PROTECTIVE_STOP)
        _tick(backend, cycle, 3)
        assert backend.snapshot("gp7").job == ""


def test_a_snapshot_pairs_state_and_setpoints_of_the_same_cycle() -> None:
    loop, backend = _backend(stream_timeout_s=0.02)
    backend.stream_setpoints("gp7", GP7.home + 0.05)
    for k in range(100):
        backend.apply_pending(k * DT)
        loop.tick(k * DT)  # the loop itself stops the robot here once the stream timed out
        if loop.state(0) is LifecycleState.PROTECTIVE_STOP:
            break
        backend.publish(k * DT)
    else:
        raise AssertionError("the stream never timed out")
    snap = backend.snapshot("gp7")  # the cycle that stopped is not published yet
    assert (snap.cycle, snap.lifecycle_state, snap.last_error) == (k, "ACTIVE", "")
    backend.publish(k * DT)
    snap = backend.snapshot("gp7")
    assert (snap.cycle, snap.lifecycle_state, snap.last_error) == (k + 1, "PROTECTIVE_STOP", "stream_timeout")
    np.testing.assert_array_equal(snap.setpoint_rad, loop.setpoint[0])


def test_a_commands_result_is_visible_in_snapshots_once_its_future_resolves() -> None:
    _, backend = _backend()
    future = backend.change_state("gp7", Transition.PROTECTIVE_STOP)
    backend.apply_pending(0.0)
    assert not future.done()  # the stop took effect, but its cycle is not published yet
    backend.publish(0.0)
    assert future.result(0) == "PROTECTIVE_STOP" == backend.snapshot("gp7").lifecycle_state


def test_ticker_stop_reports_a_thread_that_did_not_end() -> None:
    _, backend = _backend()
    in_plant, release = threading.Event(), threading.Event()

    def stuck_plant(setpoint: np.ndarray) -> np.ndarray:
        in_plant.set()
        release.wait(10)
        return setpoint

    ticker = TickerThread(backend, plant=stuck_plant).start()
    assert in_plant.wait(10)
    with pytest.raises(ControllerError, match=r"ticking thread did not end within 0.2 s of stop\(\)"):
        ticker.stop(timeout_s=0.2)
    release.set()
    ticker.stop()  # it ends once the plant returns


def test_ticker_stop_reports_an_error_in_the_loop() -> None:
    _, backend = _backend()

    def broken_plant(setpoint: np.ndarray) -> np.ndarray:
        raise ValueError("sensor cable cut")

    ticker = TickerThread(backend, plant=broken_plant).start()
    # until the loop died (its first cycle is published before the plant raises, so waiting for a
    # cycle not yet seen waits forever if this thread comes back only after that one)
    deadline = time.monotonic() + 10
    while backend.loop_error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(backend.loop_error, ValueError)
    with pytest.raises(ControllerError, match="control loop raised ValueError") as err:
        ticker.stop()
    assert isinstance(err.value.__cause__, ValueError)


def test_a_loop_that_died_fails_what_waits_ends_trajectories_and_reports_error_for_good() -> None:
    _, backend = _backend()
    backend.tick(0.0)
    handle = backend.follow_trajectory("gp7", [TrajectoryPoint((GP7.home + 0.2).tolist(), 1.0)])
    _tick(backend, 1, 5)  # the trajectory runs
    waiting = backend.change_state("gp7", Transition.DEACTIVATE)  # queued when the loop dies
    backend.loop_died(RuntimeError("encoder read failed"))
    why = "control loop died: RuntimeError: encoder read failed"
    with pytest.raises(LoopDied, match=why):
        waiting.result(0)
    item = handle.get(0)
    assert item is not None and item.result is not None
    assert item.result.code is TrajectoryResultCode.ABORTED and why in item.result.text
    for send in (lambda: backend.change_state("gp7", Transition.PROTECTIVE_STOP),
                 lambda: backend.stream_setpoints("gp7", GP7.home),
                 lambda: backend.follow_trajectory("gp7", [TrajectoryPoint(GP7.home.tolist(), 1.0)])):
        with pytest.raises(LoopDied, match=why):
            send()
    _tick(backend, 6, 5)  # whoever ticks on changes nothing of the report
    snap = backend.snapshot("gp7")
    assert (snap.lifecycle_state, snap.last_error) == ("ERROR", why)
    assert isinstance(backend.loop_error, RuntimeError)


# ---------------------------------------------------------------------------------------- property
_vals = st.one_of(st.floats(-8.0, 8.0), st.sampled_from([np.nan, np.inf, -1e9, 1e9]))


@st.composite
def _ops(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["set", "set", "set", "ticks", "ticks", "transition", "end"]))
    if kind == "set":
        steps = draw(st.integers(1, 4))
        rows = np.array(draw(st.lists(_vals, min_size=6 * steps, max_size=6 * steps))).reshape(steps, 6)
        return ("set", rows, draw(st.sampled_from([None, 0.004, 0.02, 0.1])))
    if kind == "ticks":
        return ("ticks", draw(st.integers(1, 60)))
    if kind == "transition":
        return ("transition", draw(st.sampled_from(list(Transition))))
    return ("end",)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_ops(), min_size=1, max_size=20))
def test_published_setpoints_respect_limits_whatever_callers_send(ops: list[tuple]) -> None:
    loop, backend = _backend(stream_timeout_s=0.05)
    lower, upper, vmax, amax = (a[0] for a in loop.limits)
    history = [backend.snapshot("gp7").setpoint_rad]
    cycle = 0
    for op in ops:
        if op[0] == "set":
            rows = op[1]
            if not np.isfinite(rows).all():
                with pytest.raises(InvalidCommand, match="joint_pos_rad: NaN or inf"):
                    backend.stream_setpoints("gp7", rows, dt_s=op[2])
                continue
            backend.stream_setpoints("gp7", rows, dt_s=op[2])
            n = 1
        elif op[0] == "transition":
            backend.change_state("gp7", op[1])
            n = 1
        elif op[0] == "end":
            backend.end_stream("gp7")
            n = 1
        else:
            n = op[1]
        for _ in range(n):
            backend.tick(cycle * DT)
            cycle += 1
            history.append(backend.snapshot("gp7").setpoint_rad)
    p = np.array(history)
    assert np.all(p >= lower - 1e-12) and np.all(p <= upper + 1e-12)
    v = np.diff(p, axis=0) / DT
    assert np.all(np.abs(v) <= vmax * (1 + 1e-9) + 1e-9)
    a = np.diff(v, axis=0) / DT
    # a deactivate or emergency stop freezes the set-point at once (the loop's semantics): skip those jumps
    moving = (np.abs(v[1:]) > 1e-12).any(axis=1)
    assert np.all(np.abs(a[moving]) <= amax * (1 + 1e-6) + 1e-6)


# ---------------------------------------------------------------------------------------- over gRPC
@pytest.fixture
def served() -> Iterator[tuple[ControlLoop, ControlLoopBackend, ControllerServer]]:
    loop, backend = _backend(stream_timeout_s=0.2)
    # no command timeout is under test here: a SendJob first starts a planning child (at nice 19),
    # which on a loaded machine took more than the default 2 s
    with backend, TickerThread(backend), \
            start_controller_server(backend, token=TOKEN, command_timeout_s=30.0) as server:
        yield loop, backend, server


@pytest.fixture
def stub(served: tuple) -> Iterator[controller_pb2_grpc.ControllerServiceStub]:
    with grpc.insecure_channel(served[2].address) as channel:
        yield controller_pb2_grpc.ControllerServiceStub(channel)


def _tensor(values: object, dtype: str = "float64") -> common_pb2.Tensor:
    return codec.encode_tensor(np.asarray(values, dtype=dtype))


def test_list_robots_gives_joints_and_limits_of_the_model(stub: controller_pb2_grpc.ControllerServiceStub) -> None:
    (info,) = stub.ListRobots(controller_pb2.ListRobotsRequest(), metadata=AUTH).robots
    assert (info.name, info.model, info.lifecycle_state) == ("gp7", "gp7", "ACTIVE")
    assert list(info.joint_names) == list(GP7.joint_names)
    assert list(info.joint_types) == list(GP7.joint_types)
    np.testing.assert_allclose(info.lower, GP7.lower)
    np.testing.assert_allclose(info.upper, GP7.upper)
    np.testing.assert_allclose(info.velocity_max, GP7.velocity)
    np.testing.assert_allclose(info.acceleration_max, GP7.acceleration)
    assert info.cycle_ms == pytest.approx(DT * 1e3)
    assert info.speed_scale == 1.0


def test_lifecycle_over_grpc_allowed_and_refused(stub: controller_pb2_grpc.ControllerServiceStub) -> None:
    def change(t: int) -> str:
        req = controller_pb2.ChangeStateRequest(robot="gp7", transition=t)
        return stub.ChangeState(req, metadata=AUTH).lifecycle_state

    assert change(controller_pb2.TRANSITION_DEACTIVATE) == "INACTIVE"
    with pytest.raises(grpc.RpcError) as refused:
        change(controller_pb2.TRANSITION_DEACTIVATE)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "transition 'deactivate' refused in state INACTIVE" in refused.value.details()
    assert change(controller_pb2.TRANSITION_ACTIVATE) == "ACTIVE"
    assert change(controller_pb2.TRANSITION_PROTECTIVE_STOP) == "PROTECTIVE_STOP"
    state = stub.GetState(controller_pb2.GetStateRequest(robot="gp7"), metadata=AUTH)
    assert state.protective_stop and state.lifecycle_state == "PROTECTIVE_STOP"
    assert change(controller_pb2.TRANSITION_EMERGENCY_STOP) == "EMERGENCY_STOP"
    assert change(controller_pb2.TRANSITION_RESET) == "INACTIVE"
    assert change(controller_pb2.TRANSITION_ACTIVATE) == "ACTIVE"
    with pytest.raises(grpc.RpcError) as bad:
        change(controller_pb2.TRANSITION_UNSPECIFIED)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.details().startswith("transition: expected one of TRANSITION_ACTIVATE")


def test_streamed_setpoints_are_followed_within_limits(stub: controller_pb2_grpc.ControllerServiceStub) -> None:
    target = GP7.home + np.array([0.4, -0.3, 0.3, 0.8, -0.6, 1.5])

    def requests() -> Iterator[controller_pb2.Setpoint]:
        for _ in range(150):  # one per reply: at least 150 cycles = 0.6 s, enough to get there
            yield controller_pb2.Setpoint(robot="gp7", joint_pos_rad=_tensor(target, "float32"), gripper_on=True)

    states = list(stub.StreamSetpoints(requests(), metadata=AUTH))
    assert len(states) == 150
    pos = np.array([codec.decode_tensor(s.setpoint_rad) for s in states])
    cycles = np.array([s.cycle for s in states])
    assert np.all(np.diff(cycles) >= 1)  # one state per accepted set-point, each after its own cycle
    step = np.abs(np.diff(pos, axis=0)) / np.diff(cycles)[:, None]  # mean step per cycle between replies
    assert np.all(step <= GP7.velocity * DT * (1 + 1e-9))
    np.testing.assert_allclose(pos[-1], target.astype(np.float32), atol=1e-6)
    assert states[-1].gripper_on and states[-1].lifecycle_state == "ACTIVE"
    time.sleep(0.4)  # past the 0.2 s stream timeout: a normal end holds, no stop
    final = stub.GetState(controller_pb2.GetStateRequest(robot="gp7"), metadata=AUTH)
    assert final.lifecycle_state == "ACTIVE"


@pytest.mark.parametrize(
    ("setpoint", "match"),
    [
        (controller_pb2.Setpoint(robot="gp7", joint_pos_rad=_tensor([0, 0, np.nan, 0, 0, 0])), "joint_pos_rad: NaN"),
        (controller_pb2.Setpoint(robot="gp7", joint_pos_rad=_tensor(np.zeros(7))), "has 6 joints"),
        (controller_pb2.Setpoint(robot="nope", joint_pos_rad=_tensor(np.zeros(6))), "robot: unknown robot 'nope'"),
        (controller_pb2.Setpoint(robot="gp7", joint_pos_rad=_tensor(np.zeros(6), "int32")), "expected dtype float"),
        (controller_pb2.Setpoint(robot="gp7"), "joint_pos_rad: missing"),
        (
            controller_pb2.Setpoint(
                robot="gp7", joint_pos_rad=common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT64, shape=[6], data=b"x")
            ),
            "joint_pos_rad: 1 bytes do not fit",
        ),
        (
            controller_pb2.Setpoint(  # 0 bytes fit the shape, but numpy refuses to build the array
                robot="gp7", joint_pos_rad=common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT64, shape=[0, 2**40, 2**40])
            ),
            "joint_pos_rad: shape (0, 1099511627776, 1099511627776) is invalid",
        ),
        (controller_pb2.Setpoint(robot="gp7", joint_pos_rad=_tensor(np.zeros(6)), dt_s=-1.0), "dt_s: expected"),
    ],
)
def test_invalid_setpoints_get_invalid_argument_naming_the_field(
    served: tuple, stub: controller_pb2_grpc.ControllerServiceStub, setpoint: controller_pb2.Setpoint, match: str
) -> None:
    _, backend, _ = served
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamSetpoints(iter([setpoint]), metadata=AUTH))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert match in err.value.details()
    np.testing.assert_array_equal(backend.snapshot("gp7").setpoint_rad, GP7.home)


def test_get_state_of_unknown_robot_is_invalid_argument(stub: controller_pb2_grpc.ControllerServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.GetState(controller_pb2.GetStateRequest(robot="mh6x"), metadata=AUTH)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "robot: unknown robot 'mh6x' (known: gp7)" in err.value.details()


JOB_YAML = """\
name: wave
poses:
  a: {joints: [0.3, 0.1, -0.5, 0.2, -0.8, 0.5]}
program:
  - MOVJ a VJ=50 PL=0
  - DOUT OT#(1) ON
  - TIMER T=0.1
"""


def test_a_job_sent_over_grpc_runs_to_its_pose_and_sets_the_gripper(
    served: tuple, stub: controller_pb2_grpc.ControllerServiceStub
) -> None:
    _, backend, _ = served
    reply = stub.SendJob(controller_pb2.SendJobRequest(robot="gp7", job_yaml=JOB_YAML), metadata=AUTH)
    assert reply.job == "wave"
    assert stub.GetState(controller_pb2.GetStateRequest(robot="gp7"), metadata=AUTH).job == "wave"
    for _ in range(20):  # the move takes well under a second of control time
        backend.wait_cycles(50, timeout_s=10)
        state = stub.GetState(controller_pb2.GetStateRequest(robot="gp7"), metadata=AUTH)
        if not state.job:
            break
    assert state.job == "" and state.gripper_on and state.lifecycle_state == "ACTIVE"
    np.testing.assert_allclose(codec.decode_tensor(state.setpoint_rad), [0.3, 0.1, -0.5, 0.2, -0.8, 0.5], atol=1e-6)


def test_bad_jobs_are_invalid_argument_naming_the_line(stub: controller_pb2_grpc.ControllerServiceStub) -> None:
    bad = JOB_YAML.replace("VJ=50", "VJ=500")
    with pytest.raises(grpc.RpcError) as err:
        stub.SendJob(controller_pb2.SendJobRequest(robot="gp7", job_yaml=bad), metadata=AUTH)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "job_yaml:5" in err.value.details() and "VJ" in err.value.details()
    with pytest.raises(grpc.RpcError) as syntax:
        stub.SendJob(controller_pb2.SendJobRequest(robot="gp7", job_yaml="name: [x\n"), metadata=AUTH)
    assert syntax.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "job_yaml: not valid YAML" in syntax.value.details()
    state = stub.GetState(controller_pb2.GetStateRequest(robot="gp7"), metadata=AUTH)
    np.testing.assert_array_equal(codec.decode_tensor(state.setpoint_rad), GP7.home)  # nothing moved


def test_a_planning_process_killed_mid_job_fails_that_job_and_the_next_one_runs() -> None:
    loop, _ = _backend()
    loader = control_job_loader(loop)
    moves = "\n".join("  - MOVJ a VJ=5 PL=0\n  - MOVJ b VJ=5 PL=0" for _ in range(150))
    poses = JOB_YAML.split("program:")[0] + "  b: {joints: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}\n"
    long_job = f"{poses}program:\n{moves}\n"  # seconds to plan: the kill lands while it is planned
    with ControlLoopBackend(loop, job_loader=loader) as backend, TickerThread(backend), \
            start_controller_server(backend, command_timeout_s=30.0) as server, \
            grpc.insecure_channel(server.address) as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        call = stub.SendJob.future(controller_pb2.SendJobRequest(robot="gp7", job_yaml=long_job))
        deadline = time.monotonic() + 20
        while not (loader.process.requests == 2 and loader.process.busy) and time.monotonic() < deadline:
            time.sleep(0.001)  # request 1 parsed the job on the gRPC thread, request 2 plans it
        pid = loader.process.pid
        assert pid is not None and loader.process.busy
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(grpc.RpcError) as err:
            call.result(timeout=30)
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert f"job planning process (pid {pid}, exit code -9) died while working on a plan" in err.value.details()
        state = stub.GetState(controller_pb2.GetStateRequest(robot="gp7"))
        assert state.lifecycle_state == "ACTIVE" and not state.job  # the loop went on; nothing started
        assert stub.SendJob(controller_pb2.SendJobRequest(robot="gp7", job_yaml=JOB_YAML)).job == "wave"


def test_send_job_without_a_job_language_is_unimplemented() -> None:
    _, backend = _backend(job_loader=False)
    with start_controller_server(backend) as server, grpc.insecure_channel(server.address) as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.SendJob(controller_pb2.SendJobRequest(robot="gp7", job_yaml=JOB_YAML))
    assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "no job loader" in err.value.details()


def test_calls_without_the_token_are_unauthenticated_but_health_is_open(served: tuple) -> None:
    with grpc.insecure_channel(served[2].address) as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        for metadata in (None, [("authorization", "Bearer wrong")]):
            with pytest.raises(grpc.RpcError) as err:
                stub.ListRobots(controller_pb2.ListRobotsRequest(), metadata=metadata)
            assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as streamed:
            list(stub.StreamSetpoints(iter([controller_pb2.Setpoint(robot="gp7")])))
        assert streamed.value.code() is grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_client_that_vanishes_mid_stream_leads_to_a_protective_stop(
    served: tuple, stub: controller_pb2_grpc.ControllerServiceStub
) -> None:
    _, backend, _ = served
    stop_sending = threading.Event()

    def requests() -> Iterator[controller_pb2.Setpoint]:
        while not stop_sending.is_set():
            yield controller_pb2.Setpoint(robot="gp7", joint_pos_rad=_tensor(GP7.home + 0.2))

    call = stub.StreamSetpoints(requests(), metadata=AUTH)
    for _, _state in zip(range(5), call, strict=False):
        pass
    call.cancel()
    stop_sending.set()
    assert backend.wait_cycles(150, timeout_s=10)  # 0.6 s of control time, past the 0.2 s stream timeout
    state = stub.GetState(controller_pb2.GetStateRequest(robot="gp7"), metadata=AUTH)
    assert state.lifecycle_state == "PROTECTIVE_STOP"


def test_commands_to_a_loop_that_does_not_tick_are_unavailable_and_never_applied_late() -> None:
    loop, backend = _backend()
    with start_controller_server(backend, command_timeout_s=0.2) as server, grpc.insecure_channel(
        server.address
    ) as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        req = controller_pb2.ChangeStateRequest(robot="gp7", transition=controller_pb2.TRANSITION_DEACTIVATE)
        with pytest.raises(grpc.RpcError) as err:
            stub.ChangeState(req)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "ran no cycle within 0.2 s" in err.value.details()
    backend.tick(0.0)
    assert loop.state(0) is LifecycleState.ACTIVE


@pytest.mark.parametrize(
    ("stop", "name"),
    [(controller_pb2.TRANSITION_PROTECTIVE_STOP, "PROTECTIVE_STOP"),
     (controller_pb2.TRANSITION_EMERGENCY_STOP, "EMERGENCY_STOP")],
)
def test_a_stop_the_loop_is_late_for_is_pending_not_lost_and_applies_when_it_ticks_again(stop: int, name: str) -> None:
    _, backend = _backend(stream_timeout_s=10.0)
    backend.tick(0.0)
    backend.stream_setpoints("gp7", GP7.home + 0.5)
    backend.tick(DT)  # moving, then the loop stalls for longer than the command timeout
    with start_controller_server(backend, command_timeout_s=0.3) as server, grpc.insecure_channel(
        server.address
    ) as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ChangeState(controller_pb2.ChangeStateRequest(robot="gp7", transition=stop), timeout=5)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert f"the {name} is queued, not lost" in err.value.details()
        assert "applies at its next cycle" in err.value.details()
        backend.tick(2 * DT)  # the loop resumes
        stopped = backend.snapshot("gp7").setpoint_rad
        _tick(backend, 3, 200)
        state = stub.GetState(controller_pb2.GetStateRequest(robot="gp7"), timeout=5)
    assert state.lifecycle_state == name
    np.testing.assert_array_equal(codec.decode_tensor(state.setpoint_rad), stopped)


def test_a_ticker_that_dies_logs_it_and_clients_see_the_error_not_an_active_robot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, backend = _backend()
    calls = [0]

    def plant(setpoint: np.ndarray) -> np.ndarray:
        calls[0] += 1
        if calls[0] == 50:
            raise RuntimeError("encoder read failed")
        return setpoint

    why = "control loop died: RuntimeError: encoder read failed"
    ticker = TickerThread(backend, plant=plant)
    with caplog.at_level("ERROR", logger="testbed.bridge.controller_backend"), \
            start_controller_server(backend, command_timeout_s=0.5) as server, \
            grpc.insecure_channel(server.address) as channel:
        ticker.start()
        deadline = time.monotonic() + 10
        while backend.loop_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as change:
            stub.ChangeState(controller_pb2.ChangeStateRequest(
                robot="gp7", transition=controller_pb2.TRANSITION_PROTECTIVE_STOP), timeout=5)
        with pytest.raises(grpc.RpcError) as stream:
            list(stub.StreamSetpoints(iter([controller_pb2.Setpoint(robot="gp7", joint_pos_rad=_tensor(GP7.home))]),
                                      timeout=5))
        state = stub.GetState(controller_pb2.GetStateRequest(robot="gp7"), timeout=5)
    for failed in (change.value, stream.value):
        assert failed.code() is grpc.StatusCode.UNAVAILABLE
        assert failed.details().startswith(why)
    assert (state.lifecycle_state, state.last_error) == ("ERROR", why)
    logged = [r for r in caplog.records if r.levelname == "ERROR" and why in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    with pytest.raises(ControllerError, match="control loop raised RuntimeError"):
        ticker.stop()


def test_listening_beyond_loopback_needs_a_token() -> None:
    _, backend = _backend()
    with pytest.raises(BridgeConfigError, match="refusing to listen beyond loopback without a token"):
        start_controller_server(backend, host="0.0.0.0")


def test_a_port_in_use_is_a_config_error() -> None:
    _, backend = _backend()
    with start_controller_server(backend) as first, pytest.raises(BridgeConfigError, match="cannot listen"):
        start_controller_server(backend, port=first.port)


def test_oversized_messages_are_refused_by_the_size_cap() -> None:
    _, backend = _backend()
    with TickerThread(backend), start_controller_server(backend, max_message_bytes=2048) as server, \
            grpc.insecure_channel(server.address) as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        big = controller_pb2.Setpoint(robot="gp7", joint_pos_rad=_tensor(np.tile(GP7.home, (200, 1))))
        with pytest.raises(grpc.RpcError) as err:
            list(stub.StreamSetpoints(iter([big])))
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    np.testing.assert_array_equal(backend.snapshot("gp7").setpoint_rad, GP7.home)


def test_two_models_two_clients_stream_at_once_each_to_its_own_robot() -> None:
    scara = load_robot("scara_t6")
    loop = ControlLoop([GP7, scara], DT, stream_timeout_s=0.5)
    home = np.zeros((2, loop.max_joints))
    home[0, :6] = GP7.home
    home[1, :4] = scara.home
    loop.reset(home)
    backend = ControlLoopBackend(loop, names=["arm", "scara"])
    targets = {"arm": GP7.home + 0.2, "scara": scara.home + np.array([0.3, -0.3, 0.05, 1.0])}
    results: dict[str, list[controller_pb2.RobotState]] = {}

    def client(name: str, address: str) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = controller_pb2_grpc.ControllerServiceStub(channel)
            msgs = (controller_pb2.Setpoint(robot=name, joint_pos_rad=_tensor(targets[name])) for _ in range(120))
            results[name] = list(stub.StreamSetpoints(msgs, timeout=30))

    with TickerThread(backend), start_controller_server(backend) as server:
        with grpc.insecure_channel(server.address) as channel:
            (arm, sc) = controller_pb2_grpc.ControllerServiceStub(channel).ListRobots(
                controller_pb2.ListRobotsRequest()).robots
        assert (arm.model, len(arm.joint_names), sc.model, len(sc.joint_names)) == ("gp7", 6, "scara_t6", 4)
        assert list(sc.joint_types) == ["revolute", "revolute", "prismatic", "revolute"]
        threads = [threading.Thread(target=client, args=(n, server.address)) for n in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for name, target in targets.items():
        states = results[name]
        assert len(states) == 120 and {s.robot for s in states} == {name}
        final = codec.decode_tensor(states[-1].setpoint_rad)
        assert final.shape == target.shape
        np.testing.assert_allclose(final, target, atol=1e-9)


def test_a_stream_ended_after_the_clock_restarts_still_holds_its_target() -> None:
    _, backend = _backend()
    cycle = _tick(backend, 0, 100)
    target = GP7.home + 0.1
    backend.stream_setpoints("gp7", target)
    _tick(backend, cycle, 2)
    backend.end_stream("gp7")
    _tick(backend, 0, 200)  # a new episode: time starts again at 0, before the chunk's t0
    np.testing.assert_allclose(backend.snapshot("gp7").setpoint_rad, target, atol=1e-9)
    assert backend.snapshot("gp7").lifecycle_state == "ACTIVE"
