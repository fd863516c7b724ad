"""A ROS 2 user's process for the integration tests: rclpy and message packages only, never ``testbed``.

    python ros2_peer.py topics --out result.json [--seconds 60]
    python ros2_peer.py trajectory --robot arm1 --out result.json
    python ros2_peer.py lifecycle --robot arm1 --out result.json

Each mode prints ``ready`` once its subscriptions exist, does its part while the run goes on, and
writes what it saw as JSON to ``--out`` when the run's ``run_end`` event arrives (or at the timeout).
The domain and discovery range come from the environment (``ROS_DOMAIN_ID``,
``ROS_AUTOMATIC_DISCOVERY_RANGE``), as for any ROS 2 process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import rclpy
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

NS = "/cell"
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
BEST_EFFORT = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)


def _ns(stamp: Any) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class Peer:
    """Records what the run publishes; ``spin_until`` runs the node until a condition or the run's end."""

    def __init__(self, robot: str) -> None:
        self.node = Node("peer")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.robot = robot
        self.joint_states: list[dict[str, Any]] = []
        self.clock_ns: list[int] = []
        self.tf_frames: set[str] = set()
        self.tf_static_frames: set[str] = set()
        self.events: list[dict[str, Any]] = []
        self.diagnostics: list[dict[str, str]] = []
        self.description = ""
        self.topics: dict[str, list[str]] = {}
        self.ready: set[str] = set()
        self.images: list[dict[str, Any]] = []
        self.camera_info = 0
        sub = self.node.create_subscription
        sub(JointState, f"{NS}/{robot}/joint_states", self._on_joint_state, RELIABLE)
        sub(Clock, "/clock", lambda m: self.clock_ns.append(_ns(m.clock)), BEST_EFFORT)
        sub(TFMessage, "/tf", lambda m: self.tf_frames.update(f"{t.header.frame_id}>{t.child_frame_id}"
                                                               for t in m.transforms), RELIABLE)
        sub(TFMessage, "/tf_static", lambda m: self.tf_static_frames.update(
            f"{t.header.frame_id}>{t.child_frame_id}" for t in m.transforms), LATCHED)
        sub(String, f"{NS}/events", lambda m: self.events.append(json.loads(m.data)), RELIABLE)
        sub(String, f"{NS}/{robot}/robot_description", self._on_description, LATCHED)
        sub(DiagnosticArray, "/diagnostics", self._on_diagnostics, RELIABLE)
        sub(Image, f"{NS}/overhead/image_raw", self._on_image, BEST_EFFORT)
        sub(CameraInfo, f"{NS}/overhead/camera_info", self._on_camera_info, BEST_EFFORT)

    def _on_image(self, msg: Image) -> None:
        self.images.append({"ns": _ns(msg.header.stamp), "frame_id": msg.header.frame_id, "width": msg.width,
                            "height": msg.height, "encoding": msg.encoding, "bytes": len(msg.data)})

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info += 1

    def _on_joint_state(self, msg: JointState) -> None:
        self.joint_states.append({"ns": _ns(msg.header.stamp), "name": list(msg.name),
                                  "position": list(msg.position), "wall": time.monotonic()})

    def _on_description(self, msg: String) -> None:
        self.description = msg.data

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.hardware_id == self.robot:
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]

    def ended(self) -> bool:
        return "run_end" in self.kinds() or "run_aborted" in self.kinds()

    def spin_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
            if not self.ended():
                for name, types in self.node.get_topic_names_and_types():
                    self.topics[name] = types
            if done():
                return True
        return False

    def call(self, client: Any, request: Any, timeout_s: float = 10.0) -> Any:
        if client.srv_name not in self.ready:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise RuntimeError(f"service {client.srv_name} did not appear")
            # the request path is matched; DDS matches the reply path separately, and a reply sent before
            # that is lost: give it a moment
            self.spin_until(lambda: False, 0.5)
            self.ready.add(client.srv_name)
        future = client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=timeout_s)
        if not future.done():
            raise RuntimeError(f"service {client.srv_name} did not answer within {timeout_s} s")
        return future.result()

    def result(self, **extra: Any) -> dict[str, Any]:
        return {"joint_states": self.joint_states, "clock_ns": self.clock_ns, "tf": sorted(self.tf_frames),
                "tf_static": sorted(self.tf_static_frames), "events": self.events, "topics": self.topics,
                "description": self.description, "diagnostics": self.diagnostics[-20:], "images": self.images[:50],
                "camera_info": self.camera_info, **extra}


def trajectory(names: list[str], points: list[tuple[float, list[float]]]) -> JointTrajectory:
    msg = JointTrajectory()
    msg.joint_names = names
    for t, positions in points:
        p = JointTrajectoryPoint()
        p.positions = [float(v) for v in positions]
        p.time_from_start = Duration(sec=int(t), nanosec=round((t - int(t)) * 1e9))
        msg.points.append(p)
    return msg


