"""Joint-trajectory goals for the controller service, as ros2's FollowJointTrajectory has them.

A goal is checked on the caller's thread (``check_trajectory_goal``: every field named
when it is wrong, nothing moves), then run by the backend on the ticking thread; the
caller follows it through a ``TrajectoryHandle``: a bounded, drop-oldest feedback queue
ending with a ``TrajectoryResult``.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from testbed.control import JointTrajectory, TrajectoryPoint
from testbed.errors import ControllerError, InvalidCommand

if TYPE_CHECKING:
    from testbed.bridge.controller_backend import RobotDescription

MAX_TRAJECTORY_POINTS = 10_000
MAX_TRAJECTORY_S = 600.0
DEFAULT_PATH_TOLERANCE = 0.1  # rad or m, per joint
DEFAULT_GOAL_TOLERANCE = 0.01  # rad or m, per joint
DEFAULT_GOAL_TIME_TOLERANCE_S = 0.5


class TrajectoryResultCode(enum.Enum):
    """How a trajectory goal ended (``testbed.v1.TrajectoryResultCode``)."""

    SUCCESSFUL = "successful"
    INVALID_GOAL = "invalid_goal"  # refused when it was to start: robot not ACTIVE or running a job
    PATH_TOLERANCE_VIOLATED = "path_tolerance_violated"
    GOAL_TOLERANCE_VIOLATED = "goal_tolerance_violated"
    PREEMPTED = "preempted"  # a new trajectory, a set-point stream or a job took the robot over
    ABORTED = "aborted"  # the controller stopped or faulted, the caller cancelled, or the clock restarted


@dataclass(frozen=True)
class TrajectoryResult:
    """The end of a trajectory goal: a code and a sentence saying what happened."""

    code: TrajectoryResultCode
    text: str


@dataclass(frozen=True)
class TrajectoryFeedback:
    """One feedback item of a trajectory goal; arrays are float64 ``(joints,)`` in the goal's joint order.

    Args:
        t_s: controller time of the cycle the item describes.
        time_from_start_s: ``t_s`` minus the time the trajectory started.
        desired: the trajectory at ``time_from_start_s``.
        actual: measured positions (the set-point when the cell reports none).
        error: ``desired - actual``.
        result: set on the last item of the goal only.
    """

    t_s: float
    time_from_start_s: float
    desired: np.ndarray
    actual: np.ndarray
    error: np.ndarray
    result: TrajectoryResult | None = None


class TrajectoryHandle:
    """A caller's view of one trajectory goal: feedback items, the last one carrying the result.

    The ticking thread puts items into a bounded queue and never waits: when the caller
    falls behind, the oldest feedback is dropped (counted in ``dropped``); the final item
    is never dropped. Safe to use from any thread.

    Args:
        robot: robot name.
        joint_names: the goal's joint order (feedback arrays follow it).
        max_queued: feedback items kept for the caller.
    """

    def __init__(self, robot: str, joint_names: tuple[str, ...], max_queued: int = 64) -> None:
        self.robot = robot
        self.joint_names = joint_names
        self._items: deque[TrajectoryFeedback] = deque()
        self._max = max(1, int(max_queued))
        self._final: TrajectoryFeedback | None = None
        self._final_taken = False
        self._dropped = 0
        self._cancel = False
        self._cv = threading.Condition()

    @property
    def dropped(self) -> int:
        """Feedback items dropped because the caller read too slowly."""
        with self._cv:
            return self._dropped

    @property
    def result(self) -> TrajectoryResult | None:
        """The result once the goal ended, else None."""
        with self._cv:
            return self._final.result if self._final is not None else None

    @property
    def cancel_requested(self) -> bool:
        """True once ``cancel`` was called."""
        with self._cv:
            return self._cancel

    def get(self, timeout_s: float | None = None) -> TrajectoryFeedback | None:
        """The next feedback item, waiting up to ``timeout_s`` (None: no limit); None on timeout.

        The item whose ``result`` is set comes last; once it was returned, ``get`` returns it again.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cv:
            while not self._items and self._final is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cv.wait(left)
            if self._items:
                return self._items.popleft()
            self._final_taken = True
            return self._final

    def cancel(self) -> None:
        """Stop the goal: at the next cycle the robot holds at its set-point and the goal ends ABORTED.

        No effect once the goal ended.
        """
        with self._cv:
            self._cancel = True

    # called by the ticking thread only
    def _push(self, item: TrajectoryFeedback) -> None:
        with self._cv:
            if len(self._items) >= self._max:
                self._items.popleft()
                self._dropped += 1
            self._items.append(item)
            self._cv.notify_all()

    def _finish(self, item: TrajectoryFeedback) -> None:
        with self._cv:
            self._final = item
            self._cv.notify_all()


