"""Export a run directory to a ROS 2 bag (MCAP storage) for ROS 2 tools and Foxglove.

Topics written: the names and types the run's live ROS 2 node publishes (``testbed.ros2.names``;
``ns`` is the scenario's ``ros2.namespace``, ``/cell`` by default; types from ROS 2 Jazzy):

- ``ns/<robot>/joint_states`` ``sensor_msgs/msg/JointState``: one message per robot per
  recorded step, ``header.frame_id`` the robot, the URDF's joint names;
- ``ns/<robot>/joint_commands`` ``trajectory_msgs/msg/JointTrajectory``: the commanded
  joint positions of the same step as a one-point trajectory;
- ``ns/<robot>/tcp_pose`` ``geometry_msgs/msg/PoseStamped``: the TCP in the ``world`` frame;
- ``/tf`` ``tf2_msgs/msg/TFMessage``: per step, the robot's whole link tree (``world`` ->
  ``<robot>/<root link>`` -> ... -> ``<robot>/tcp``, as live) when the run's ``scenario.yaml``
  names a known robot model, else ``world`` -> ``<robot>/tcp``;
- ``ns/events`` ``std_msgs/msg/String``: each ``events.jsonl`` object as JSON;
- ``/clock`` ``rosgraph_msgs/msg/Clock``: one tick per distinct step time.

Times are simulated seconds. Where a run restarts its clock at each episode,
later episodes are shifted so the bag's timeline never runs backwards (the
live node's timeline: ``EPISODE_GAP_S`` after the episode before); the
shift is applied to joint states and events alike.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from testbed.errors import DatasetError, RobotDescriptionError
from testbed.ros2.names import (
    CLOCK_TOPIC,
    DEFAULT_NAMESPACE,
    EPISODE_GAP_S,
    TF_TOPIC,
    WORLD_FRAME,
    TopicNames,
    link_frame,
)

JOINT_STATES_FILENAME = "joint_states.parquet"
EVENTS_FILENAME = "events.jsonl"
JOINT_COLUMNS = ("t_s", "episode", "robot", "joint_names", "position", "command", "tcp_pose_world")



def _scenario_layout(run_dir: Path) -> tuple[str, dict[str, Any]]:
    """The ROS 2 namespace and each robot's link frames from the run's ``scenario.yaml`` (defaults without it)."""
    import yaml

    from testbed.robots import load_robot, parse_urdf
    from testbed.ros2.frames import RobotFrames

    path = run_dir / "scenario.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        data = None
    if not isinstance(data, dict):
        return DEFAULT_NAMESPACE, {}
    ros2 = data.get("ros2")
    namespace = ros2.get("namespace", DEFAULT_NAMESPACE) if isinstance(ros2, dict) else DEFAULT_NAMESPACE
    frames: dict[str, Any] = {}
    cell = data.get("cell")
    for robot in (cell.get("robots") or []) if isinstance(cell, dict) else []:
        try:
            model = load_robot(str(robot["model"]))
            base = robot.get("base") or {}
            frames[str(robot["name"])] = RobotFrames(parse_urdf(model.urdf_path), model.joint_names, model.tcp_link,
                                                     base.get("xyz", (0.0, 0.0, 0.0)),
                                                     base.get("rpy_deg", (0.0, 0.0, 0.0)))
        except (KeyError, TypeError, ValueError, RobotDescriptionError):
            continue  # an unknown or malformed robot gets the world -> tcp transform only
    return namespace if isinstance(namespace, str) else DEFAULT_NAMESPACE, frames


@dataclass(frozen=True)
class BagExport:
    """What ``export_bag`` wrote.

    Args:
        path: the bag directory (``metadata.yaml`` + one ``.mcap`` file).
        message_counts: messages per topic.
        duration_s: time from the first to the last message.
    """

    path: Path
    message_counts: Mapping[str, int]
    duration_s: float


@dataclass(frozen=True)
class _Event:
    line: int
    t_s: float
    episode: int | None
    text: str


def _read_joint_states(path: Path) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"{path}: not found; a run directory needs {JOINT_STATES_FILENAME} to export a bag")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: not a readable parquet file: {exc}") from exc
    missing = [c for c in JOINT_COLUMNS if c not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} (expected: {', '.join(JOINT_COLUMNS)})")
    return table.sort_by([("episode", "ascending"), ("t_s", "ascending")])


def _read_events(path: Path) -> list[_Event]:
    if not path.is_file():
        raise DatasetError(f"{path}: not found; a run directory needs {EVENTS_FILENAME} to export a bag")
    events = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not a JSON object: {exc.msg}") from exc
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
            t = obj.get("t")
            if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
                raise DatasetError(f"{path}:{number} field t: expected sim seconds as a number, got {t!r}")
            episode = obj.get("episode")
            if episode is not None and (not isinstance(episode, int) or isinstance(episode, bool)):
                raise DatasetError(f"{path}:{number} field episode: expected an integer or null, got {episode!r}")
            events.append(_Event(number, float(t), episode, json.dumps(obj, ensure_ascii=False)))
    return events


def _episode_offsets(spans: Mapping[int, tuple[float, float]]) -> dict[int, float]:
    """Shift per episode that keeps the timeline monotone; zero where it already is."""
    offsets: dict[int, float] = {}
    end = -math.inf
    for episode in sorted(spans):
        start, stop = spans[episode]
        offset = 0.0 if start >= end else end + EPISODE_GAP_S - start
        offsets[episode] = offset
        end = stop + offset
    return offsets


def _spans(table: pa.Table, events: list[_Event]) -> dict[int, tuple[float, float]]:
    spans: dict[int, tuple[float, float]] = {}
    t_s = table.column("t_s").to_numpy()
    episodes = table.column("episode").to_numpy()
    for episode in np.unique(episodes):
        times = t_s[episodes == episode]
        spans[int(episode)] = (float(times.min()), float(times.max()))
    for event in events:
        if event.episode is not None:
            lo, hi = spans.get(event.episode, (event.t_s, event.t_s))
            spans[event.episode] = (min(lo, event.t_s), max(hi, event.t_s))
    return spans


def _ns(t_s: float) -> int:
    return max(0, round(t_s * 1e9))


class _Messages:
    """Builds typed ROS 2 messages from rows; one typestore for the whole export."""

    def __init__(self) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.ROS2_JAZZY)
        t = self.store.types
        self._time, self._duration = t["builtin_interfaces/msg/Time"], t["builtin_interfaces/msg/Duration"]
        self._header = t["std_msgs/msg/Header"]
        self._joint_state = t["sensor_msgs/msg/JointState"]
        self._trajectory = t["trajectory_msgs/msg/JointTrajectory"]
        self._point = t["trajectory_msgs/msg/JointTrajectoryPoint"]
        self._tf, self._stamped = t["tf2_msgs/msg/TFMessage"], t["geometry_msgs/msg/TransformStamped"]
        self._pose_stamped, self._pose = t["geometry_msgs/msg/PoseStamped"], t["geometry_msgs/msg/Pose"]
        self._point_xyz = t["geometry_msgs/msg/Point"]
        self._transform, self._vector = t["geometry_msgs/msg/Transform"], t["geometry_msgs/msg/Vector3"]
        self._quaternion = t["geometry_msgs/msg/Quaternion"]
        self._string, self._clock = t["std_msgs/msg/String"], t["rosgraph_msgs/msg/Clock"]
        self._empty = np.zeros(0, np.float64)

    def serialize(self, msg: Any, msgtype: str) -> bytes:
        return bytes(self.store.serialize_cdr(msg, msgtype))

    def stamp(self, ns: int) -> Any:
        return self._time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def joint_state(self, ns: int, robot: str, names: list[str], position: np.ndarray) -> Any:
        return self._joint_state(
            header=self._header(stamp=self.stamp(ns), frame_id=robot),
            name=names,
            position=position,
            velocity=self._empty,
            effort=self._empty,
        )

    def command(self, ns: int, robot: str, names: list[str], command: np.ndarray) -> Any:
        point = self._point(
            positions=command,
            velocities=self._empty,
            accelerations=self._empty,
            effort=self._empty,
            time_from_start=self._duration(sec=0, nanosec=0),
        )
        return self._trajectory(
            header=self._header(stamp=self.stamp(ns), frame_id=robot), joint_names=names, points=[point]
        )

    def _stamped_transform(self, ns: int, parent: str, child: str, xyz: Any, quat: Any) -> Any:
        x, y, z = (float(v) for v in xyz)
        qx, qy, qz, qw = (float(v) for v in quat)
        transform = self._transform(
            translation=self._vector(x=x, y=y, z=z), rotation=self._quaternion(x=qx, y=qy, z=qz, w=qw)
        )
        return self._stamped(header=self._header(stamp=self.stamp(ns), frame_id=parent), child_frame_id=child,
                             transform=transform)

    def tf(self, ns: int, robot: str, pose: np.ndarray, frames: Any, position: np.ndarray) -> Any:
        """The robot's link tree at ``position`` (``frames``: its ``RobotFrames``), else world -> tcp."""
        if frames is None:
            return self._tf(transforms=[self._stamped_transform(ns, WORLD_FRAME, f"{robot}/tcp", pose[:3], pose[3:])])
        base = frames.base_transform
        stamped = [self._stamped_transform(ns, WORLD_FRAME, link_frame(robot, frames.root), base.xyz, base.quat)]
        for t in (*frames.fixed, *frames.moving(position)):
            stamped.append(self._stamped_transform(ns, link_frame(robot, t.parent), link_frame(robot, t.child),
                                                   t.xyz, t.quat))
        return self._tf(transforms=stamped)

    def pose(self, ns: int, pose: np.ndarray) -> Any:
        x, y, z, qx, qy, qz, qw = (float(v) for v in pose)
        return self._pose_stamped(
            header=self._header(stamp=self.stamp(ns), frame_id=WORLD_FRAME),
            pose=self._pose(position=self._point_xyz(x=x, y=y, z=z),
                            orientation=self._quaternion(x=qx, y=qy, z=qz, w=qw)),
        )

    def string(self, text: str) -> Any:
        return self._string(data=text)

    def clock(self, ns: int) -> Any:
        return self._clock(clock=self.stamp(ns))


