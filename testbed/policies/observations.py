"""The observation contract: the layout of the cell's observation vectors.

It sits beside the policy protocol: the simulator builds observations to it, policies and dataset
writers read them by it, and neither side imports the other.
"""

from __future__ import annotations

# observation.environment_state: privileged facts in the robot's base frame (metres, radians)
ENV_STATE_NAMES: tuple[str, ...] = (
    "part_x", "part_y", "part_z", "part_yaw", "part_top_z", "part_type", "part_ready", "holding",
    "bin_x", "bin_y", "bin_top_z",
)
ENV_STATE_DIM = len(ENV_STATE_NAMES)

SUCTION_NAME = "suction"


def state_names(joint_names: tuple[str, ...] | list[str]) -> list[str]:
    """Names of ``observation.state`` (and of joint-position actions): the joints, then the suction flag."""
    return [*joint_names, SUCTION_NAME]
