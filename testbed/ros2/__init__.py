"""The run as a ROS 2 node (rclpy): joint states, /tf, /clock, cameras, diagnostics and events out;
joint trajectories and lifecycle requests in, through the controller backend's hand-off.

Importing this package does not import rclpy: ``require_ros2`` says in one line what is missing,
and ``names`` (topic names, frames, the run's clock) serves the bag export without the extra.
Entry point: ``Ros2Bridge(settings, cell, events, backend).start()``.
"""

from testbed.ros2.names import RunClock, TopicNames
from testbed.ros2.node import Ros2Bridge, Ros2Settings, require_ros2
from testbed.ros2.spec import BoxSpec, CameraSpec, CellSpec, PartShape, RobotSpec

__all__ = [
    "BoxSpec",
    "CameraSpec",
    "CellSpec",
    "PartShape",
    "RobotSpec",
    "Ros2Bridge",
    "Ros2Settings",
    "RunClock",
    "TopicNames",
    "require_ros2",
]
