"""The ROS 2 node's own process: rclpy, its executor and every publisher live here, away from the run's interpreter.

rclpy spends interpreter time on every wake-up and every message (~0.5 ms a wake-up, tens of
microseconds a publish); in the run's process that time would be taken from the control loop's
thread, which shares the interpreter lock. So the node runs in a child process
(``Ros2Bridge`` starts it): the run's process sends it, at ``rate_hz``, one ``Tick`` (the newest
snapshot, the events and camera frames since the last tick, the controllers' states) and it
publishes them; what the graph sends back (trajectories, lifecycle requests) goes to the run's
process, where the controller backend's hand-off checks and applies it.

Messages on the pipe (tuples, first item the kind):
    run -> node: ("start", settings, cell), ("tick", Tick), ("reply", request id, ok, state, error), ("close",)
    node -> run: ("ready",), ("trajectory", robot, joint_names, points), ("change_state", id, robot, transition),
                 ("report", kind, robot, fields), ("images", watched), ("error", text), ("closed", error or "")
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from testbed.errors import ControllerError
from testbed.robots import parse_urdf
from testbed.ros2.commands import points_of
from testbed.ros2.frames import LinkTransform, RobotFrames, camera_pose
from testbed.ros2.names import (
    CLOCK_TOPIC,
    DIAGNOSTICS_TOPIC,
    TF_STATIC_TOPIC,
    TF_TOPIC,
    WORLD_FRAME,
    RunClock,
    TopicNames,
    camera_frame,
    link_frame,
    stamp,
)
from testbed.ros2.node import NODE_NAMESPACE, node_name
from testbed.ros2.spec import CellSpec, RobotSpec

DIAGNOSTICS_PERIOD_S = 1.0
PARTS_PERIOD_S = 0.2
SPIN_TIMEOUT_S = 0.5  # the executor thread checks for the end this often when nothing arrives
FLUSH_TIMEOUT_S = 1.0  # at close, how long the last events may take to be acknowledged by subscribers
JOIN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ControllerState:
    """One controller's state as the run's backend published it (what the lifecycle nodes and diagnostics show)."""

    lifecycle_state: str
    last_error: str = ""
    job: str = ""
    speed_scale: float = 1.0
    following_trajectory: bool = False


@dataclass
class Tick:
    """What the run sends the node each tick.

    Args:
        snapshot: the run's newest snapshot, or None when it did not change since the last tick.
        events: events emitted since the last tick, in order.
        frames: camera frames since the last tick: (camera, sim seconds, episode, rgb ``(h, w, 3)`` uint8).
        controllers: robot -> its controller's state.
    """

    snapshot: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    frames: list[tuple[str, float, int | None, Any]] = field(default_factory=list)
    controllers: dict[str, ControllerState] = field(default_factory=dict)


class _Link:
    """The node's end of the pipe: sends from any thread, one at a time."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, *message: Any) -> None:
        with self._lock:
            self.conn.send(message)


