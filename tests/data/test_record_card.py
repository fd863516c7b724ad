"""A `record: true` run's dataset carries its card: it validates whole, and after a kill mid-run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testbed.cli import main
from testbed.data.card import load_card
from testbed.data.inspect import check_dataset
from testbed.data.lerobot import read_dataset
from testbed.eval.runner import run_scenario
from testbed.scenario import load

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch/factory_cell.yaml"
LOCAL_EXPERT = ("policy.serve:=null", "policy.builtin:=expert")


def test_record_true_run_dataset_validates_with_its_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load(LAUNCH, ["episodes:=1", "sim.max_episode_s:=3", "record:=true", *LOCAL_EXPERT])
    result = run_scenario(loaded, runs_dir=tmp_path)
    dataset = result.run_dir / "dataset"
    assert check_dataset(dataset) == []
    assert main(["datasets", "validate", str(dataset)]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")
    card = load_card(dataset)
    assert card.kind == "episodes" and card.provenance.policy is not None and "expert" in card.provenance.policy
    # the run that recorded it: enough to reproduce the dataset
    assert card.provenance.scenario == str(LAUNCH) and card.provenance.seed == loaded.scenario.seed
    assert card.provenance.derived_from == f"run {result.run_id}"
    assert set(card.data_classes) == {"observation.state", "observation.environment_state", "action"}


# a run recording 3 episodes whose process dies 30 frames into episode 1 (no end_episode, no close)
_KILLED_RUN = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from testbed.data.record import lerobot_recorder
    from testbed.eval.runner import run_scenario
    from testbed.scenario import load

    out, runs = Path(sys.argv[1]), Path(sys.argv[2])
    make = lerobot_recorder(out)

    class DiesMidEpisode:
        def __init__(self, writer):
            self.writer, self.episode, self.frames = writer, -1, 0

        def __getattr__(self, name):
            return getattr(self.writer, name)

        def start_episode(self, task):
            self.episode, self.frames = self.writer.start_episode(task), 0
            return self.episode

        def add_frame(self, frame, timestamp_s):
            self.frames += 1
            if self.episode == 1 and self.frames == 30:
                print("dying", flush=True)
                os._exit(1)
            self.writer.add_frame(frame, timestamp_s)

    loaded = load(sys.argv[3], ["episodes:=3", "sim.max_episode_s:=3", "policy.serve:=null", "policy.builtin:=expert"])
    run_scenario(loaded, runs_dir=runs, make_recorder=lambda spec, robot: DiesMidEpisode(make(spec, robot)))
    """
)


def test_killed_recording_run_leaves_a_dataset_that_validates(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    done = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(out), str(tmp_path / "runs"), str(LAUNCH)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 1 and "dying" in done.stdout, done.stderr[-3000:]
    assert check_dataset(out) == []
    dataset = read_dataset(out)
    assert dataset.num_episodes == 1 and dataset.num_frames == 3 * 20  # episode 0 whole at the expert's 20 Hz