def run_topics(peer: Peer, args: argparse.Namespace) -> dict[str, Any]:
    peer.spin_until(peer.ended, args.seconds)
    return peer.result()


def _wait_for_commands(peer: Peer, pub: Any, timeout_s: float) -> None:
    if not peer.spin_until(lambda: pub.get_subscription_count() > 0 and bool(peer.joint_states), timeout_s):
        raise RuntimeError("the run's joint_trajectory subscription or joint_states did not appear")


def _event(peer: Peer, kind: str, after: int) -> Callable[[], dict[str, Any] | None]:
    def found() -> dict[str, Any] | None:
        return next((e for e in peer.events[after:] if e["kind"] == kind), None)
    return found


def run_trajectory(peer: Peer, args: argparse.Namespace) -> dict[str, Any]:
    pub = peer.node.create_publisher(JointTrajectory, f"{NS}/{args.robot}/joint_trajectory", RELIABLE)
    _wait_for_commands(peer, pub, args.seconds)
    names = peer.joint_states[-1]["name"]
    start = peer.joint_states[-1]["position"]
    seen = len(peer.events)
    bad = list(start)
    bad[0] = 10.0  # far outside any joint's range
    pub.publish(trajectory(names, [(1.0, bad)]))
    peer.spin_until(lambda: _event(peer, "command_rejected", seen)() is not None, 20.0)
    target = [q + (0.3 if i < 3 else 0.0) for i, q in enumerate(start)]
    seen = len(peer.events)
    pub.publish(trajectory(names, [(0.75, [(a + b) / 2 for a, b in zip(start, target, strict=True)]),
                                   (1.5, target)]))
    peer.spin_until(lambda: _event(peer, "trajectory_end", seen)() is not None, 30.0)
    peer.spin_until(peer.ended, args.seconds)
    return peer.result(start=start, target=target)


def run_lifecycle(peer: Peer, args: argparse.Namespace) -> dict[str, Any]:
    node, base = peer.node, f"{NS}/{args.robot}/controller"
    change = node.create_client(ChangeState, f"{base}/change_state")
    get = node.create_client(GetState, f"{base}/get_state")
    clear = node.create_client(Trigger, f"{base}/clear_stop")
    pub = node.create_publisher(JointTrajectory, f"{NS}/{args.robot}/joint_trajectory", RELIABLE)
    _wait_for_commands(peer, pub, args.seconds)
    steps: dict[str, Any] = {"state_before": peer.call(get, GetState.Request()).current_state.label}
    names, start = peer.joint_states[-1]["name"], peer.joint_states[-1]["position"]
    # a slow move, so the robot is moving when it is deactivated
    target = [q + (0.6 if i < 2 else 0.0) for i, q in enumerate(start)]
    pub.publish(trajectory(names, [(4.0, target)]))
    seen = len(peer.events)
    peer.spin_until(lambda: _event(peer, "trajectory_accepted", seen)() is not None, 20.0)
    peer.spin_until(lambda: False, 0.6)
    request = ChangeState.Request()
    request.transition.id = Transition.TRANSITION_DEACTIVATE
    steps["deactivate"] = peer.call(change, request).success
    steps["state_inactive"] = peer.call(get, GetState.Request()).current_state.label
    steps["inactive_from"] = len(peer.joint_states)
    peer.spin_until(lambda: False, 1.5)
    steps["inactive_to"] = len(peer.joint_states)
    bad = ChangeState.Request()
    bad.transition.id = Transition.TRANSITION_CONFIGURE  # not a transition from inactive: refused, not fatal
    steps["configure_from_inactive"] = peer.call(change, bad).success
    steps["clear_stop_without_stop"] = peer.call(clear, Trigger.Request()).success
    request.transition.id = Transition.TRANSITION_ACTIVATE
    steps["activate"] = peer.call(change, request).success
    steps["state_active"] = peer.call(get, GetState.Request()).current_state.label
    moved_from = len(peer.joint_states)
    here = peer.joint_states[-1]["position"]
    pub.publish(trajectory(names, [(1.0, [q - (0.2 if i == 0 else 0.0) for i, q in enumerate(here)])]))
    seen = len(peer.events)
    peer.spin_until(lambda: _event(peer, "trajectory_end", seen)() is not None, 30.0)
    steps["moved_from"] = moved_from
    peer.spin_until(peer.ended, args.seconds)
    return peer.result(steps=steps)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("topics", "trajectory", "lifecycle"))
    parser.add_argument("--robot", default="arm1")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    rclpy.init()
    peer = Peer(args.robot)
    print("ready", flush=True)
    try:
        result = {"topics": run_topics, "trajectory": run_trajectory, "lifecycle": run_lifecycle}[args.mode](peer, args)
    except Exception as exc:
        result = {**peer.result(), "error": f"{type(exc).__name__}: {exc}"}
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    peer.node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