class BackendProxy:
    """What the lifecycle nodes see of the run's controller backend: its last states, and requests by the pipe."""

    def __init__(self, link: _Link) -> None:
        self._link = link
        self.states: dict[str, ControllerState] = {}
        self._pending: dict[int, tuple[str, Future[str]]] = {}
        self._lock = threading.Lock()
        self._next = 0

    def snapshot(self, robot: str) -> ControllerState:
        """The robot's controller state as last sent (CREATED before the first tick)."""
        return self.states.get(robot, ControllerState("CREATED"))

    def change_state(self, robot: str, transition: Any) -> Future[str]:
        """Ask the run for a lifecycle change; the future gives the state after it, or fails with ControllerError."""
        future: Future[str] = Future()
        with self._lock:
            self._next += 1
            self._pending[self._next] = (robot, future)
            request = self._next
        self._link.send("change_state", request, robot, transition.name)
        return future

    def resolve(self, request: int, ok: bool, state: str, error: str) -> None:
        """The run's answer to request ``request``."""
        with self._lock:
            robot, future = self._pending.pop(request, ("", None))  # type: ignore[arg-type]
        # cancelled: the lifecycle node gave up waiting (a late answer must not kill this process's loop)
        if future is None or not future.set_running_or_notify_cancel():
            return
        if ok:
            old = self.snapshot(robot)
            self.states[robot] = ControllerState(state, old.last_error, old.job, old.speed_scale,
                                                 old.following_trajectory)
            future.set_result(state)
        else:
            future.set_exception(ControllerError(error))

    def fail_all(self, why: str) -> None:
        """The run is gone: every request waiting fails."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for _, future in pending.values():
            if future.set_running_or_notify_cancel():
                future.set_exception(ControllerError(why))


class _RobotOut:
    """One robot's publishers and reusable messages."""

    def __init__(self, node: Any, names: TopicNames, spec: RobotSpec) -> None:
        from geometry_msgs.msg import PoseStamped, TransformStamped
        from sensor_msgs.msg import JointState
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from testbed.ros2 import qos

        self.spec = spec
        self.frames = RobotFrames(parse_urdf(spec.urdf_path), spec.joint_names, spec.tcp_link, spec.base_xyz,
                                  spec.base_rpy_deg)
        self.joint_states = node.create_publisher(JointState, names.joint_states(spec.name), qos.STATE)
        self.joint_commands = node.create_publisher(JointTrajectory, names.joint_commands(spec.name), qos.STATE)
        self.tcp_pose = node.create_publisher(PoseStamped, names.tcp_pose(spec.name), qos.STATE)
        self.state_msg = JointState()
        self.state_msg.header.frame_id = spec.name
        self.state_msg.name = list(spec.joint_names)
        self.command_msg = JointTrajectory()
        self.command_msg.header.frame_id = spec.name
        self.command_msg.joint_names = list(spec.joint_names)
        self.command_point = JointTrajectoryPoint()
        self.command_msg.points = [self.command_point]
        self.pose_msg = PoseStamped()
        self.pose_msg.header.frame_id = WORLD_FRAME
        self.moving_msgs = []
        for t in self.frames.moving([0.0] * len(spec.joint_names)):
            msg = TransformStamped()
            msg.header.frame_id = link_frame(spec.name, t.parent)
            msg.child_frame_id = link_frame(spec.name, t.child)
            self.moving_msgs.append(msg)


