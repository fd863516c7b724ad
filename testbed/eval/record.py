"""Record demonstrations: run a scenario and keep every policy step as a LeRobot episode.

``record_dataset`` runs the scenario with a ``LeRobotWriter`` as the run loop's recorder
(its features derived from the running policy's spec) and writes the dataset's ``card.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.data.card import DatasetCard, Provenance, save_card
from testbed.data.lerobot import LeRobotWriter
from testbed.data.record import episode_features, lerobot_recorder, recording_card
from testbed.errors import DatasetError
from testbed.eval.runner import run_scenario
from testbed.policies.protocol import PolicySpec
from testbed.robots import RobotModel, load_robot
from testbed.scenario import load


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

    provenance = Provenance(
        scenario=str(launch_file),
        seed=scenario.seed,
        generator=" ".join(["testbed datasets record", str(launch_file), *overrides, f"--episodes {episodes}"]),
        derived_from=f"run {result.run_id}",
    )
    save_card(recording_card(out_dir.name, list(features), spec, provenance, base=card), out_dir)
    return RecordResult(out_dir, result.run_dir, result.metrics)
