"""Robot descriptions from ``robots/<model>/``: URDF plus controller settings.

Entry point: :func:`load_robot` returns a checked :class:`RobotModel`.
"""

from testbed.robots.model import ROBOTS_DIR_ENV, RobotModel, default_robots_dir, known_robots, load_robot
from testbed.robots.urdf import UrdfJoint, UrdfRobot, parse_urdf

__all__ = [
    "ROBOTS_DIR_ENV",
    "RobotModel",
    "UrdfJoint",
    "UrdfRobot",
    "default_robots_dir",
    "known_robots",
    "load_robot",
    "parse_urdf",
]
