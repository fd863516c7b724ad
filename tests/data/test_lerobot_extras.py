"""Per-episode extra columns (``end_episode(extra)``): kept whenever they first appear, typed once."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from testbed.data.lerobot import FeatureSpec, LeRobotWriter, read_dataset, validate_dataset
from testbed.data.lerobot import writer as writer_module
from testbed.errors import DatasetError

NAMES = ["a", "b", "c"]


def writer(root: Path) -> LeRobotWriter:
    features = {"observation.state": FeatureSpec("float32", (3,), NAMES), "action": FeatureSpec("float32", (3,), NAMES)}
    return LeRobotWriter(root, fps=20, robot_type="gp7", features=features, checkpoint_s=0.0)


def metadata_schemas(root: Path) -> list[object]:
    """The schema of every meta/episodes file; LeRobot loads them as one table, so they must agree."""
    return [pq.read_schema(p) for p in sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))]


def record(w: LeRobotWriter, extra: Mapping[str, Any]) -> None:
    w.start_episode("sort")
    for k in range(5):
        w.add_frame({"observation.state": np.full(3, k, np.float32), "action": np.zeros(3, np.float32)}, k / 20)
    w.end_episode(extra)


@pytest.mark.parametrize("meta_limit", [1024 * 1024, 1], ids=["one-metadata-file", "a-metadata-file-each"])
def test_extras_first_given_in_a_later_episode_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meta_limit: int
) -> None:
    monkeypatch.setattr(writer_module, "_EPISODES_FILE_LIMIT_BYTES", meta_limit)
    root = tmp_path / "ds"
    with writer(root) as w:
        for extra in ({}, {"success": True}, {"success": False, "seed": 3}, {"seed": np.int32(4)}):
            record(w, extra)
    assert validate_dataset(root) == []
    schemas = metadata_schemas(root)
    assert len(schemas) == (1 if meta_limit > 1 else 4) and all(s == schemas[0] for s in schemas)
    episodes = read_dataset(root).episodes
    assert [ep.extra.get("success") for ep in episodes] == [None, True, False, None]
    assert [ep.extra.get("seed") for ep in episodes] == [None, None, 3, 4]


def test_integers_and_floats_share_a_float_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "_EPISODES_FILE_LIMIT_BYTES", 1)  # a metadata file per episode
    root = tmp_path / "ds"
    with writer(root) as w:
        for extra in ({"score": 3}, {"score": np.float32(2.5)}, {"score": 1}):
            record(w, extra)
    schemas = metadata_schemas(root)
    assert len(schemas) == 3 and all(s == schemas[0] for s in schemas)
    scores = [ep.extra["score"] for ep in read_dataset(root).episodes]
    assert scores == [3.0, 2.5, 1.0] and all(isinstance(s, float) for s in scores)


@pytest.mark.parametrize(
    ("value", "message"),
    [(1, "extra['success']: expected bool like episode 0's, got integer 1"),
     ("x", "extra['success']: expected bool like episode 0's, got string 'x'")],
)
def test_a_type_conflict_is_refused_at_end_episode_naming_key_and_episodes(
    tmp_path: Path, value: object, message: str
) -> None:
    root = tmp_path / "ds"
    w = writer(root)
    record(w, {"success": True})
    record(w, {"success": False, "seed": 1})
    w.start_episode("sort")
    w.add_frame({"observation.state": np.zeros(3, np.float32), "action": np.zeros(3, np.float32)}, 0.0)
    with pytest.raises(DatasetError, match=f"episode 2 {message}".replace("[", r"\[").replace("]", r"\]")):
        w.end_episode({"success": value})
    w.end_episode({"success": True})  # the episode stayed open: end it with a fitting value
    w.close()
    assert validate_dataset(root) == []
    assert [ep.extra["success"] for ep in read_dataset(root).episodes] == [True, False, True]