@dataclass(frozen=True)
class _JointRow:
    t_s: float
    episode: int
    robot: str
    names: list[str]
    position: np.ndarray
    command: np.ndarray
    pose: np.ndarray


def _joint_rows(table: pa.Table, source: Path) -> Iterator[_JointRow]:
    columns = {name: table.column(name).to_pylist() for name in JOINT_COLUMNS}
    for i in range(table.num_rows):
        row = _JointRow(
            t_s=float(columns["t_s"][i]),
            episode=int(columns["episode"][i]),
            robot=str(columns["robot"][i]),
            names=list(columns["joint_names"][i]),
            position=np.asarray(columns["position"][i], np.float64),
            command=np.asarray(columns["command"][i], np.float64),
            pose=np.asarray(columns["tcp_pose_world"][i], np.float64),
        )
        if not (len(row.names) == row.position.size == row.command.size):
            raise DatasetError(
                f"{source} row {i}: joint_names, position and command differ in length "
                f"({len(row.names)}, {row.position.size}, {row.command.size})"
            )
        if row.pose.size != 7:
            raise DatasetError(f"{source} row {i} column tcp_pose_world: expected 7 numbers (x y z qx qy qz qw)")
        yield row


def _timed_events(events: list[_Event], offsets: Mapping[int, float]) -> list[tuple[int, int, _Event]]:
    # an event without an episode (run_start, run_end) takes the shift of the episode before it
    timed, offset = [], 0.0
    for event in events:
        if event.episode is not None:
            offset = offsets[event.episode]
        timed.append((_ns(event.t_s + offset), 1, event))
    timed.sort(key=lambda x: (x[0], x[2].line))
    return timed