@dataclass(frozen=True)
class TrajectoryGoal:
    """A checked goal; arrays in the robot's joint order, ``order[k]`` = robot joint of goal joint ``k``."""

    trajectory: JointTrajectory
    order: np.ndarray
    path_tolerance: np.ndarray
    goal_tolerance: np.ndarray
    goal_time_tolerance_s: float



def feedback(
    t_s: float, since_s: float, desired: np.ndarray, actual: np.ndarray, result: TrajectoryResult | None
) -> TrajectoryFeedback:
    desired = np.array(desired, dtype=np.float64)
    actual = np.array(actual, dtype=np.float64)
    return TrajectoryFeedback(float(t_s), float(since_s), desired, actual, desired - actual, result)


def check_trajectory_goal(
    desc: RobotDescription,
    points: Sequence[TrajectoryPoint],
    *,
    joint_names: Sequence[str] | None = None,
    path_tolerance: Sequence[float] | None = None,
    goal_tolerance: Sequence[float] | None = None,
    goal_time_tolerance_s: float | None = None,
) -> TrajectoryGoal:
    """Check a trajectory goal for ``desc``; see ``ControlLoopBackend.follow_trajectory``.

    Raises:
        InvalidCommand: naming the field (``points[i].positions[j]``, ``joint_names[k]``, ...).
    """
    n = desc.n_joints
    order = _joint_order(desc, joint_names)
    names = [desc.joint_names[j] for j in order]
    if not points:
        raise InvalidCommand(f"points: robot {desc.name!r}: a trajectory needs at least one point")
    if len(points) > MAX_TRAJECTORY_POINTS:
        raise InvalidCommand(f"points: at most {MAX_TRAJECTORY_POINTS} points, got {len(points)}")
    kind = None
    last_t = 0.0
    robot_points = []
    limits = {"velocities": desc.velocity_max[order], "accelerations": desc.acceleration_max[order]}
    for i, point in enumerate(points):
        fields: dict[str, np.ndarray | None] = {}
        for field in ("positions", "velocities", "accelerations"):
            raw = getattr(point, field)
            if raw is None or (field != "positions" and len(raw) == 0):
                fields[field] = None
                continue
            arr = np.asarray(raw, dtype=np.float64)
            if arr.shape != (n,):
                raise InvalidCommand(
                    f"points[{i}].{field}: robot {desc.name!r} has {n} joints ({', '.join(names)}): "
                    f"expected {n} values{'' if field == 'positions' else ' or none'}, got {len(raw)}"
                )
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                j = int(bad[0])
                raise InvalidCommand(f"points[{i}].{field}[{j}] ({names[j]}): NaN or inf; every value must be finite")
            if field == "positions":
                lo, hi = desc.lower[order], desc.upper[order]
                out = np.flatnonzero((arr < lo) | (arr > hi))
                if out.size:
                    j = int(out[0])
                    raise InvalidCommand(
                        f"points[{i}].positions[{j}] ({names[j]}): {arr[j]:.6g} is outside the joint range "
                        f"[{lo[j]:.6g}, {hi[j]:.6g}]"
                    )
            else:
                over = np.flatnonzero(np.abs(arr) > limits[field])
                if over.size:
                    j = int(over[0])
                    raise InvalidCommand(
                        f"points[{i}].{field}[{j}] ({names[j]}): |{arr[j]:.6g}| exceeds the joint's limit "
                        f"{limits[field][j]:.6g}"
                    )
            fields[field] = arr
        if fields["accelerations"] is not None and fields["velocities"] is None:
            raise InvalidCommand(f"points[{i}].accelerations: given without velocities; quintic points need both")
        this = "quintic" if fields["accelerations"] is not None else "cubic" if fields["velocities"] is not None \
            else "linear"
        if kind is not None and this != kind:
            raise InvalidCommand(
                f"points[{i}]: carries the fields of a {this} point but points[0] those of a {kind} one; "
                "give every point the same fields (positions; + velocities; + accelerations)"
            )
        kind = this
        t = float(point.time_from_start_s)
        if not (math.isfinite(t) and t > last_t):
            before = f"points[{i - 1}]'s {last_t:g} s" if i else "0"
            raise InvalidCommand(f"points[{i}].time_from_start_s: must be greater than {before}, got {t!r}")
        if t > MAX_TRAJECTORY_S:
            raise InvalidCommand(f"points[{i}].time_from_start_s: at most {MAX_TRAJECTORY_S:g} s, got {t:g}")
        last_t = t
        robot_points.append(
            TrajectoryPoint(
                positions=_to_robot_order(fields["positions"], order).tolist(),  # type: ignore[arg-type]
                time_from_start_s=t,
                velocities=_optional_to_robot_order(fields["velocities"], order),
                accelerations=_optional_to_robot_order(fields["accelerations"], order),
            )
        )
    path = _tolerance("path_tolerance", path_tolerance, DEFAULT_PATH_TOLERANCE, n, names)
    goal = _tolerance("goal_tolerance", goal_tolerance, DEFAULT_GOAL_TOLERANCE, n, names)
    goal_time = DEFAULT_GOAL_TIME_TOLERANCE_S if goal_time_tolerance_s is None else float(goal_time_tolerance_s)
    if not (math.isfinite(goal_time) and goal_time >= 0):
        raise InvalidCommand(f"goal_time_tolerance_s: expected a finite time >= 0 s, got {goal_time_tolerance_s!r}")
    try:
        trajectory = JointTrajectory(robot_points, n)
    except ControllerError as exc:  # checked above; kept so no goal the controller refuses gets through
        raise InvalidCommand(f"points: {exc}") from exc
    return TrajectoryGoal(
        trajectory=trajectory,
        order=order,
        path_tolerance=_to_robot_order(path, order),
        goal_tolerance=_to_robot_order(goal, order),
        goal_time_tolerance_s=goal_time,
    )


