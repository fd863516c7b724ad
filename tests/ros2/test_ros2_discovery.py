"""The node's reach: loopback unless the launch file says subnet, and then it takes no commands.

Real node processes on a ``ControlLoopBackend`` ticked by a ``TickerThread``; the environment is read from
the running node process (``/proc/<pid>/environ``), the lifecycle client is another rclpy context.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from testbed.bridge.controller_backend import ControlLoopBackend, TickerThread
from testbed.control import ControlLoop
from testbed.errors import TestbedError
from testbed.eval.events import EventStream
from testbed.robots import load_robot
from testbed.ros2 import CellSpec, RobotSpec, Ros2Bridge, Ros2Settings

GP7 = load_robot("gp7")
DOMAIN = 1 + (os.getpid() * 7 + 70) % 100


def spec(commandable: bool) -> RobotSpec:
    return RobotSpec("arm1", "gp7", GP7.urdf_path, tuple(GP7.joint_names), GP7.tcp_link, (0.0, 0.0, 0.3),
                     (0.0, 0.0, 0.0), commandable=commandable)


def backend() -> ControlLoopBackend:
    loop = ControlLoop([GP7], 0.004)
    loop.reset(np.asarray(GP7.home, dtype=np.float64)[None, :].copy())
    return ControlLoopBackend(loop, names=["arm1"], job_loader=False)


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_the_node_process_is_loopback_only_whatever_the_run_inherits(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")
    monkeypatch.setenv("ROS_STATIC_PEERS", "192.0.2.7")
    back = backend()
    events = EventStream(tmp_path / "events.jsonl")
    with TickerThread(back), Ros2Bridge(Ros2Settings(domain_id=DOMAIN), CellSpec("unit", (spec(True),)), events,
                                        back) as bridge:
        env = environ_of(bridge._process.pid)
    back.close()
    events.close()
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert "ROS_STATIC_PEERS" not in env  # a static peer would reach the node from another host
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"  # the run's own environment is untouched


def test_a_subnet_node_for_a_robot_that_takes_commands_is_refused(tmp_path: Path) -> None:
    events = EventStream(tmp_path / "events.jsonl")
    back = backend()
    with pytest.raises(TestbedError, match=r"ros2.discovery_range: subnet would let any host .* command arm1"):
        Ros2Bridge(Ros2Settings(domain_id=DOMAIN, discovery_range="subnet"), CellSpec("unit", (spec(True),)),
                   events, back)
    back.close()
    events.close()


def test_a_subnet_node_only_publishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the subnet: SUBNET in its process, no joint_trajectory subscription, lifecycle requests refused."""
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from rclpy.executors import SingleThreadedExecutor

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # the client stays on this host
    back = backend()
    events = EventStream(tmp_path / "events.jsonl")
    settings = Ros2Settings(domain_id=DOMAIN, discovery_range="subnet")
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    node = rclpy.create_node("discovery_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        with TickerThread(back), Ros2Bridge(settings, CellSpec("unit", (spec(False),)), events, back) as bridge:
            assert environ_of(bridge._process.pid)["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
            assert back.wait_cycles(5, timeout_s=5.0)
            change = node.create_client(ChangeState, "/cell/arm1/controller/change_state")
            assert change.wait_for_service(timeout_sec=20.0)
            executor.spin_once(timeout_sec=0.5)  # the reply path matches separately
            request = ChangeState.Request()
            request.transition.id = Transition.TRANSITION_DEACTIVATE
            future = change.call_async(request)
            executor.spin_until_future_complete(future, timeout_sec=20.0)
            assert future.done() and future.result().success is False
            assert back.snapshot("arm1").lifecycle_state == "ACTIVE"  # the robot went on
            deadline = time.monotonic() + 5.0
            services = topics = set()
            while time.monotonic() < deadline:
                services = {name for name, _ in node.get_service_names_and_types()}
                topics = {name for name, _ in node.get_topic_names_and_types()}
                if "/cell/arm1/joint_states" in topics:
                    break
                executor.spin_once(timeout_sec=0.1)
            assert "/cell/arm1/joint_states" in topics  # it publishes
            assert "/cell/arm1/joint_trajectory" not in topics  # nobody listens for trajectories
            assert "/cell/arm1/controller/get_state" in services
            assert not {"/cell/arm1/controller/clear_stop", "/cell/arm1/controller/protective_stop"} & services
        reported: list = []
        bridge.outbox.drain(reported.append)
        refused = [e for e in reported if e.kind == "lifecycle_refused"]
        assert refused and "ros2.discovery_range: subnet" in refused[0].fields["reason"]
    finally:
        node.destroy_node()
        context.try_shutdown()
        back.close()
        events.close()