def export_bag(run_dir: Path, out: Path | None = None) -> BagExport:
    """Write a run's joint states, commands, TCP poses, events and clock to a ROS 2 MCAP bag.

    Args:
        run_dir: a run directory with ``joint_states.parquet`` and ``events.jsonl``
            (``scenario.yaml`` and ``metrics.json`` go into the bag's custom data if present).
        out: bag directory to create; default ``run_dir/bag``. It must not exist.

    Returns:
        where the bag is and how many messages each topic holds.

    Raises:
        DatasetError: a file is missing or malformed (located), or ``out`` exists.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "bag"
    if out.exists():
        raise DatasetError(f"{out}: exists already; remove it or choose another path with --out")
    states_path = run_dir / JOINT_STATES_FILENAME
    table = _read_joint_states(states_path)
    events = _read_events(run_dir / EVENTS_FILENAME)
    offsets = _episode_offsets(_spans(table, events))
    robots = sorted(set(table.column("robot").to_pylist()))
    namespace, frames = _scenario_layout(run_dir)
    names = TopicNames(namespace)
    topics = names.recorded(robots)

    msgs = _Messages()
    counts = dict.fromkeys(topics, 0)
    first_ns, last_ns = None, 0
    writer = Writer(out, version=8, storage_plugin=StoragePlugin.MCAP)
    for name in ("scenario.yaml", "metrics.json"):
        if (run_dir / name).is_file():
            writer.set_custom_data(f"testbed.{name}", (run_dir / name).read_text(encoding="utf-8"))
    with writer:
        conns = {
            topic: writer.add_connection(topic, msgtype, typestore=msgs.store) for topic, msgtype in topics.items()
        }

        def write(topic: str, ns: int, msg: Any) -> None:
            nonlocal first_ns, last_ns
            writer.write(conns[topic], ns, msgs.serialize(msg, topics[topic]))
            counts[topic] += 1
            first_ns = ns if first_ns is None else min(first_ns, ns)
            last_ns = max(last_ns, ns)

        # merge both streams in time order so players and live tools see one timeline
        timed_rows = ((_ns(r.t_s + offsets[r.episode]), 0, r) for r in _joint_rows(table, states_path))
        last_clock = -1
        for ns, _, item in heapq.merge(timed_rows, _timed_events(events, offsets), key=lambda x: (x[0], x[1])):
            if isinstance(item, _Event):
                write(names.events, ns, msgs.string(item.text))
                continue
            if ns != last_clock:
                write(CLOCK_TOPIC, ns, msgs.clock(ns))
                last_clock = ns
            robot = item.robot
            write(names.joint_states(robot), ns, msgs.joint_state(ns, robot, item.names, item.position))
            write(names.joint_commands(robot), ns, msgs.command(ns, robot, item.names, item.command))
            write(names.tcp_pose(robot), ns, msgs.pose(ns, item.pose))
            write(TF_TOPIC, ns, msgs.tf(ns, robot, item.pose, frames.get(robot), item.position))
    duration = (last_ns - (first_ns or 0)) * 1e-9
    return BagExport(path=out, message_counts=counts, duration_s=duration)
