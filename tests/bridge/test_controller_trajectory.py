"""Trajectory mode over the ControllerService: ControlLoopBackend.follow_trajectory and FollowTrajectory."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.bridge import codec
from testbed.bridge.controller_backend import ControlLoopBackend, TickerThread, Transition
from testbed.bridge.controller_service import ControllerServer, start_controller_server
from testbed.bridge.generated import controller_pb2, controller_pb2_grpc
from testbed.bridge.trajectory_goals import TrajectoryFeedback, TrajectoryHandle, TrajectoryResultCode
from testbed.control import ControlLoop, TrajectoryPoint
from testbed.errors import InvalidCommand
from testbed.robots import load_robot

GP7 = load_robot("gp7")
HOME = np.asarray(GP7.home, dtype=np.float64)
DT = 0.004
Code = TrajectoryResultCode


def _backend(**kwargs: object) -> tuple[ControlLoop, ControlLoopBackend]:
    loop = ControlLoop([GP7], DT)
    loop.reset(HOME[None, :].copy())
    return loop, ControlLoopBackend(loop, **kwargs)  # type: ignore[arg-type]


def _cubic(offsets: Sequence[float] = (0.15, 0.3), times: Sequence[float] = (0.6, 1.2)) -> list[TrajectoryPoint]:
    """Through HOME + offsets[k] on every joint, at rest at the end, moving in between."""
    points = []
    for k, (off, t) in enumerate(zip(offsets, times, strict=True)):
        vel = 0.0 if k == len(offsets) - 1 else 0.2
        points.append(TrajectoryPoint((HOME + off).tolist(), t, velocities=[vel] * 6))
    return points


def _run(
    backend: ControlLoopBackend,
    handles: Sequence[TrajectoryHandle],
    *,
    start_cycle: int = 0,
    max_cycles: int = 2000,
    plant: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[int, dict[int, list[TrajectoryFeedback]]]:
    """Tick until every handle has its result; returns the next cycle and the items read per handle."""
    items: dict[int, list[TrajectoryFeedback]] = {k: [] for k in range(len(handles))}
    measured = None
    cycle = start_cycle
    for cycle in range(start_cycle, start_cycle + max_cycles):
        setpoint = backend.tick(cycle * DT, measured)
        if plant is not None:
            measured = plant(np.array(setpoint))
        for k, handle in enumerate(handles):
            while (item := handle.get(0)) is not None and (not items[k] or items[k][-1].result is None):
                items[k].append(item)
        if all(items[k] and items[k][-1].result is not None for k in items):
            return cycle + 1, items
    raise AssertionError(f"no result within {max_cycles} cycles")


# ---------------------------------------------------------------------------------------- backend
@pytest.mark.parametrize("kind", ["linear", "cubic", "quintic"])
def test_a_trajectory_is_followed_within_tolerance_and_succeeds(kind: str) -> None:
    _, backend = _backend()
    points = [
        TrajectoryPoint(
            (HOME + off).tolist(),
            t,
            velocities=None if kind == "linear" else [v] * 6,
            accelerations=[0.0] * 6 if kind == "quintic" else None,
        )
        for off, t, v in ((0.15, 0.6, 0.2), (0.3, 1.2, 0.0))
    ]
    handle = backend.follow_trajectory("gp7", points)
    _, items = _run(backend, [handle])
    feedback, last = items[0][:-1], items[0][-1]
    assert last.result is not None and last.result.code is Code.SUCCESSFUL, last.result
    assert len(feedback) >= 20  # every 10 cycles over 1.2 s
    times = [f.time_from_start_s for f in feedback]
    assert times == sorted(times) and times[0] >= 0.0 and times[-1] <= 1.2 + 0.5
    # no measurement: actual is the set-point, which follows the desired motion within its limits
    assert max(float(np.max(np.abs(f.error))) for f in feedback) < 0.01
    np.testing.assert_allclose(feedback[len(feedback) // 2].desired, feedback[len(feedback) // 2].actual, atol=0.01)
    np.testing.assert_allclose(backend.snapshot("gp7").setpoint_rad, HOME + 0.3, atol=1e-9)


def test_the_desired_motion_passes_through_the_points_at_their_times() -> None:
    _, backend = _backend(feedback_every=1, feedback_queue=1000)
    handle = backend.follow_trajectory("gp7", _cubic())
    _, items = _run(backend, [handle])
    at = {round(f.time_from_start_s, 3): f.desired for f in items[0][:-1]}
    np.testing.assert_allclose(at[0.6], HOME + 0.15, atol=1e-9)
    np.testing.assert_allclose(at[1.2], HOME + 0.3, atol=1e-9)
    np.testing.assert_allclose(at[0.0], HOME, atol=1e-9)  # starts from the set-point it was accepted at


def test_joint_names_reorder_points_tolerances_and_feedback() -> None:
    _, backend = _backend()
    names = list(reversed(GP7.joint_names))
    goal = np.arange(6) * 0.05  # goal[k] for names[k]
    target_in_robot_order = HOME.copy()
    for k, name in enumerate(names):
        target_in_robot_order[GP7.joint_names.index(name)] += goal[k]
    request_order = target_in_robot_order[::-1]
    handle = backend.follow_trajectory(
        "gp7", [TrajectoryPoint(request_order.tolist(), 0.8)], joint_names=names, goal_tolerance=[1e-6] * 6
    )
    assert handle.joint_names == tuple(names)
    _, items = _run(backend, [handle])
    last = items[0][-1]
    assert last.result is not None and last.result.code is Code.SUCCESSFUL
    np.testing.assert_allclose(last.actual, request_order, atol=1e-6)
    np.testing.assert_allclose(backend.snapshot("gp7").setpoint_rad, target_in_robot_order, atol=1e-6)


def _offset_plant(offset: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def plant(setpoint: np.ndarray) -> np.ndarray:
        out = setpoint.copy()
        out[0, :6] += offset
        return out

    return plant


def test_a_goal_tolerance_tighter_than_the_robot_settles_is_violated_and_named() -> None:
    _, backend = _backend()
    sag = np.array([0.0, 0.004, 0.0, 0.0, 0.0, 0.0])  # joint_2 settles 4 mrad short, like gravity sag
    handle = backend.follow_trajectory(
        "gp7", _cubic(), goal_tolerance=[0.001] * 6, goal_time_tolerance_s=0.2
    )
    _, items = _run(backend, [handle], plant=_offset_plant(sag))
    result = items[0][-1].result
    assert result is not None and result.code is Code.GOAL_TOLERANCE_VIOLATED
    assert "joint_2" in result.text and "0.004 > goal_tolerance 0.001" in result.text
    assert items[0][-1].time_from_start_s > 1.2 + 0.2


def test_the_same_offset_within_the_goal_tolerance_succeeds() -> None:
    _, backend = _backend()
    sag = np.array([0.0, 0.004, 0.0, 0.0, 0.0, 0.0])
    handle = backend.follow_trajectory("gp7", _cubic(), goal_tolerance=[0.005] * 6)
    _, items = _run(backend, [handle], plant=_offset_plant(sag))
    result = items[0][-1].result
    assert result is not None and result.code is Code.SUCCESSFUL
    np.testing.assert_allclose(items[0][-1].error, -sag, atol=1e-9)


def test_a_robot_that_lags_beyond_the_path_tolerance_aborts_and_holds() -> None:
    loop, backend = _backend()
    stuck = HOME.copy()

    def plant(setpoint: np.ndarray) -> np.ndarray:  # joint_1 does not move at all
        out = setpoint.copy()
        out[0, 0] = stuck[0]
        return out

    handle = backend.follow_trajectory("gp7", _cubic(), path_tolerance=[0.05] * 6)
    cycle, items = _run(backend, [handle], plant=plant)
    result = items[0][-1].result
    assert result is not None and result.code is Code.PATH_TOLERANCE_VIOLATED
    assert result.text.startswith("joint_1: |actual - desired|") and "path_tolerance 0.05" in result.text
    assert items[0][-1].time_from_start_s < 1.2  # stopped while moving
    held = backend.snapshot("gp7").setpoint_rad
    for k in range(cycle, cycle + 100):
        backend.tick(k * DT)
    np.testing.assert_allclose(backend.snapshot("gp7").setpoint_rad, held, atol=1e-3)  # decelerated to a hold
    assert loop.state(0).name == "ACTIVE"


def test_a_new_trajectory_preempts_the_running_one() -> None:
    _, backend = _backend()
    first = backend.follow_trajectory("gp7", _cubic())
    for k in range(100):
        backend.tick(k * DT)
    second = backend.follow_trajectory("gp7", [TrajectoryPoint((HOME - 0.1).tolist(), 1.0)])
    _, items = _run(backend, [first, second], start_cycle=100)
    assert items[0][-1].result is not None and items[0][-1].result.code is Code.PREEMPTED
    assert "new trajectory" in items[0][-1].result.text
    assert items[1][-1].result is not None and items[1][-1].result.code is Code.SUCCESSFUL
    np.testing.assert_allclose(backend.snapshot("gp7").setpoint_rad, HOME - 0.1, atol=1e-9)


def test_a_set_point_stream_preempts_the_trajectory() -> None:
    _, backend = _backend()
    handle = backend.follow_trajectory("gp7", _cubic())
    for k in range(50):
        backend.tick(k * DT)
    backend.stream_setpoints("gp7", HOME)
    backend.tick(50 * DT)
    result = handle.result
    assert result is not None and result.code is Code.PREEMPTED and "set-point stream" in result.text


def test_a_protective_stop_aborts_the_trajectory_with_its_reason() -> None:
    _, backend = _backend()
    handle = backend.follow_trajectory("gp7", _cubic())
    for k in range(50):
        backend.tick(k * DT)
    backend.change_state("gp7", Transition.PROTECTIVE_STOP)
    backend.tick(50 * DT)
    result = handle.result
    assert result is not None and result.code is Code.ABORTED
    assert "PROTECTIVE_STOP" in result.text and "ControllerService client" in result.text


def test_a_goal_for_a_robot_that_is_not_active_ends_invalid_goal_without_moving() -> None:
    _, backend = _backend()
    backend.change_state("gp7", Transition.DEACTIVATE)
    backend.tick(0.0)
    handle = backend.follow_trajectory("gp7", _cubic())
    for k in range(1, 50):
        backend.tick(k * DT)
    result = handle.result
    assert result is not None and result.code is Code.INVALID_GOAL
    assert "INACTIVE" in result.text and "TRANSITION_ACTIVATE" in result.text
    np.testing.assert_array_equal(backend.snapshot("gp7").setpoint_rad, HOME)


def test_cancel_stops_the_robot_where_it_is() -> None:
    _, backend = _backend()
    handle = backend.follow_trajectory("gp7", _cubic())
    for k in range(100):
        backend.tick(k * DT)
    handle.cancel()
    for k in range(100, 400):
        backend.tick(k * DT)
    result = handle.result
    assert result is not None and result.code is Code.ABORTED and "cancelled" in result.text
    final = backend.snapshot("gp7").setpoint_rad
    assert np.all(final > HOME + 0.05) and np.all(final < HOME + 0.3 - 0.05)  # held part-way


def test_a_cancelled_goal_that_never_started_does_not_move_the_robot() -> None:
    _, backend = _backend()
    handle = backend.follow_trajectory("gp7", _cubic())
    handle.cancel()
    for k in range(100):
        backend.tick(k * DT)
    np.testing.assert_array_equal(backend.snapshot("gp7").setpoint_rad, HOME)
    assert handle.result is None


def test_a_clock_that_goes_back_aborts_the_trajectory() -> None:
    _, backend = _backend()
    handle = backend.follow_trajectory("gp7", _cubic())
    for k in range(50, 100):
        backend.tick(k * DT)
    backend.tick(0.0)  # a new episode restarts the clock
    result = handle.result
    assert result is not None and result.code is Code.ABORTED and "clock went back" in result.text


def test_a_caller_that_never_reads_loses_the_oldest_feedback_but_not_the_result() -> None:
    _, backend = _backend(feedback_every=1, feedback_queue=5)
    handle = backend.follow_trajectory("gp7", _cubic())
    for k in range(500):
        backend.tick(k * DT)
    assert handle.result is not None and handle.result.code is Code.SUCCESSFUL
    assert handle.dropped > 250
    items = [handle.get(0) for _ in range(6)]
    assert all(item is not None for item in items)
    assert [item.result is not None for item in items] == [False] * 5 + [True]  # type: ignore[union-attr]
    assert items[0].time_from_start_s > 1.0  # type: ignore[union-attr]  # only the newest were kept
    assert handle.get(0) is items[-1]  # the result stays available


def _point(i: int = 0, **overrides: object) -> TrajectoryPoint:
    fields: dict[str, object] = {"positions": (HOME + 0.1 * (i + 1)).tolist(), "time_from_start_s": 0.5 * (i + 1)}
    fields.update(overrides)
    return TrajectoryPoint(**fields)  # type: ignore[arg-type]


NAN_POSITIONS = [*HOME[:3], float("nan"), *HOME[4:]]
INVALID_GOALS = [
    ("nan", [_point(0), _point(1, positions=NAN_POSITIONS)], {}, r"points\[1\]\.positions\[3\] \(joint_4\): NaN"),
    ("times", [_point(0), _point(1, time_from_start_s=0.5)], {},
     r"points\[1\]\.time_from_start_s: must be greater than points\[0\]'s 0\.5 s, got 0\.5"),
    ("zero time", [_point(0, time_from_start_s=0.0)], {}, r"points\[0\]\.time_from_start_s: must be greater than 0"),
    ("joint count", [_point(0), _point(1, positions=HOME[:5].tolist())], {},
     r"points\[1\]\.positions: robot 'gp7' has 6 joints .* got 5"),
    ("range", [_point(0), _point(1, positions=[*HOME[:2], 9.0, *HOME[3:]])], {},
     r"points\[1\]\.positions\[2\] \(joint_3\): 9 is outside the joint range"),
    ("unknown joint", [_point(0)], {"joint_names": [*GP7.joint_names[:5], "joint_7"]},
     r"joint_names\[5\]: robot 'gp7' has no joint 'joint_7'"),
    ("joint twice", [_point(0)], {"joint_names": [*GP7.joint_names[:5], "joint_1"]},
     r"joint_names\[5\]: joint 'joint_1' is named twice"),
    ("joint missing", [_point(0)], {"joint_names": list(GP7.joint_names[:5])},
     r"joint_names: robot 'gp7' has 6 joints; .*missing: joint_6"),
    ("no points", [], {}, r"points: robot 'gp7': a trajectory needs at least one point"),
    ("mixed kinds", [_point(0, velocities=[0.0] * 6), _point(1)], {},
     r"points\[1\]: carries the fields of a linear point but points\[0\] those of a cubic one"),
    ("acc without vel", [_point(0, accelerations=[0.0] * 6)], {}, r"points\[0\]\.accelerations: given without"),
    ("too fast", [_point(0, velocities=[0.0, 50.0, 0, 0, 0, 0])], {},
     r"points\[0\]\.velocities\[1\] \(joint_2\): \|50\| exceeds the joint's limit"),
    ("tolerance count", [_point(0)], {"path_tolerance": [0.1] * 3}, r"path_tolerance: expected 6 values"),
    ("tolerance nan", [_point(0)], {"goal_tolerance": [0.1] * 5 + [float("nan")]},
     r"goal_tolerance\[5\] \(joint_6\): NaN"),
    ("goal time", [_point(0)], {"goal_time_tolerance_s": -1.0}, r"goal_time_tolerance_s: expected a finite time >= 0"),
]


@pytest.mark.parametrize(
    ("points", "kwargs", "match"), [g[1:] for g in INVALID_GOALS], ids=[g[0] for g in INVALID_GOALS]
)
def test_invalid_goals_are_refused_naming_the_field_before_anything_moves(
    points: list[TrajectoryPoint], kwargs: dict, match: str
) -> None:
    _, backend = _backend()
    with pytest.raises(InvalidCommand, match=match):
        backend.follow_trajectory("gp7", points, **kwargs)
    for k in range(50):
        backend.tick(k * DT)
    np.testing.assert_array_equal(backend.snapshot("gp7").setpoint_rad, HOME)


def test_a_negative_tolerance_leaves_the_joint_unchecked() -> None:
    _, backend = _backend()
    stuck_plant = _offset_plant(np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.3]))  # joint_6 reads far off
    handle = backend.follow_trajectory(
        "gp7", _cubic(), path_tolerance=[0.0] * 5 + [-1.0], goal_tolerance=[0.0] * 5 + [-1.0]
    )
    _, items = _run(backend, [handle], plant=stuck_plant)
    result = items[0][-1].result
    assert result is not None and result.code is Code.SUCCESSFUL, result


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6), st.floats(0.05, 1.0)),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["linear", "cubic"]),
)
def test_any_valid_trajectory_ends_at_its_last_point_within_the_limits(
    raw: list[tuple[list[float], float]], kind: str
) -> None:
    loop, backend = _backend()
    lower, upper, vel_max = (np.array(a[0, :6]) for a in loop.limits[:3])
    t = 0.0
    points = []
    for fractions, gap in raw:
        t += gap
        pos = lower + np.asarray(fractions) * (upper - lower)
        points.append(TrajectoryPoint(pos.tolist(), t, velocities=[0.0] * 6 if kind == "cubic" else None))
    handle = backend.follow_trajectory("gp7", points, path_tolerance=[-1.0] * 6, goal_tolerance=[1e-9] * 6,
                                       goal_time_tolerance_s=30.0)
    prev = HOME.copy()
    for k in range(20_000):
        sp = np.array(backend.tick(k * DT)[0, :6])
        assert np.all(sp >= lower - 1e-12) and np.all(sp <= upper + 1e-12)
        assert np.all(np.abs(sp - prev) <= vel_max * loop.speed_scale * DT * (1 + 1e-9) + 1e-12)
        prev = sp
        if handle.result is not None:
            break
    assert handle.result is not None and handle.result.code is Code.SUCCESSFUL, handle.result
    np.testing.assert_allclose(backend.snapshot("gp7").setpoint_rad, points[-1].positions, atol=1e-9)


# ---------------------------------------------------------------------------------------- over gRPC
@pytest.fixture
def served() -> Iterator[tuple[ControlLoopBackend, ControllerServer]]:
    _, backend = _backend()
    with TickerThread(backend), start_controller_server(backend, command_timeout_s=2.0) as server:
        yield backend, server


@pytest.fixture
def stub(served: tuple) -> Iterator[controller_pb2_grpc.ControllerServiceStub]:
    with grpc.insecure_channel(served[1].address) as channel:
        yield controller_pb2_grpc.ControllerServiceStub(channel)


def _request(points: Sequence[TrajectoryPoint], **fields: object) -> controller_pb2.FollowTrajectoryRequest:
    return controller_pb2.FollowTrajectoryRequest(
        robot="gp7",
        points=[
            controller_pb2.TrajectoryPoint(
                positions=p.positions,
                velocities=p.velocities or [],
                accelerations=p.accelerations or [],
                time_from_start_s=p.time_from_start_s,
            )
            for p in points
        ],
        **fields,  # type: ignore[arg-type]
    )


def test_a_cubic_trajectory_over_grpc_is_followed_and_ends_successful(
    stub: controller_pb2_grpc.ControllerServiceStub,
) -> None:
    items = list(stub.FollowTrajectory(_request(_cubic()), timeout=10))
    last = items[-1]
    assert last.HasField("result") and last.result.code == controller_pb2.TRAJECTORY_RESULT_SUCCESSFUL
    assert "reached the goal" in last.result.text
    assert not any(item.HasField("result") for item in items[:-1])
    assert len(items) > 10
    errors = np.array([codec.decode_tensor(item.error) for item in items])
    assert errors.shape == (len(items), 6) and np.max(np.abs(errors)) < 0.01
    np.testing.assert_allclose(codec.decode_tensor(last.actual), HOME + 0.3, atol=0.01)
    state = stub.GetState(controller_pb2.GetStateRequest(robot="gp7"), timeout=5)
    np.testing.assert_allclose(codec.decode_tensor(state.setpoint_rad), HOME + 0.3, atol=1e-9)


def test_a_too_tight_goal_tolerance_over_grpc_ends_goal_tolerance_violated() -> None:
    _, backend = _backend()
    sag = np.array([0.0, 0.0, 0.003, 0.0, 0.0, 0.0])
    with TickerThread(backend, plant=_offset_plant(sag)), start_controller_server(backend) as server, \
            grpc.insecure_channel(server.address) as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        request = _request(_cubic(), goal_tolerance=[0.0005] * 6, goal_time_tolerance_s=0.1)
        last = list(stub.FollowTrajectory(request, timeout=10))[-1]
    assert last.result.code == controller_pb2.TRAJECTORY_RESULT_GOAL_TOLERANCE_VIOLATED
    assert last.result.text.startswith("joint_3: |actual - goal| = 0.003 > goal_tolerance 0.0005")


def test_a_second_trajectory_over_grpc_preempts_the_first(
    stub: controller_pb2_grpc.ControllerServiceStub,
) -> None:
    first_items: list[controller_pb2.TrajectoryFeedback] = []
    started = threading.Event()

    def follow_first() -> None:
        for item in stub.FollowTrajectory(_request(_cubic(times=(1.5, 3.0))), timeout=10):
            first_items.append(item)
            started.set()

    thread = threading.Thread(target=follow_first, daemon=True)
    thread.start()
    assert started.wait(5)
    second = list(stub.FollowTrajectory(_request([TrajectoryPoint((HOME - 0.1).tolist(), 0.8)]), timeout=10))
    thread.join(5)
    assert first_items[-1].result.code == controller_pb2.TRAJECTORY_RESULT_PREEMPTED
    assert first_items[-1].time_from_start_s < 3.0
    assert second[-1].result.code == controller_pb2.TRAJECTORY_RESULT_SUCCESSFUL


@pytest.mark.parametrize(("points", "kwargs", "match"), [g[1:] for g in INVALID_GOALS[:6]],
                         ids=[g[0] for g in INVALID_GOALS[:6]])
def test_invalid_goals_over_grpc_are_invalid_argument_naming_the_field(
    served: tuple, stub: controller_pb2_grpc.ControllerServiceStub,
    points: list[TrajectoryPoint], kwargs: dict, match: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.FollowTrajectory(_request(points, **kwargs), timeout=5))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(match, info.value.details()), info.value.details()
    served[0].wait_cycles(5, 2.0)
    state = stub.GetState(controller_pb2.GetStateRequest(robot="gp7"), timeout=5)
    np.testing.assert_array_equal(codec.decode_tensor(state.setpoint_rad), HOME)


def test_unknown_robot_over_grpc_is_invalid_argument(stub: controller_pb2_grpc.ControllerServiceStub) -> None:
    request = _request(_cubic())
    request.robot = "mh6x"
    with pytest.raises(grpc.RpcError) as info:
        list(stub.FollowTrajectory(request, timeout=5))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "robot: unknown robot 'mh6x' (known: gp7)" in info.value.details()


def test_a_client_that_cancels_the_call_leaves_the_robot_holding(
    served: tuple, stub: controller_pb2_grpc.ControllerServiceStub,
) -> None:
    backend = served[0]
    call = stub.FollowTrajectory(_request(_cubic(times=(1.5, 3.0))), timeout=10)
    for item in call:
        if item.time_from_start_s > 0.5:
            break
    call.cancel()
    backend.wait_cycles(50, 2.0)
    held = backend.snapshot("gp7").setpoint_rad
    backend.wait_cycles(100, 2.0)
    later = backend.snapshot("gp7").setpoint_rad
    np.testing.assert_allclose(later, held, atol=1e-9)
    assert np.all(later < HOME + 0.3 - 0.05)  # stopped well before the goal
    assert backend.snapshot("gp7").lifecycle_state == "ACTIVE"


def test_feedback_over_grpc_is_in_the_requested_joint_order(stub: controller_pb2_grpc.ControllerServiceStub) -> None:
    names = list(reversed(GP7.joint_names))
    target = HOME + np.arange(6) * 0.02
    request = _request([TrajectoryPoint(target[::-1].tolist(), 0.5)], joint_names=names)
    last = list(stub.FollowTrajectory(request, timeout=10))[-1]
    assert last.result.code == controller_pb2.TRAJECTORY_RESULT_SUCCESSFUL
    np.testing.assert_allclose(codec.decode_tensor(last.actual), target[::-1], atol=0.01)
    np.testing.assert_allclose(codec.decode_tensor(last.desired), target[::-1], atol=1e-9)
