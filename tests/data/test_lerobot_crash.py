"""A recording process killed mid-episode leaves the episodes it ended as a valid dataset."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from testbed.data.lerobot import FeatureSpec, LeRobotWriter, read_dataset, validate_dataset
from testbed.data.lerobot import writer as writer_module
from testbed.errors import DatasetError

REPO = Path(__file__).resolve().parents[2]

# episode e has 40 + 10 e frames: state = e + frame / 100, action = -state
_RECORD_THEN_DIE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import numpy as np
    from testbed.data.lerobot import FeatureSpec, LeRobotWriter

    names = ["a", "b", "c"]
    w = LeRobotWriter(Path(sys.argv[1]), fps=20, robot_type="gp7",
                      features={"observation.state": FeatureSpec("float32", (3,), names),
                                "action": FeatureSpec("float32", (3,), names)}, checkpoint_s=0.0)
    for e in range(3):
        w.start_episode("sort")
        for k in range(40 + 10 * e):
            state = np.full(3, e + k / 100, np.float32)
            w.add_frame({"observation.state": state, "action": -state}, k / 20)
        if e < 2:
            w.end_episode({"success": e == 1})
    print("recorded", flush=True)
    os._exit(1)  # killed mid-episode 3: no end_episode, no close
    """
)


def test_killed_recorder_leaves_ended_episodes_valid(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    done = subprocess.run([sys.executable, "-c", _RECORD_THEN_DIE, str(root)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 1 and "recorded" in done.stdout, done.stderr[-2000:]
    assert validate_dataset(root) == []
    ds = read_dataset(root)
    assert ds.num_episodes == 2 and ds.num_frames == 40 + 50
    for e in range(2):
        episode = ds.episode(e)
        state = (e + np.arange(40 + 10 * e) / 100).astype(np.float32)
        np.testing.assert_array_equal(episode["observation.state"], np.repeat(state[:, None], 3, axis=1))
        np.testing.assert_array_equal(episode["action"], -episode["observation.state"])
    assert [ep.extra["success"] for ep in ds.episodes] == [False, True]
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_dataset_is_valid_after_every_end_episode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a tiny metadata limit puts every episode's metadata row into a file of its own
    monkeypatch.setattr(writer_module, "_EPISODES_FILE_LIMIT_BYTES", 1)
    root = tmp_path / "ds"
    names = ["a", "b"]
    features = {"observation.state": FeatureSpec("float32", (2,), names), "action": FeatureSpec("float32", (2,), names)}
    writer = LeRobotWriter(root, fps=10, robot_type="r", features=features, chunks_size=2, checkpoint_s=0.0)
    for e in range(5):
        writer.start_episode(f"task {e % 2}")
        for k in range(5 + e):
            writer.add_frame({"observation.state": np.full(2, k, np.float32), "action": np.full(2, e, np.float32)},
                             k / 10)
        writer.end_episode({"seed": e})
        assert validate_dataset(root) == [], e
        ds = read_dataset(root)
        assert ds.num_episodes == e + 1
        np.testing.assert_array_equal(ds.episode(e)["action"], np.full((5 + e, 2), e, np.float32))
    writer.close()
    assert len(list((root / "meta/episodes").glob("chunk-*/file-*.parquet"))) == 5
    assert (root / "meta/episodes/chunk-002/file-000.parquet").exists()
    assert [ep.extra["seed"] for ep in read_dataset(root).episodes] == list(range(5))


def test_a_data_file_no_episode_points_to_is_named(tmp_path: Path) -> None:
    # what a kill between an episode's data file and its metadata would leave: LeRobot would load the rows
    root = tmp_path / "ds"
    names = ["a", "b"]
    features = {"observation.state": FeatureSpec("float32", (2,), names), "action": FeatureSpec("float32", (2,), names)}
    with LeRobotWriter(root, fps=10, robot_type="r", features=features) as writer:
        writer.start_episode("pick")
        writer.add_frame({"observation.state": np.zeros(2, np.float32), "action": np.zeros(2, np.float32)}, 0.0)
        writer.end_episode()
    (root / "data/chunk-000/file-001.parquet").write_bytes((root / "data/chunk-000/file-000.parquet").read_bytes())
    problems = validate_dataset(root)
    assert len(problems) == 1 and problems[0].startswith(
        "data/chunk-000/file-001.parquet: data file no episode in meta/episodes points to"
    ), problems


def test_episodes_within_the_checkpoint_window_go_to_disk_together_at_the_next_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    names = ["a", "b"]
    features = {"observation.state": FeatureSpec("float32", (2,), names), "action": FeatureSpec("float32", (2,), names)}
    writer = LeRobotWriter(root, fps=10, robot_type="r", features=features, checkpoint_s=3600.0)
    for e in range(3):
        writer.start_episode("pick")
        for k in range(4 + e):
            writer.add_frame({"observation.state": np.full(2, k, np.float32), "action": np.full(2, e, np.float32)},
                             k / 10)
        writer.end_episode({"seed": e})
    assert not (root / "meta/info.json").exists()  # nothing written inside the window
    writer.checkpoint()
    assert validate_dataset(root) == [] and read_dataset(root).num_episodes == 3
    assert [p.name for p in sorted((root / "data").rglob("*.parquet"))] == ["file-000.parquet"]
    writer.start_episode("pick")
    writer.add_frame({"observation.state": np.zeros(2, np.float32), "action": np.full(2, 3, np.float32)}, 0.0)
    writer.end_episode({"seed": 3})
    writer.close()  # the last checkpoint: a second data file, never a rewrite of the first
    ds = read_dataset(root)
    assert validate_dataset(root) == [] and ds.num_episodes == 4
    assert [ep.extra["seed"] for ep in ds.episodes] == [0, 1, 2, 3]
    np.testing.assert_array_equal(ds.episode(2)["action"], np.full((6, 2), 2, np.float32))
    assert [p.name for p in sorted((root / "data").rglob("*.parquet"))] == ["file-000.parquet", "file-001.parquet"]


def test_a_negative_checkpoint_window_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="checkpoint_s must be >= 0 seconds, got -1"):
        LeRobotWriter(tmp_path / "ds", fps=10, robot_type="r",
                      features={"action": FeatureSpec("float32", (2,), ["a", "b"])}, checkpoint_s=-1)
