"""What the ROS 2 node is told about the cell when a run starts: plain frozen data, no simulator, no rclpy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RobotSpec:
    """One robot as the node publishes it.

    Args:
        name: the robot's name in the cell (a ROS 2 name token).
        model: the robot model (``robots/<model>/``).
        urdf_path: its URDF, published as ``robot_description`` and used for the link frames.
        joint_names: moving joints, in the order of joint positions.
        tcp_link: link whose world pose goes on ``tcp_pose``.
        base_xyz, base_rpy_deg: the root link's pose in the world (m, degrees).
        commandable: follows ``joint_trajectory`` from the ROS 2 graph.
    """

    name: str
    model: str
    urdf_path: Path
    joint_names: tuple[str, ...]
    tcp_link: str
    base_xyz: tuple[float, float, float]
    base_rpy_deg: tuple[float, float, float]
    commandable: bool


@dataclass(frozen=True)
class BoxSpec:
    """A fixed box of the cell (conveyor, bin wall, pedestal) for RViz; metres in the world frame."""

    name: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class CameraSpec:
    """A camera of the cell: image size, vertical field of view, where it looks from and at (world, m)."""

    name: str
    width: int
    height: int
    fov_deg: float
    eye: tuple[float, float, float]
    target: tuple[float, float, float]


@dataclass(frozen=True)
class PartShape:
    """How a part type is drawn: box size (m) and colour."""

    size: tuple[float, float, float]
    rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class CellSpec:
    """The cell the node describes: scenario name, robots, fixed boxes, cameras and part shapes."""

    scenario: str
    robots: tuple[RobotSpec, ...]
    boxes: tuple[BoxSpec, ...] = ()
    cameras: tuple[CameraSpec, ...] = ()
    part_shapes: tuple[tuple[str, PartShape], ...] = ()