def _joint_order(desc: RobotDescription, joint_names: Sequence[str] | None) -> np.ndarray:
    if not joint_names:
        return np.arange(desc.n_joints)
    index = {name: j for j, name in enumerate(desc.joint_names)}
    known = ", ".join(desc.joint_names)
    seen: set[str] = set()
    for k, name in enumerate(joint_names):
        if name not in index:
            raise InvalidCommand(f"joint_names[{k}]: robot {desc.name!r} has no joint {name!r} (joints: {known})")
        if name in seen:
            raise InvalidCommand(f"joint_names[{k}]: joint {name!r} is named twice; name each joint once")
        seen.add(name)
    if len(joint_names) != desc.n_joints:
        missing = ", ".join(n for n in desc.joint_names if n not in seen)
        raise InvalidCommand(
            f"joint_names: robot {desc.name!r} has {desc.n_joints} joints; name each once or none (missing: {missing})"
        )
    return np.array([index[name] for name in joint_names])


def _to_robot_order(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[order] = values
    return out


def _optional_to_robot_order(values: np.ndarray | None, order: np.ndarray) -> list[float] | None:
    return None if values is None else _to_robot_order(values, order).tolist()


def _tolerance(
    field: str, values: Sequence[float] | None, default: float, n: int, names: Sequence[str]
) -> np.ndarray:
    if values is None or len(values) == 0:
        return np.full(n, default)
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise InvalidCommand(
            f"{field}: expected {n} values (one per joint: {', '.join(names)}) or none, got {len(values)}"
        )
    nan = np.flatnonzero(np.isnan(arr))
    if nan.size:
        j = int(nan[0])
        raise InvalidCommand(f"{field}[{j}] ({names[j]}): NaN; use > 0, 0 for the default or < 0 for unchecked")
    # ros2's convention: 0 takes the default, a negative value leaves the joint unchecked
    return np.where(arr > 0, arr, np.where(arr == 0, default, np.inf))


