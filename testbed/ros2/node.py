"""The run's ROS 2 node: one rclpy context and node, an executor thread and a publishing thread of its own.

The node only *reads* the run: the latest-state snapshot and the event stream that the run
publishes (``testbed.eval.events.EventStream``), camera frames when the stream offers them, and
the controller backend's snapshots. Commands and lifecycle requests go through the backend's
hand-off, the one the ControllerService uses. Nothing here is called by the control loop's
thread except ``Outbox.drain`` and ``commanding``, which never wait.

Two threads, because rclpy's executor costs ~0.5 ms of interpreter time per wake-up (time the
control loop's thread would wait for): the executor thread sleeps in rcl's wait until a trajectory,
a service request or a controller's state change (a guard condition) arrives; the publishing thread
wakes at ``rate_hz`` on the wall clock, takes the newest snapshot (if it changed) and publishes
``/clock``, every robot's joint states, set-point, TCP pose and link frames, then the events and
camera frames that arrived, the parts (5 Hz) and diagnostics (1 Hz, or when a controller changed
state). Publishers are safe to use from a thread other than the executor's. Stamps are the run's
simulated time (``names.RunClock``), as ``use_sim_time`` consumers expect.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from testbed.errors import FeatureUnavailable, TestbedError
from testbed.robots import parse_urdf
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
from testbed.ros2.outbox import Outbox
from testbed.ros2.spec import CellSpec, RobotSpec

EVENTS_QUEUE = 4096  # events kept for the node between two ticks (drop-oldest beyond)
EVENTS_PER_TICK = 2000  # a tick publishes at most this many; the rest wait for the next one
DIAGNOSTICS_PERIOD_S = 1.0
PARTS_PERIOD_S = 0.2
SPIN_TIMEOUT_S = 0.5  # the executor thread checks for close() this often when nothing arrives
JOIN_TIMEOUT_S = 5.0
NODE_NAMESPACE = "/testbed"

_REQUIRED = ("rclpy", "rclpy.lifecycle", "std_msgs.msg", "sensor_msgs.msg", "trajectory_msgs.msg",
             "geometry_msgs.msg", "rosgraph_msgs.msg", "lifecycle_msgs.msg", "visualization_msgs.msg",
             "diagnostic_msgs.msg", "std_srvs.srv", "tf2_msgs.msg")


def require_ros2() -> None:
    """Check that rclpy and every message package the node uses import.

    Raises:
        FeatureUnavailable: one line naming what is missing and how to get it.
    """
    import importlib

    for module in _REQUIRED:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            if module.startswith("tf2_msgs"):
                fix = "build it with `make venv` (or: python scripts/build_ros2_msgs.py, which needs cmake)"
            else:
                fix = "install the ROS 2 extra: pip install -e '.[ros2]' (make venv does)"
            raise FeatureUnavailable(f"ros2.enabled: {module} does not import ({exc}); {fix}") from exc


@dataclass(frozen=True)
class Ros2Settings:
    """The node's settings (the launch file's ``ros2`` section, without ``enabled``)."""

    domain_id: int | None = None
    namespace: str = "/cell"
    rate_hz: float = 50.0
    images: bool = True


def node_name(scenario: str) -> str:
    """The run node's name: the scenario's name with characters ROS 2 refuses replaced by ``_``."""
    name = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in scenario)
    return name if name[:1].isalpha() else f"run_{name}"


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


class Ros2Bridge:
    """The run as a ROS 2 node; ``start`` it, then ``close`` it when the run ends.

    Args:
        settings: domain, namespace, rate, images.
        cell: what the node describes (robots, fixed boxes, cameras, part shapes).
        events: the run's event stream (``subscribe``, ``snapshot``; ``subscribe_frames`` if it offers it).
        backend: the run's controller backend (``ControlLoopBackend``): snapshots, lifecycle, trajectories.

    Raises:
        FeatureUnavailable: rclpy or a message package is missing (``start``).
    """

    def __init__(self, settings: Ros2Settings, cell: CellSpec, events: Any, backend: Any) -> None:
        self.settings = settings
        self.cell = cell
        self.names = TopicNames(settings.namespace)
        self.outbox = Outbox()
        self.error: BaseException | None = None
        self.published = 0  # snapshots published (for tests and benchmarks)
        self._events = events
        self._backend = backend
        self._clock = RunClock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[tuple[str, BaseException]] = []
        self._follow_guard: Any = None
        self._context: Any = None
        self._executor: Any = None
        self._nodes: list[Any] = []
        self._lifecycle: list[Any] = []
        self.commands: Any = None
        self._event_sub: Any = None
        self._frame_sub: Any = None
        self._last_key: tuple[Any, Any] | None = None
        self._last_run_t = 0.0
        self._next_diagnostics = 0.0
        self._next_parts = 0.0
        self._run_states: dict[str, str] = {}

    # ------------------------------------------------------------------ life
    def start(self) -> Ros2Bridge:
        """Create the context, the node, its publishers, the lifecycle nodes and the executor thread."""
        require_ros2()
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from testbed.ros2.commands import TrajectoryCommands
        from testbed.ros2.lifecycle import ControllerLifecycleNode

        self._context = rclpy.Context()
        rclpy.init(context=self._context, domain_id=self.settings.domain_id)
        try:
            node = rclpy.create_node(node_name(self.cell.scenario), namespace=NODE_NAMESPACE, context=self._context)
            self._nodes.append(node)
            self._node = node
            self._make_publishers(node)
            for robot in self.cell.robots:
                ns, name = self.names.controller_node(robot.name)
                lc = ControllerLifecycleNode(robot.name, ns, name, self._backend, self._context,
                                             lambda kind, fields, r=robot.name: self.outbox.put(kind, r, **fields))
                self._lifecycle.append(lc)
                self._nodes.append(lc)
            self.commands = TrajectoryCommands(node, self.names, self.cell.robots, self._backend, self.outbox)
            self._event_sub = self._events.subscribe(maxlen=EVENTS_QUEUE)
            subscribe_frames = getattr(self._events, "subscribe_frames", None)
            if self.settings.images and self.cell.cameras and subscribe_frames is not None:
                self._frame_sub = subscribe_frames(maxlen=2 * len(self.cell.cameras))
            self._publish_static()
            self._follow_guard = node.create_guard_condition(self._follow)
            self._follow()
            self._executor = SingleThreadedExecutor(context=self._context)
            for n in self._nodes:
                self._executor.add_node(n)
        except BaseException:
            self._teardown()
            raise
        self._threads = [threading.Thread(target=self._guarded, args=("ros2-executor", self._spin), daemon=True,
                                          name="ros2-executor"),
                         threading.Thread(target=self._guarded, args=("ros2-publisher", self._publish_loop),
                                          daemon=True, name="ros2-publisher")]
        for thread in self._threads:
            thread.start()
        return self

    def close(self, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Stop both threads, join them, and tear the node and its context down.

        Raises:
            TestbedError: a thread did not end within ``timeout_s``, or one died while the run went on
                (the original error is chained).
        """
        self._stop.set()
        if self._follow_guard is not None:
            self._follow_guard.trigger()  # wakes the executor thread at once
        stuck = []
        for thread in self._threads:
            thread.join(timeout_s)
            if thread.is_alive():
                stuck.append(thread.name)
        if stuck:
            raise TestbedError(f"ros2: thread(s) {', '.join(stuck)} did not end within {timeout_s:g} s of close()")
        self._teardown()
        if self.errors:
            name, exc = self.errors[0]
            raise TestbedError(f"ros2: the node's {name} thread died: {exc!r}") from exc

    def __enter__(self) -> Ros2Bridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def commanding(self, robot: str) -> bool:
        """True while a trajectory from the ROS 2 graph drives ``robot`` (cheap; any thread)."""
        return self.commands is not None and self.commands.commanding(robot)

    def _guarded(self, name: str, body: Any) -> None:
        try:
            body()
        except BaseException as exc:  # reported here and raised by close(): a dead thread must not pass silently
            self.errors.append((name, exc))
            self.error = exc
            why = f"the node's {name} thread died: {type(exc).__name__}: {exc}"
            print(f"ros2: {why}", file=sys.stderr, flush=True)
            self.outbox.put("ros2_error", None, reason=why)

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)

    def _publish_loop(self) -> None:
        period = 1.0 / self.settings.rate_hz
        next_t = time.monotonic()
        while not self._stop.is_set():
            self._tick()
            next_t += period
            now = time.monotonic()
            if next_t < now:  # late (the machine was busy): skip the ticks missed, never burst
                next_t = now
            self._stop.wait(next_t - now)

    def _follow(self) -> None:
        """On the executor thread: every lifecycle node follows its controller's state."""
        for lc in self._lifecycle:
            lc.follow()

    def _teardown(self) -> None:
        if self._event_sub is not None:
            self._events.unsubscribe(self._event_sub)
            self._event_sub = None
        if self._frame_sub is not None:
            self._events.unsubscribe(self._frame_sub)
            self._frame_sub = None
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=1.0)
            self._executor = None
        for n in self._nodes:
            n.destroy_node()
        self._nodes.clear()
        self._lifecycle.clear()
        if self._context is not None and self._context.ok():
            self._context.try_shutdown()
        self._context = None

    # ------------------------------------------------------------------ publishers
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

    # ------------------------------------------------------------------ the timer
    def _tick(self) -> None:
        self._drain_events()
        snap = self._events.snapshot()
        if snap:
            key = (snap.get("episode"), snap.get("t"))
            if key != self._last_key:
                run_t = self._clock.run_time(snap.get("episode"), float(snap.get("t", 0.0)))
                if run_t is None:  # the episode before it ended after the last drain
                    self._drain_events()
                    run_t = self._clock.run_time(snap.get("episode"), float(snap.get("t", 0.0)))
                if run_t is not None:
                    self._last_key = key
                    self._publish_state(snap, run_t)
        self._publish_frames()
        if self.commands is not None:
            self.commands.poll()
        if snap and self._states_changed(snap):
            self._follow_guard.trigger()
            self._next_diagnostics = 0.0
        self._publish_diagnostics()

    def _states_changed(self, snap: dict[str, Any]) -> bool:
        states = {name: str(robot.get("state")) for name, robot in snap.get("robots", {}).items()}
        changed = states != self._run_states
        self._run_states = states
        return changed

    def _drain_events(self) -> None:
        from std_msgs.msg import String

        sub = self._event_sub
        for _ in range(EVENTS_PER_TICK):
            event = sub.get(0)
            if event is None:
                return
            if event.get("kind") == "episode_end" and event.get("episode") is not None:
                self._clock.episode_ended(int(event["episode"]), float(event["t"]))
            self._events_pub.publish(String(data=json.dumps(event, separators=(",", ":"), default=str)))

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
        self.published += 1

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

    def _publish_frames(self) -> None:
        from sensor_msgs.msg import CameraInfo, Image

        sub = self._frame_sub
        if sub is None:
            return
        while (frame := sub.get(0)) is not None:
            cam = self._cameras.get(frame.camera)
            if cam is None:
                continue
            run_t = self._clock.run_time(frame.episode, frame.t) if frame.episode is not None else frame.t
            sec, nanosec = stamp(run_t if run_t is not None else frame.t)
            h, w = frame.rgb.shape[:2]
            img = Image()
            img.header.stamp.sec, img.header.stamp.nanosec = sec, nanosec
            img.header.frame_id = camera_frame(cam.name)
            img.height, img.width, img.encoding, img.is_bigendian, img.step = h, w, "rgb8", 0, w * 3
            img.data = frame.rgb.tobytes()
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
        if now < self._next_diagnostics:
            return
        self._next_diagnostics = now + DIAGNOSTICS_PERIOD_S
        snaps = [self._backend.snapshot(r.name) for r in self.cell.robots]
        array = DiagnosticArray()
        array.header.stamp.sec, array.header.stamp.nanosec = stamp(self._last_run_t)
        for spec, snap, lc in zip(self.cell.robots, snaps, self._lifecycle, strict=True):
            status = DiagnosticStatus()
            status.name = f"testbed: {spec.name} controller"
            status.hardware_id = spec.name
            state = snap.lifecycle_state
            status.level = (DiagnosticStatus.OK if state == "ACTIVE" else
                            DiagnosticStatus.ERROR if state in ("PROTECTIVE_STOP", "EMERGENCY_STOP", "ERROR")
                            else DiagnosticStatus.WARN)
            status.message = state + (f": {snap.last_error}" if snap.last_error else "")
            values = {"lifecycle_state": state, "ros2_lifecycle_state": lc.ros2_state(),
                      "last_error": snap.last_error, "job": snap.job, "speed_scale": f"{snap.speed_scale:g}",
                      "model": spec.model, "ros2_commands": str(spec.commandable).lower(),
                      "following_trajectory": str(self.commanding(spec.name)).lower()}
            status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
            array.status.append(status)
        self._diag_pub.publish(array)


def _set_transform(out: Any, t: LinkTransform) -> None:
    out.translation.x, out.translation.y, out.translation.z = t.xyz
    r = out.rotation
    r.x, r.y, r.z, r.w = t.quat
