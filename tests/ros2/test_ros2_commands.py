"""joint_trajectory messages in: checked through the controller backend, refusals and ends as run events.

The messages are turned into plain points as the node's process does (``points_of``), then handed to
``TrajectoryCommands`` as the run's process does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from testbed.bridge.controller_backend import ControlLoopBackend, TickerThread
from testbed.control import ControlLoop
from testbed.robots import load_robot
from testbed.ros2.commands import TrajectoryCommands, points_of
from testbed.ros2.outbox import Outbox, RunEvent
from testbed.ros2.spec import RobotSpec

GP7 = load_robot("gp7")
HOME = np.asarray(GP7.home, dtype=np.float64)


def spec(name: str, commandable: bool) -> RobotSpec:
    return RobotSpec(name, "gp7", GP7.urdf_path, tuple(GP7.joint_names), GP7.tcp_link, (0.0, 0.0, 0.3),
                     (0.0, 0.0, 0.0), commandable=commandable)


def message(points: list[tuple[float, list[float]]], names: list[str] | None = None) -> JointTrajectory:
    msg = JointTrajectory()
    msg.joint_names = names if names is not None else list(GP7.joint_names)
    for t, q in points:
        p = JointTrajectoryPoint()
        p.positions = [float(v) for v in q]
        p.time_from_start = Duration(sec=int(t), nanosec=round((t % 1) * 1e9))
        msg.points.append(p)
    return msg


def send(cmds: TrajectoryCommands, robot: str, msg: JointTrajectory) -> None:
    """What the node's process does with a message on ``robot``'s joint_trajectory topic."""
    cmds.on_trajectory(robot, list(msg.joint_names), points_of(msg))


@pytest.fixture()
def commands() -> Iterator[tuple[TrajectoryCommands, Outbox]]:
    loop = ControlLoop([GP7, GP7], 0.004)
    loop.reset(np.stack([HOME, HOME]))
    backend = ControlLoopBackend(loop, names=["ext", "policy"], job_loader=False)
    outbox = Outbox()
    cmds = TrajectoryCommands([spec("ext", True), spec("policy", False)], backend, outbox)
    with TickerThread(backend):
        yield cmds, outbox
    backend.close()


def events(outbox: Outbox) -> list[RunEvent]:
    out: list[RunEvent] = []
    outbox.drain(out.append)
    return out


def wait_for_end(cmds: TrajectoryCommands, outbox: Outbox, timeout_s: float = 10.0) -> list[RunEvent]:
    """Poll the commands until a ``trajectory_end`` event is out (or ``timeout_s`` passed); the end events."""
    deadline = time.monotonic() + timeout_s
    ended: list[RunEvent] = []
    while not ended and time.monotonic() < deadline:
        cmds.poll()
        ended = [e for e in events(outbox) if e.kind == "trajectory_end"]
        threading.Event().wait(0.02)
    return ended


def test_a_robot_not_driven_from_ros2_refuses_trajectories(commands: Any) -> None:
    cmds, outbox = commands
    send(cmds, "policy", message([(1.0, list(HOME))]))
    (event,) = events(outbox)
    assert event.kind == "command_rejected" and event.robot == "policy"
    assert "ros2.commands: all" in event.fields["reason"] and event.fields["source"] == "ros2"


@pytest.mark.parametrize(("points", "names", "expected"), [
    ([(1.0, [0.0] * 5)], None, r"expected 6 values"),
    ([(1.0, [9.0] + [0.0] * 5)], None, r"points\[0\].positions\[0\] \(joint_1\): 9 is outside the joint range"),
    ([(1.0, [0.0] * 6), (0.5, [0.0] * 6)], None, r"points\[1\].time_from_start_s: must be greater"),
    ([(1.0, [0.0] * 6)], ["joint_1"] * 6, r"joint_names\[1\]: joint 'joint_1' is named twice"),
])
def test_malformed_trajectories_are_refused_before_anything_moves(commands: Any, points: Any, names: Any,
                                                                 expected: str) -> None:
    cmds, outbox = commands
    send(cmds, "ext", message(points, names))
    (event,) = events(outbox)
    assert event.kind == "command_rejected"
    assert pytest.importorskip("re").search(expected, event.fields["reason"]), event.fields["reason"]
    assert not cmds.commanding("ext")


def test_a_trajectory_runs_and_its_end_is_reported(commands: Any) -> None:
    cmds, outbox = commands
    target = list(HOME + 0.05)
    send(cmds, "ext", message([(0.3, target)]))
    assert cmds.commanding("ext")
    assert [e.kind for e in events(outbox)] == ["trajectory_accepted"]
    ended = wait_for_end(cmds, outbox)
    assert ended and ended[0].fields["result"] == "successful", ended
    assert not cmds.commanding("ext")


def test_an_empty_trajectory_stops_the_one_running(commands: Any) -> None:
    cmds, outbox = commands
    send(cmds, "ext", message([(5.0, list(HOME + 0.3))]))
    send(cmds, "ext", message([]))
    ended = wait_for_end(cmds, outbox)
    assert ended and ended[0].fields["result"] == "aborted"
