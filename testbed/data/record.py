"""Recording as data: dataset features from a policy spec, the run loop's LeRobot recorder, the default card.

The run loop calls ``lerobot_recorder``'s factory with the running policy's spec;
running a scenario to record it is ``testbed.eval.record.record_dataset``. The
recorder writes the dataset's ``card.yaml`` as it opens, so that the episodes
on disk validate from the first ``end_episode`` on, even if the run is killed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.data.card import CARD_FILENAME, DataClass, DatasetCard, Origin, Provenance, Terms, save_card

if TYPE_CHECKING:
    from testbed.data.lerobot import FeatureSpec, LeRobotWriter
    from testbed.policies.protocol import PolicySpec
    from testbed.robots import RobotModel


def default_card(name: str, *, site: str = "testbed-sim", jurisdiction: str = "KR") -> DatasetCard:
    """A card for simulated demonstrations: public data, open terms; provenance filled by the recorder."""
    return DatasetCard(
        name=name,
        description="Demonstrations recorded in the simulated conveyor sorting cell.",
        kind="episodes",
        origin=Origin(site=site, jurisdiction=jurisdiction),  # type: ignore[arg-type]
        owner="testbed",
        licence="CC-BY-4.0",
        collection_date=dt.datetime.now(dt.UTC).date(),
        data_classes={"observation.state": DataClass.PUBLIC},
        terms=Terms(attribution_required=True, redistribution_allowed=True, export_allowed=True),
    )


def episode_features(spec: PolicySpec, joint_names: Sequence[str]) -> dict[str, FeatureSpec]:
    """Dataset features for the cell's frames under a policy spec, with the cell's entry names.

    ``observation.state`` and ``action`` are the joints then ``suction``;
    ``observation.environment_state`` uses ``testbed.policies.observations.ENV_STATE_NAMES``.
    Use it to build a ``LeRobotWriter`` that records a run (``record: true``).
    """
    from testbed.data.lerobot import FeatureSpec, features_from_policy_spec
    from testbed.policies.observations import ENV_STATE_NAMES, state_names

    names = state_names(joint_names)
    features = features_from_policy_spec(spec, names, names)
    env = features.get("observation.environment_state")
    if env is not None and env.shape == (len(ENV_STATE_NAMES),):
        features["observation.environment_state"] = FeatureSpec(env.dtype, env.shape, ENV_STATE_NAMES)
    return features


def recording_card(name: str, features: Sequence[str], spec: PolicySpec,
                   provenance: Provenance | None = None, base: DatasetCard | None = None) -> DatasetCard:
    """The card of a recorded dataset: ``base`` (default: ``default_card``) with each feature's class from it
    (public when it names none), the recording policy added to ``provenance`` (the scenario, seed and run
    that recorded it, when the caller knows them)."""
    base = base or default_card(name)
    policy = f"{spec.model_name}@{spec.model_version}"
    return base.model_copy(
        update={
            "kind": "episodes",
            "data_classes": {key: base.data_classes.get(key, DataClass.PUBLIC) for key in features},
            "provenance": (provenance or Provenance()).model_copy(update={"policy": policy}),
        }
    )


def lerobot_recorder(out_dir: Path, provenance: Provenance | None = None
                     ) -> Callable[[PolicySpec, RobotModel], LeRobotWriter]:
    """A recorder factory for the run loop: a LeRobot v3.0 writer at ``out_dir`` shaped by the policy's spec.

    The factory also writes ``out_dir/card.yaml`` (``recording_card``, with ``provenance``: the run's
    scenario, seed and run id); ``testbed datasets record`` replaces it with a card naming the command
    that recorded it when the recording ends.
    """

    def make(spec: PolicySpec, robot: RobotModel) -> LeRobotWriter:
        from testbed.data.lerobot import LeRobotWriter

        features = episode_features(spec, robot.joint_names)
        # every ended episode on disk at once: a run's episodes end ~0.5 s apart, a checkpoint costs ~10 ms
        writer = LeRobotWriter(out_dir, fps=spec.control_hz, robot_type=robot.name, features=features,
                               checkpoint_s=0.0)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_card(recording_card(out_dir.name, list(features), spec, provenance), out_dir / CARD_FILENAME)
        return writer

    return make
