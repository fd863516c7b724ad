"""Small robot descriptions for control tests (RobotModel-like, no URDF needed)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FakeRobot:
    """The fields of testbed.robots.RobotModel the control loop reads."""

    name: str
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    joint_types: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.joint_types:
            self.joint_types = ["revolute"] * len(self.lower)

    @property
    def n_joints(self) -> int:
        return len(self.lower)


def arm7(name: str = "arm7") -> FakeRobot:
    """A 7-joint arm with distinct limits per joint."""
    return FakeRobot(
        name=name,
        lower=np.array([-3.0, -2.0, -2.9, -2.0, -3.1, -1.9, -3.1]),
        upper=np.array([3.0, 2.0, 2.9, 2.5, 3.1, 1.9, 3.1]),
        velocity=np.array([2.0, 2.0, 2.5, 2.5, 3.0, 3.0, 4.0]),
        acceleration=np.array([10.0, 8.0, 12.0, 12.0, 15.0, 15.0, 20.0]),
        jerk=np.array([200.0, 160.0, 240.0, 240.0, 300.0, 300.0, 400.0]),
    )


def scara4(name: str = "scara4") -> FakeRobot:
    """A 4-axis SCARA with a prismatic third joint."""
    return FakeRobot(
        name=name,
        lower=np.array([-2.3, -2.6, 0.0, -6.28]),
        upper=np.array([2.3, 2.6, 0.2, 6.28]),
        velocity=np.array([7.0, 12.0, 1.1, 30.0]),
        acceleration=np.array([30.0, 40.0, 8.0, 100.0]),
        jerk=np.array([600.0, 800.0, 160.0, 2000.0]),
        joint_types=["revolute", "revolute", "prismatic", "revolute"],
    )