class CellPublisher:
    """Every publisher of the run's node, and what it publishes from each ``Tick``."""

    def __init__(self, node: Any, names: TopicNames, cell: CellSpec, lifecycle_state: Any) -> None:
        self.cell = cell
        self.names = names
        self._lifecycle_state = lifecycle_state  # robot -> the ROS 2 lifecycle label of its controller node
        self._clock = RunClock()
        self._last_key: tuple[Any, Any] | None = None
        self._last_run_t = 0.0
        self._next_diagnostics = 0.0
        self._next_parts = 0.0
        self._controllers: dict[str, ControllerState] = {}
        self._make_publishers(node)
        self._publish_static()

    def publish(self, tick: Tick) -> bool:
        """Publish what ``tick`` brings; True when a controller's state changed since the last tick."""
        from std_msgs.msg import String

        for event in tick.events:
            if event.get("kind") == "episode_end" and event.get("episode") is not None:
                self._clock.episode_ended(int(event["episode"]), float(event["t"]))
            self._events_pub.publish(String(data=json.dumps(event, separators=(",", ":"), default=str)))
        snap = tick.snapshot
        if snap:
            key = (snap.get("episode"), snap.get("t"))
            run_t = self._clock.run_time(snap.get("episode"), float(snap.get("t", 0.0)))
            if key != self._last_key and run_t is not None:
                self._last_key = key
                self._publish_state(snap, run_t)
        for frame in tick.frames:
            self._publish_frame(*frame)
        changed = tick.controllers != self._controllers
        if changed:
            self._controllers = tick.controllers
            self._next_diagnostics = 0.0
        self._publish_diagnostics()
        return changed

    def images_watched(self) -> bool:
        """True while some subscriber listens to a camera's images (the run renders frames only then)."""
        return any(pub.get_subscription_count() > 0 for pub in self._image_pubs.values())

    def flush(self) -> None:
        """Wait (a little) until subscribers acknowledged the last events, so ``run_end`` reaches them."""
        from rclpy.duration import Duration

        self._events_pub.wait_for_all_acked(Duration(seconds=FLUSH_TIMEOUT_S))

    def _make_publishers(self, node: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        from testbed.ros2 import qos

        names = self.names
        self._clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, qos.CLOCK)
        self._tf_pub = node.create_publisher(TFMessage, TF_TOPIC, qos.TF)
        self._tf_static_pub = node.create_publisher(TFMessage, TF_STATIC_TOPIC, qos.TF_STATIC)
        self._diag_pub = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, qos.STATE)
        self._events_pub = node.create_publisher(String, names.events, qos.EVENTS)
        self._markers_pub = node.create_publisher(MarkerArray, names.markers, qos.STATIC)
        self._parts_pub = node.create_publisher(MarkerArray, names.parts, qos.STATE)
        self._robots = [_RobotOut(node, names, spec) for spec in self.cell.robots]
        self._description_pubs = [node.create_publisher(String, names.robot_description(spec.name), qos.STATIC)
                                  for spec in self.cell.robots]
        self._cameras = {c.name: c for c in self.cell.cameras}
        self._image_pubs = {c.name: node.create_publisher(Image, names.camera_image(c.name), qos.SENSOR)
                            for c in self.cell.cameras}
        self._info_pubs = {c.name: node.create_publisher(CameraInfo, names.camera_info(c.name), qos.SENSOR)
                           for c in self.cell.cameras}
        self._clock_msg = Clock()
        self._tf_msg = TFMessage()

    def _transform(self, parent: str, child: str, t: LinkTransform, sec: int, nanosec: int) -> Any:
        from geometry_msgs.msg import TransformStamped

        msg = TransformStamped()
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        msg.header.frame_id = parent
        msg.child_frame_id = child
        _set_transform(msg.transform, t)
        return msg

    def _publish_static(self) -> None:
        from std_msgs.msg import String
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import Marker, MarkerArray

        transforms = []
        for out in self._robots:
            name = out.spec.name
            transforms.append(self._transform(WORLD_FRAME, link_frame(name, out.frames.root),
                                              out.frames.base_transform, 0, 0))
            transforms += [self._transform(link_frame(name, t.parent), link_frame(name, t.child), t, 0, 0)
                           for t in out.frames.fixed]
        for cam in self.cell.cameras:
            transforms.append(self._transform(WORLD_FRAME, camera_frame(cam.name), camera_pose(cam.eye, cam.target),
                                              0, 0))
        self._tf_static_pub.publish(TFMessage(transforms=transforms))
        for spec, pub in zip(self.cell.robots, self._description_pubs, strict=True):
            pub.publish(String(data=spec.urdf_path.read_text(encoding="utf-8")))
        markers = MarkerArray()
        for i, box in enumerate(self.cell.boxes):
            m = Marker()
            m.header.frame_id = WORLD_FRAME
            m.ns, m.id, m.type, m.action = "cell", i, Marker.CUBE, Marker.ADD
            m.pose.position.x, m.pose.position.y, m.pose.position.z = box.center
            m.pose.orientation.w = 1.0
            m.scale.x, m.scale.y, m.scale.z = box.size
            m.color.r, m.color.g, m.color.b, m.color.a = box.rgba
            m.frame_locked = True
            m.text = box.name
            markers.markers.append(m)
        self._markers_pub.publish(markers)

    def _publish_state(self, snap: dict[str, Any], run_t: float) -> None:
        self._last_run_t = run_t
        sec, nanosec = stamp(run_t)
        self._clock_msg.clock.sec, self._clock_msg.clock.nanosec = sec, nanosec
        self._clock_pub.publish(self._clock_msg)
        robots = snap.get("robots", {})
        transforms = []
        for out in self._robots:
            state = robots.get(out.spec.name)
            if state is None:
                continue
            q = [float(v) for v in state["joint_pos"]]
            msg = out.state_msg
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
            msg.position = q
            out.joint_states.publish(msg)
            cmd = out.command_msg
            cmd.header.stamp.sec, cmd.header.stamp.nanosec = sec, nanosec
            out.command_point.positions = [float(v) for v in state["setpoint"]]
            out.joint_commands.publish(cmd)
            pose = out.frames.tcp_pose(q)
            pm = out.pose_msg
            pm.header.stamp.sec, pm.header.stamp.nanosec = sec, nanosec
            pm.pose.position.x, pm.pose.position.y, pm.pose.position.z = pose.xyz
            o = pm.pose.orientation
            o.x, o.y, o.z, o.w = pose.quat
            out.tcp_pose.publish(pm)
            for t, tm in zip(out.frames.moving(q), out.moving_msgs, strict=True):
                tm.header.stamp.sec, tm.header.stamp.nanosec = sec, nanosec
                _set_transform(tm.transform, t)
                transforms.append(tm)
        if transforms:
            self._tf_msg.transforms = transforms
            self._tf_pub.publish(self._tf_msg)
        parts = snap.get("parts")
        if parts is not None and time.monotonic() >= self._next_parts:
            self._next_parts = time.monotonic() + PARTS_PERIOD_S
            self._publish_parts(parts, sec, nanosec)

    def _publish_parts(self, parts: Sequence[dict[str, Any]], sec: int, nanosec: int) -> None:
        from visualization_msgs.msg import Marker, MarkerArray

        shapes = dict(self.cell.part_shapes)
        markers = MarkerArray()
        clear = Marker()
        clear.action = Marker.DELETEALL
        clear.ns = "parts"
        markers.markers.append(clear)
        for i, part in enumerate(parts):
            shape = shapes.get(part.get("type", ""))
            if shape is None:
                continue
            m = Marker()
            m.header.frame_id = WORLD_FRAME
            m.header.stamp.sec, m.header.stamp.nanosec = sec, nanosec
            m.ns, m.id, m.type, m.action = "parts", i, Marker.CUBE, Marker.ADD
            x, y, z, qx, qy, qz, qw = (float(v) for v in part["pose"])
            m.pose.position.x, m.pose.position.y, m.pose.position.z = x, y, z
            m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w = qx, qy, qz, qw
            m.scale.x, m.scale.y, m.scale.z = shape.size
            m.color.r, m.color.g, m.color.b, m.color.a = shape.rgba
            m.text = f"{part.get('type')} ({part.get('status')})"
            markers.markers.append(m)
        self._parts_pub.publish(markers)

    def _publish_frame(self, camera: str, t: float, episode: int | None, rgb: Any) -> None:
        from sensor_msgs.msg import CameraInfo, Image

        cam = self._cameras.get(camera)
        if cam is None:
            return
        run_t = self._clock.run_time(episode, t) if episode is not None else t
        sec, nanosec = stamp(run_t if run_t is not None else t)
        h, w = rgb.shape[:2]
        img = Image()
        img.header.stamp.sec, img.header.stamp.nanosec = sec, nanosec
        img.header.frame_id = camera_frame(cam.name)
        img.height, img.width, img.encoding, img.is_bigendian, img.step = h, w, "rgb8", 0, w * 3
        img.data = rgb.tobytes()
        info = CameraInfo()
        info.header = img.header
        info.height, info.width, info.distortion_model = h, w, "plumb_bob"
        f = (h / 2.0) / math.tan(math.radians(cam.fov_deg) / 2.0)  # pybullet's fov is vertical; square pixels
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        info.d = [0.0] * 5
        info.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        self._image_pubs[cam.name].publish(img)
        self._info_pubs[cam.name].publish(info)

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        now = time.monotonic()
        if now < self._next_diagnostics or not self._controllers:
            return
        self._next_diagnostics = now + DIAGNOSTICS_PERIOD_S
        array = DiagnosticArray()
        array.header.stamp.sec, array.header.stamp.nanosec = stamp(self._last_run_t)
        for spec in self.cell.robots:
            snap = self._controllers.get(spec.name)
            if snap is None:
                continue
            status = DiagnosticStatus()
            status.name = f"testbed: {spec.name} controller"
            status.hardware_id = spec.name
            state = snap.lifecycle_state
            status.level = (DiagnosticStatus.OK if state == "ACTIVE" else
                            DiagnosticStatus.ERROR if state in ("PROTECTIVE_STOP", "EMERGENCY_STOP", "ERROR")
                            else DiagnosticStatus.WARN)
            status.message = state + (f": {snap.last_error}" if snap.last_error else "")
            values = {"lifecycle_state": state, "ros2_lifecycle_state": self._lifecycle_state(spec.name),
                      "last_error": snap.last_error, "job": snap.job, "speed_scale": f"{snap.speed_scale:g}",
                      "model": spec.model, "ros2_commands": str(spec.commandable).lower(),
                      "following_trajectory": str(snap.following_trajectory).lower()}
            status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
            array.status.append(status)
        self._diag_pub.publish(array)


