"""LeRobot-format episodes: write v3.0, read v3.0 and v2.1, validate.

Entry points: ``LeRobotWriter`` to record, ``read_dataset`` to load,
``validate_dataset`` to list every problem of a dataset directory.
"""

from testbed.data.lerobot.features import FeatureSpec, features_from_policy_spec
from testbed.data.lerobot.reader import EpisodeLocation, LeRobotDataset, read_dataset
from testbed.data.lerobot.stats import aggregate_stats, image_stats, vector_stats
from testbed.data.lerobot.validate import validate_dataset
from testbed.data.lerobot.writer import LeRobotWriter

__all__ = [
    "EpisodeLocation",
    "FeatureSpec",
    "LeRobotDataset",
    "LeRobotWriter",
    "aggregate_stats",
    "features_from_policy_spec",
    "image_stats",
    "read_dataset",
    "validate_dataset",
    "vector_stats",
]
