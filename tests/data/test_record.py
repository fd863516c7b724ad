"""`testbed datasets record`: a real scenario recorded, read back, validated, exported to a bag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testbed.cli import main
from testbed.data.bag import export_bag
from testbed.data.card import load_card
from testbed.data.inspect import check_dataset
from testbed.data.lerobot import read_dataset

LAUNCH = Path(__file__).resolve().parents[2] / "launch/factory_cell.yaml"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("rec")
    out, runs = tmp / "demos", tmp / "runs"
    code = main(
        ["datasets", "record", str(LAUNCH), "seed:=3", "--episodes", "2", "--out", str(out), "--runs-dir", str(runs)]
    )
    assert code == 0
    (run_dir,) = runs.iterdir()
    return out, run_dir


def test_recorded_dataset_reads_back_with_expert_actions(recorded: tuple[Path, Path]) -> None:
    out, _ = recorded
    ds = read_dataset(out)
    assert ds.num_episodes == 2 and ds.num_frames > 0
    episode = ds.episode(0)
    n = len(episode["action"])
    assert episode["observation.state"].shape == (n, 7) and episode["observation.environment_state"].shape == (n, 11)
    assert episode["action"].dtype == np.float32
    assert set(np.unique(episode["action"][:, -1])) <= {0.0, 1.0}  # suction column


def test_recorded_dataset_validates_and_card_names_its_provenance(recorded: tuple[Path, Path]) -> None:
    out, run_dir = recorded
    assert check_dataset(out) == []
    card = load_card(out)
    assert card.provenance.seed == 3
    assert card.provenance.policy is not None and card.provenance.policy.startswith("expert")
    assert run_dir.name in (card.provenance.derived_from or "")
    assert set(card.data_classes) == {"observation.state", "observation.environment_state", "action"}


def test_info_prints_card_and_counts(recorded: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = recorded
    capsys.readouterr()
    assert main(["datasets", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "episodes: 2" in text and "codebase_version: v3.0" in text
    assert "policy=expert" in text


def test_real_run_exports_to_bag(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    _, run_dir = recorded
    result = export_bag(run_dir, tmp_path / "bag")
    counts = result.message_counts
    assert counts["/cell/arm1/joint_states"] == counts["/tf"] == counts["/cell/arm1/joint_commands"] > 0
    assert counts["/cell/arm1/tcp_pose"] == counts["/tf"]
    assert counts["/cell/events"] == sum(1 for line in (run_dir / "events.jsonl").read_text().splitlines() if line)


def test_record_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("")
    assert main(["datasets", "record", str(LAUNCH), "--episodes", "1", "--out", str(tmp_path / "x")]) == 2