class NodeProcess:
    """The child's side: builds the node, serves the pipe until the run says ``close`` (or goes away).

    Args:
        conn: the child's end of the pipe to the run.
        settings: domain, namespace, rate, images (``testbed.ros2.node.Ros2Settings``).
        cell: what the node describes.
    """

    def __init__(self, conn: Any, settings: Any, cell: CellSpec) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from trajectory_msgs.msg import JointTrajectory

        from testbed.ros2 import qos
        from testbed.ros2.lifecycle import ControllerLifecycleNode

        self.link = _Link(conn)
        self.backend = BackendProxy(self.link)
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        names = TopicNames(settings.namespace)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=settings.domain_id)
        self.nodes: list[Any] = []
        node = rclpy.create_node(node_name(cell.scenario), namespace=NODE_NAMESPACE, context=self.context)
        self.nodes.append(node)
        self.lifecycle = {}
        for robot in cell.robots:
            ns, name = names.controller_node(robot.name)
            lc = ControllerLifecycleNode(robot.name, ns, name, self.backend, self.context,
                                         lambda kind, fields, r=robot.name: self.link.send("report", kind, r, fields),
                                         accept_requests=settings.loopback)
            self.lifecycle[robot.name] = lc
            self.nodes.append(lc)
        self.publisher = CellPublisher(node, names, cell, lambda r: self.lifecycle[r].ros2_state())
        for robot in cell.robots if settings.loopback else ():  # beyond loopback the node only publishes
            node.create_subscription(JointTrajectory, names.joint_trajectory(robot.name),
                                     lambda msg, r=robot.name: self.link.send(
                                         "trajectory", r, list(msg.joint_names), points_of(msg)), qos.STATE)
        self.follow_guard = node.create_guard_condition(self._follow)
        self.executor = SingleThreadedExecutor(context=self.context)
        for n in self.nodes:
            self.executor.add_node(n)
        self.thread = threading.Thread(target=self._spin, name="ros2-executor", daemon=True)

    def _follow(self) -> None:
        for lc in self.lifecycle.values():
            lc.follow()

    def _spin(self) -> None:
        try:
            while not self._stop.is_set():
                self.executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)
        except BaseException as exc:  # reported to the run, which raises it at close
            self.errors.append(exc)
            self.link.send("error", f"the node's executor thread died: {type(exc).__name__}: {exc}")

    def serve(self) -> None:
        """Answer the run until ``close``; tear the node down either way."""
        self.thread.start()
        self.link.send("ready")
        images_watched = False
        try:
            while True:
                try:
                    message = self.link.conn.recv()
                except (EOFError, OSError):  # the run's process is gone
                    self.backend.fail_all("the run's process is gone")
                    return
                kind = message[0]
                if kind == "tick":
                    for robot, state in message[1].controllers.items():
                        self.backend.states[robot] = state
                    if self.publisher.publish(message[1]):
                        self.follow_guard.trigger()
                    watched = self.publisher.images_watched()
                    if watched != images_watched:  # like image_transport: no subscriber, no images rendered
                        images_watched = watched
                        self.link.send("images", watched)
                elif kind == "reply":
                    self.backend.resolve(*message[1:])
                elif kind == "close":
                    self.publisher.flush()
                    return
        finally:
            self._stop.set()
            self.follow_guard.trigger()
            self.thread.join(JOIN_TIMEOUT_S)
            stuck = "the node's executor thread did not end" if self.thread.is_alive() else ""
            self.executor.shutdown(timeout_sec=1.0)
            for n in self.nodes:
                n.destroy_node()
            self.context.try_shutdown()
            errors = [f"{type(e).__name__}: {e}" for e in self.errors] + ([stuck] if stuck else [])
            with contextlib.suppress(BrokenPipeError, OSError):
                self.link.send("closed", "; ".join(errors))


def main(argv: Sequence[str]) -> int:
    """Entry point of the node's process: ``python -m testbed.ros2.process FD`` (``Ros2Bridge`` starts it).

    ``FD`` is this end of a socket pair to the run; the run's first message is ("start", settings, cell).
    """
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle; it closes the node
    conn = Connection(int(argv[0]))
    try:
        kind, settings, cell = conn.recv()
    except (EOFError, OSError, ValueError):
        return 1
    if kind != "start":
        return 1
    try:
        NodeProcess(conn, settings, cell).serve()
    except BaseException as exc:
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("error", f"the node could not start or failed: {type(exc).__name__}: {exc}"))
        raise
    return 0


def _set_transform(out: Any, t: LinkTransform) -> None:
    out.translation.x, out.translation.y, out.translation.z = t.xyz
    r = out.rotation
    r.x, r.y, r.z, r.w = t.quat


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
