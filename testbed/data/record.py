"""Record demonstrations: run a scenario and keep every policy step as a LeRobot episode.

``record_dataset`` asks the scenario's policy for its spec first, derives the
dataset features from it (``observation.state``, ``observation.environment_state``,
cameras, ``action``), then runs the scenario with a ``LeRobotWriter`` as the
run loop's recorder and writes the dataset's ``card.yaml``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.data.card import DataClass, DatasetCard, Origin, Provenance, Terms, save_card
from testbed.errors import DatasetError

if TYPE_CHECKING:
    from testbed.data.lerobot import FeatureSpec, LeRobotWriter
    from testbed.policies.protocol import PolicySpec
    from testbed.robots import RobotModel



@dataclass(frozen=True)
class RecordResult:
    """A recorded dataset and the run that produced it.

    Args:
        dataset_dir: the LeRobot dataset written.
        run_dir: the run record (events, metrics, joint trace).
        metrics: the run's ``metrics.json`` content.
    """

    dataset_dir: Path
    run_dir: Path
    metrics: dict[str, Any]


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
    ``observation.environment_state`` uses ``testbed.sim.cell.ENV_STATE_NAMES``.
    Use it to build a ``LeRobotWriter`` that records a run (``record: true``).
    """
    from testbed.data.lerobot import FeatureSpec, features_from_policy_spec
    from testbed.sim.observations import ENV_STATE_NAMES

    names = [*joint_names, "suction"]
    features = features_from_policy_spec(spec, names, names)
    env = features.get("observation.environment_state")
    if env is not None and env.shape == (len(ENV_STATE_NAMES),):
        features["observation.environment_state"] = FeatureSpec(env.dtype, env.shape, ENV_STATE_NAMES)
    return features


def lerobot_recorder(out_dir: Path) -> Callable[[PolicySpec, RobotModel], LeRobotWriter]:
    """A recorder factory for the run loop: a LeRobot v3.0 writer at ``out_dir`` shaped by the policy's spec."""

    def make(spec: PolicySpec, robot: RobotModel) -> LeRobotWriter:
        from testbed.data.lerobot import LeRobotWriter

        features = episode_features(spec, robot.joint_names)
        return LeRobotWriter(out_dir, fps=spec.control_hz, robot_type=robot.name, features=features)

    return make


def record_dataset(
    launch_file: Path,
    out_dir: Path,
    *,
    episodes: int,
    overrides: Sequence[str] = (),
    runs_dir: Path = Path("runs"),
    card: DatasetCard | None = None,
    progress: Callable[[str], None] | None = None,
) -> RecordResult:
    """Run ``episodes`` episodes of a launch file and write them as a LeRobot dataset.

    Args:
        launch_file: scenario YAML; its policy (the expert by default) acts.
        out_dir: dataset directory to create.
        episodes: episodes to record (overrides the file's ``episodes``).
        overrides: ``key:=value`` overrides applied before ``episodes``.
        runs_dir: where the run record goes.
        card: card to write (its ``data_classes`` and ``provenance`` are filled in);
            default ``default_card``.
        progress: called with one line per finished episode.

    Raises:
        DatasetError: ``out_dir`` already holds a dataset, or the cell has more than one robot.
        ScenarioError, SpecMismatch, PolicyUnavailable: from loading and running the scenario.
    """
    from testbed.eval.runner import run_scenario
    from testbed.robots import load_robot
    from testbed.scenario import load

    if episodes < 1:
        raise DatasetError(f"--episodes: expected a positive integer, got {episodes}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DatasetError(f"{out_dir}: exists and is not empty; choose a new directory")
    loaded = load(launch_file, [*overrides, f"episodes:={episodes}"])
    scenario = loaded.scenario
    if len(scenario.cell.robots) != 1:
        raise DatasetError(
            f"{launch_file} cell.robots: recording supports one robot per cell, got {len(scenario.cell.robots)}"
        )
    specs: list[PolicySpec] = []
    make_writer = lerobot_recorder(out_dir)

    def make_recorder(spec: PolicySpec, robot: RobotModel) -> LeRobotWriter:
        specs.append(spec)
        return make_writer(spec, robot)

    result = run_scenario(loaded, runs_dir=runs_dir, make_recorder=make_recorder, progress=progress)
    spec = specs[0]
    features = episode_features(spec, load_robot(scenario.cell.robots[0].model).joint_names)

    base = card or default_card(out_dir.name)
    provenance = Provenance(
        scenario=str(launch_file),
        policy=f"{spec.model_name}@{spec.model_version}",
        seed=scenario.seed,
        generator=" ".join(["testbed datasets record", str(launch_file), *overrides, f"--episodes {episodes}"]),
        derived_from=f"run {result.run_id}",
    )
    classes = {key: base.data_classes.get(key, DataClass.PUBLIC) for key in features}
    save_card(base.model_copy(update={"kind": "episodes", "data_classes": classes, "provenance": provenance}), out_dir)
    return RecordResult(out_dir, result.run_dir, result.metrics)
