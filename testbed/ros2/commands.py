"""Trajectories in: each robot's ``joint_trajectory`` topic, as ros2_control's joint_trajectory_controller has it.

A message is checked and queued through the controller backend (the same hand-off, limits,
tolerances and safety as the ControllerService's ``FollowTrajectory``); a malformed or
out-of-limit one is refused before anything moves, with a ``command_rejected`` event naming the
field. As with the joint_trajectory_controller's topic interface, a new trajectory replaces the
one running and an empty one stops it (the robot holds). How each trajectory ended becomes a
``trajectory_end`` event. Callbacks run on the node's executor thread and never wait for a cycle;
``poll`` runs on its publishing thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from testbed.bridge.trajectory_goals import TrajectoryHandle
from testbed.control import TrajectoryPoint
from testbed.errors import ControllerError, InvalidCommand
from testbed.ros2 import qos
from testbed.ros2.names import TopicNames
from testbed.ros2.outbox import Outbox
from testbed.ros2.spec import RobotSpec


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


def points_of(msg: Any) -> list[TrajectoryPoint]:
    """The points of a ``trajectory_msgs/JointTrajectory`` (empty velocities/accelerations mean none)."""
    out = []
    for p in msg.points:
        t = p.time_from_start.sec + p.time_from_start.nanosec * 1e-9
        out.append(TrajectoryPoint(positions=list(p.positions), time_from_start_s=t,
                                   velocities=list(p.velocities) or None,
                                   accelerations=list(p.accelerations) or None))
    return out


class TrajectoryCommands:
    """Subscribes every robot's ``joint_trajectory`` on ``node`` and runs what it receives through ``backend``.

    Args:
        node: the run's rclpy node.
        names: topic names.
        robots: every robot of the cell; those not ``commandable`` refuse trajectories with an event.
        backend: the controller backend the run ticks.
        outbox: where events for the run go.
    """

    def __init__(self, node: Any, names: TopicNames, robots: Sequence[RobotSpec], backend: TrajectoryBackend,
                 outbox: Outbox) -> None:
        from trajectory_msgs.msg import JointTrajectory

        self._backend = backend
        self._outbox = outbox
        self._lock = threading.Lock()  # the executor thread adds trajectories, the publishing thread reports ends
        self._running: dict[str, _Running] = {}
        self._ended: list[_Running] = []  # replaced ones whose result is still to be reported
        self.subscriptions = [
            node.create_subscription(JointTrajectory, names.joint_trajectory(robot.name),
                                     partial(self._on_trajectory, robot), qos.STATE)
            for robot in robots
        ]

    def commanding(self, robot: str) -> bool:
        """True while a trajectory from the ROS 2 graph drives ``robot``."""
        run = self._running.get(robot)
        return run is not None and run.handle.result is None

    def _on_trajectory(self, robot: RobotSpec, msg: Any) -> None:
        topic = "joint_trajectory"
        if not robot.commandable:
            self._outbox.put("command_rejected", robot.name, command=topic, reason=(
                f"robot {robot.name!r} is not driven from ROS 2: mark it external: true, or set ros2.commands: all"))
            return
        if not msg.points:
            run = self._running.get(robot.name)
            if run is not None and run.handle.result is None:
                run.handle.cancel()  # joint_trajectory_controller: an empty trajectory stops; the robot holds
            return
        try:
            points = points_of(msg)
            handle = self._backend.follow_trajectory(robot.name, points, joint_names=list(msg.joint_names) or None)
        except (InvalidCommand, ControllerError) as exc:
            self._outbox.put("command_rejected", robot.name, command=topic, reason=str(exc))
            return
        duration = points[-1].time_from_start_s
        with self._lock:
            previous = self._running.get(robot.name)
            if previous is not None:
                self._ended.append(previous)  # the backend preempts it; its end is reported when it comes
            self._running[robot.name] = _Running(robot.name, handle, len(points), duration)
        self._outbox.put("trajectory_accepted", robot.name, command=topic, points=len(points),
                         duration_s=round(duration, 6), joint_names=list(handle.joint_names))

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
            self._outbox.put("trajectory_end", run.robot, command="joint_trajectory", result=result.code.value,
                             text=result.text, points=run.points, duration_s=round(run.duration_s, 6))
