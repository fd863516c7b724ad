"""Topic and frame names of the run's ROS 2 graph, and its clock: shared by the live node and the bag export.

Nothing here imports rclpy, so the bag export (``testbed.data.bag``) and the launch-file checks use
the same names without the ROS 2 extra.

Names (``ns`` is ``ros2.namespace``, ``/cell`` by default; ``r`` a robot, ``c`` a camera):

===============================  ========================================  =============================
topic                            type                                      QoS
===============================  ========================================  =============================
``/clock``                       ``rosgraph_msgs/msg/Clock``               best effort, depth 1
``/tf``                          ``tf2_msgs/msg/TFMessage``                reliable, depth 100
``/tf_static``                   ``tf2_msgs/msg/TFMessage``                reliable, transient local
``/diagnostics``                 ``diagnostic_msgs/msg/DiagnosticArray``   reliable, depth 10
``ns/events``                    ``std_msgs/msg/String``                   reliable, depth 100
``ns/markers``                   ``visualization_msgs/msg/MarkerArray``    reliable, transient local
``ns/parts``                     ``visualization_msgs/msg/MarkerArray``    reliable, depth 10
``ns/r/joint_states``            ``sensor_msgs/msg/JointState``            reliable, depth 10
``ns/r/joint_commands``          ``trajectory_msgs/msg/JointTrajectory``   reliable, depth 10
``ns/r/tcp_pose``                ``geometry_msgs/msg/PoseStamped``         reliable, depth 10
``ns/r/robot_description``       ``std_msgs/msg/String``                   reliable, transient local
``ns/r/joint_trajectory`` (in)   ``trajectory_msgs/msg/JointTrajectory``   reliable, depth 10
``ns/c/image_raw``               ``sensor_msgs/msg/Image``                 best effort, depth 5
``ns/c/camera_info``             ``sensor_msgs/msg/CameraInfo``            best effort, depth 5
===============================  ========================================  =============================

Frames: ``world`` is fixed; each robot's links are ``r/<link>`` (the URDF's link names under the
robot's name, as robot_state_publisher's ``frame_prefix`` gives them); cameras are ``c_optical``
(z forward, x right, y down).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

WORLD_FRAME = "world"
DEFAULT_NAMESPACE = "/cell"
EPISODE_GAP_S = 1.0  # a run's episodes each restart at 0 s; ROS time puts them this far apart, never backwards

CLOCK_TOPIC = "/clock"
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
DIAGNOSTICS_TOPIC = "/diagnostics"

JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
TRAJECTORY_TYPE = "trajectory_msgs/msg/JointTrajectory"
TF_TYPE = "tf2_msgs/msg/TFMessage"
STRING_TYPE = "std_msgs/msg/String"
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"
POSE_TYPE = "geometry_msgs/msg/PoseStamped"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
MARKERS_TYPE = "visualization_msgs/msg/MarkerArray"
IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


@dataclass(frozen=True)
class TopicNames:
    """The run's topic names under ``namespace`` (e.g. ``/cell``)."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def events(self) -> str:
        """Every event of the run's stream, as its JSON."""
        return f"{self.namespace}/events"

    @property
    def markers(self) -> str:
        """The cell's fixed things (conveyors, bins, pedestals) for RViz."""
        return f"{self.namespace}/markers"

    @property
    def parts(self) -> str:
        """The parts on their way, held or placed."""
        return f"{self.namespace}/parts"

    def robot(self, robot: str, leaf: str) -> str:
        """A robot's topic, e.g. ``robot("arm1", "joint_states")`` -> ``/cell/arm1/joint_states``."""
        return f"{self.namespace}/{robot}/{leaf}"

    def joint_states(self, robot: str) -> str:
        """The robot's measured joint positions."""
        return self.robot(robot, "joint_states")

    def joint_commands(self, robot: str) -> str:
        """The controller's set-point, as a one-point trajectory (what the loop commands, not an input)."""
        return self.robot(robot, "joint_commands")

    def joint_trajectory(self, robot: str) -> str:
        """Trajectories in, as ros2_control's joint_trajectory_controller takes them."""
        return self.robot(robot, "joint_trajectory")

    def tcp_pose(self, robot: str) -> str:
        """The tool centre point in the world frame."""
        return self.robot(robot, "tcp_pose")

    def robot_description(self, robot: str) -> str:
        """The robot's URDF, latched."""
        return self.robot(robot, "robot_description")

    def controller_node(self, robot: str) -> tuple[str, str]:
        """(namespace, name) of the robot's lifecycle controller node: ``/cell/arm1/controller``."""
        return f"{self.namespace}/{robot}", "controller"

    def camera_image(self, camera: str) -> str:
        """A camera's images."""
        return f"{self.namespace}/{camera}/image_raw"

    def camera_info(self, camera: str) -> str:
        """A camera's intrinsics, one per image."""
        return f"{self.namespace}/{camera}/camera_info"

    def recorded(self, robots: list[str]) -> dict[str, str]:
        """Topic -> type of what a run's record holds (the bag export writes these; the live node publishes them)."""
        topics = {CLOCK_TOPIC: CLOCK_TYPE, TF_TOPIC: TF_TYPE, self.events: STRING_TYPE}
        for robot in robots:
            topics[self.joint_states(robot)] = JOINT_STATE_TYPE
            topics[self.joint_commands(robot)] = TRAJECTORY_TYPE
            topics[self.tcp_pose(robot)] = POSE_TYPE
        return topics


