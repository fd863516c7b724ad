"""Trajectories in: each robot's ``joint_trajectory`` topic, as ros2_control's joint_trajectory_controller has it.

The node's process turns each message into plain points (``points_of``) and hands them to the run's
process, where ``TrajectoryCommands`` checks and queues them through the controller backend (the same
hand-off, limits, tolerances and safety as the ControllerService's ``FollowTrajectory``). A malformed or
out-of-limit trajectory is refused before anything moves, with a ``command_rejected`` event naming the
field. As with the joint_trajectory_controller's topic interface, a new trajectory replaces the one
running and an empty one stops it (the robot holds). How each trajectory ended becomes a
``trajectory_end`` event. Nothing here waits for a control cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from testbed.bridge.trajectory_goals import TrajectoryHandle
from testbed.control import TrajectoryPoint
from testbed.errors import ControllerError, InvalidCommand
from testbed.ros2.outbox import Outbox
from testbed.ros2.spec import RobotSpec

TOPIC = "joint_trajectory"

#: a trajectory as it crosses between the processes: (time_from_start_s, positions, velocities, accelerations)
PlainPoint = tuple[float, list[float], list[float], list[float]]


class TrajectoryBackend(Protocol):
    """What commands need of ``testbed.bridge.controller_backend.ControlLoopBackend``."""

    def follow_trajectory(self, robot: str, points: Sequence[TrajectoryPoint], *,
                          joint_names: Sequence[str] | None = None) -> TrajectoryHandle: ...


@dataclass
class _Running:
    robot: str
    handle: TrajectoryHandle
    points: int
    duration_s: float


def points_of(msg: Any) -> list[PlainPoint]:
    """The points of a ``trajectory_msgs/JointTrajectory`` as plain lists (empty velocities/accelerations: none)."""
    return [(p.time_from_start.sec + p.time_from_start.nanosec * 1e-9, list(p.positions), list(p.velocities),
             list(p.accelerations)) for p in msg.points]


class TrajectoryCommands:
    """Runs trajectories received from the ROS 2 graph through ``backend`` (in the run's process).

    Args:
        robots: every robot of the cell; those not ``commandable`` refuse trajectories with an event.
        backend: the controller backend the run ticks.
        outbox: where events for the run go.
    """

    def __init__(self, robots: Sequence[RobotSpec], backend: TrajectoryBackend, outbox: Outbox) -> None:
        self._robots = {r.name: r for r in robots}
        self._backend = backend
        self._outbox = outbox
        self._lock = threading.Lock()  # trajectories arrive on one thread, their ends are polled on another
        self._running: dict[str, _Running] = {}
        self._ended: list[_Running] = []  # replaced ones whose result is still to be reported

    def commanding(self, robot: str) -> bool:
        """True while a trajectory from the ROS 2 graph drives ``robot`` (any thread, never waits)."""
        run = self._running.get(robot)
        return run is not None and run.handle.result is None

    def on_trajectory(self, robot_name: str, joint_names: Sequence[str], points: Sequence[PlainPoint]) -> None:
        """A ``joint_trajectory`` message for ``robot_name``: start it, stop (no points) or refuse it."""
        robot = self._robots.get(robot_name)
        if robot is None or not robot.commandable:
            self._outbox.put("command_rejected", robot_name, command=TOPIC, reason=(
                f"robot {robot_name!r} is not driven from ROS 2: mark it external: true, or set ros2.commands: all"))
            return
        if not points:
            self._stop(robot_name)
            return
        try:
            plain = [TrajectoryPoint(positions=list(pos), time_from_start_s=float(t), velocities=list(vel) or None,
                                     accelerations=list(acc) or None) for t, pos, vel, acc in points]
            handle = self._backend.follow_trajectory(robot_name, plain, joint_names=list(joint_names) or None)
        except (InvalidCommand, ControllerError) as exc:
            self._outbox.put("command_rejected", robot_name, command=TOPIC, reason=str(exc))
            return
        duration = float(points[-1][0])
        with self._lock:
            previous = self._running.get(robot_name)
            if previous is not None:
                self._ended.append(previous)  # the backend preempts it; its end is reported when it comes
            self._running[robot_name] = _Running(robot_name, handle, len(points), duration)
        self._outbox.put("trajectory_accepted", robot_name, command=TOPIC, points=len(points),
                         duration_s=round(duration, 6), joint_names=list(handle.joint_names))

    def _stop(self, robot_name: str) -> None:
        with self._lock:
            run = self._running.pop(robot_name, None)
        if run is not None and run.handle.result is None:
            # joint_trajectory_controller: an empty trajectory stops; the robot holds. A goal cancelled before
            # its first cycle never reports an end, so the end is reported here
            run.handle.cancel()
            self._outbox.put("trajectory_end", robot_name, command=TOPIC, result="aborted",
                             text="stopped by an empty trajectory; the robot holds", points=run.points,
                             duration_s=round(run.duration_s, 6))

    def poll(self) -> None:
        """Report trajectories that ended since the last call (``trajectory_end``: result code and text)."""
        with self._lock:
            finished = [r for r in self._ended if r.handle.result is not None]
            self._ended = [r for r in self._ended if r.handle.result is None]
            for name, run in list(self._running.items()):
                if run.handle.result is not None:
                    finished.append(run)
                    del self._running[name]
        for run in finished:
            result = run.handle.result
            assert result is not None
            self._outbox.put("trajectory_end", run.robot, command=TOPIC, result=result.code.value,
                             text=result.text, points=run.points, duration_s=round(run.duration_s, 6))