def link_frame(robot: str, link: str) -> str:
    """The TF frame of a robot's link: ``arm1/base_link``."""
    return f"{robot}/{link}"


def camera_frame(camera: str) -> str:
    """The TF frame of a camera's optical axis (z forward, x right, y down)."""
    return f"{camera}_optical"


class RunClock:
    """Maps (episode, episode seconds) to the run's time in seconds, which never goes back.

    Each episode restarts its own clock at 0; the run's time puts an episode ``EPISODE_GAP_S`` after
    the end of the one before, the timeline the bag export writes too. Episodes run one after the
    other: an episode's start is known once the one before it was told ended (``episode_ended``, from
    its ``episode_end`` event); until then ``offset`` of the next one is None.
    """

    def __init__(self) -> None:
        self._offsets: dict[int, float] = {}
        self._open: int | None = None  # the episode running (started, not told ended)
        self._end: float | None = None  # run time at which the last ended episode ended

    def _next_start(self) -> float:
        return 0.0 if self._end is None else self._end + EPISODE_GAP_S

    def offset(self, episode: int) -> float | None:
        """Run time at which ``episode`` starts, or None while the episode before it has not ended."""
        if episode in self._offsets:
            return self._offsets[episode]
        if self._open is not None:
            return None
        start = self._offsets[episode] = self._next_start()
        self._open = episode
        return start

    def episode_ended(self, episode: int, duration_s: float) -> None:
        """Episode ``episode`` ended after ``duration_s`` of its own time."""
        start = self._offsets.get(episode)
        if start is None:  # it started and ended between two looks
            start = self._offsets[episode] = self._next_start()
        self._end = start + duration_s
        self._open = None

    def run_time(self, episode: int | None, t_s: float) -> float | None:
        """Run seconds of ``t_s`` in ``episode``; None while unknown (see ``offset``).

        Events outside episodes (``run_start``, ``run_end``) fall at 0 before the first episode
        and at the end of the last ended episode after it.
        """
        if episode is None:
            return t_s if self._end is None else self._end
        offset = self.offset(episode)
        return None if offset is None else offset + t_s


def episode_offsets(durations: Mapping[int, float]) -> dict[int, float]:
    """Run-time offset of each episode, given every episode's duration (the bag export's timeline)."""
    offsets, start = {}, 0.0
    for episode in sorted(durations):
        offsets[episode] = start
        start += durations[episode] + EPISODE_GAP_S
    return offsets


def stamp(seconds: float) -> tuple[int, int]:
    """(sec, nanosec) of a ROS time stamp for ``seconds`` >= 0."""
    ns = max(0, round(seconds * 1e9))
    return ns // 1_000_000_000, ns % 1_000_000_000

