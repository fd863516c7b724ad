"""validate_dataset names each problem of a broken dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testbed.data.lerobot import FeatureSpec, LeRobotWriter, read_dataset, validate_dataset
from testbed.errors import DatasetError


def make(root: Path, lengths: tuple[int, ...] = (5, 8, 6), camera: bool = False, files_mb: int = 100) -> Path:
    rng = np.random.default_rng(5)
    features = {
        "observation.state": FeatureSpec("float32", (3,), ["a", "b", "c"]),
        "action": FeatureSpec("float32", (3,), ["a", "b", "c"]),
    }
    if camera:
        features["observation.images.top"] = FeatureSpec("image", (8, 8, 3), ("height", "width", "channel"))
    with LeRobotWriter(root, fps=20, robot_type="r", features=features, data_files_size_mb=files_mb) as w:
        for n in lengths:
            w.start_episode("pick")
            for i in range(n):
                frame = {k: rng.normal(size=3).astype(np.float32) for k in ("observation.state", "action")}
                if camera:
                    frame["observation.images.top"] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                w.add_frame(frame, i / 20)
            w.end_episode()
    return root


def edit_json(path: Path, change: dict[tuple[str, ...], object]) -> None:
    data = json.loads(path.read_text())
    for keys, value in change.items():
        target = data
        *parents, last = keys
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
    path.write_text(json.dumps(data))


def test_valid_dataset_has_no_problems(tmp_path: Path) -> None:
    assert validate_dataset(make(tmp_path / "ds")) == []


def test_missing_data_file_is_named(tmp_path: Path) -> None:
    root = make(tmp_path / "ds", files_mb=0)  # one file per episode
    (root / "data/chunk-000/file-001.parquet").unlink()
    problems = validate_dataset(root)
    assert any("data/chunk-000/file-001.parquet: data file is missing (episodes [1])" in p for p in problems)


def test_missing_info_json_is_the_one_problem(tmp_path: Path) -> None:
    root = make(tmp_path / "ds")
    (root / "meta/info.json").unlink()
    problems = validate_dataset(root)
    assert len(problems) == 1 and "info.json: file is missing" in problems[0]


def test_bad_stats_are_named_by_feature_and_statistic(tmp_path: Path) -> None:
    root = make(tmp_path / "ds")
    edit_json(root / "meta/stats.json", {("action", "mean"): [9.0, 9.0, 9.0], ("observation.state", "count"): [999]})
    problems = validate_dataset(root)
    assert any(
        p.startswith("meta/stats.json action.mean: stored [9., 9., 9.] differs from recomputed") for p in problems
    )
    assert any(p.startswith("meta/stats.json observation.state.count: stored [999]") for p in problems)
    assert len(problems) == 2


def test_camera_key_missing_from_stats_is_named(tmp_path: Path) -> None:
    root = make(tmp_path / "ds", camera=True)
    assert validate_dataset(root) == []
    edit_json(root / "meta/stats.json", {("observation.images.top",): None})
    assert validate_dataset(root) == ["meta/stats.json: camera feature 'observation.images.top' has no statistics"]


def test_camera_feature_without_names_is_named(tmp_path: Path) -> None:
    root = make(tmp_path / "ds", camera=True)
    edit_json(root / "meta/info.json", {("features", "observation.images.top", "names"): None})
    problems = validate_dataset(root)
    assert any("features['observation.images.top'].names: a camera feature needs 3 axis names" in p for p in problems)


def test_wrong_frame_counts_are_named(tmp_path: Path) -> None:
    root = make(tmp_path / "ds")
    episodes = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(episodes)
    lengths = table.column("length").to_pylist()
    lengths[1] = 7  # the data holds 8
    table = table.set_column(table.schema.get_field_index("length"), "length", pa.array(lengths, pa.int64()))
    pq.write_table(table, episodes)
    edit_json(root / "meta/info.json", {("total_frames",): 30})
    problems = validate_dataset(root)
    assert "data/chunk-000/file-000.parquet episode 1: metadata length is 7, the data holds 8 frames" in problems
    assert "meta/info.json total_frames: says 30, episode lengths add up to 18" in problems
    assert any("episode 1: dataset_from_index..dataset_to_index is 5..13 for length 7" in p for p in problems)
    assert "data: files hold 19 frames, meta/info.json total_frames says 30" in problems


def test_wrong_column_type_is_named(tmp_path: Path) -> None:
    root = make(tmp_path / "ds", lengths=(4,))
    path = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    doubled = pa.array(table.column("action").combine_chunks().flatten().to_numpy().astype(np.float64))
    table = table.set_column(
        table.schema.get_field_index("action"), "action", pa.FixedSizeListArray.from_arrays(doubled, 3)
    )
    pq.write_table(table, path)
    problems = validate_dataset(root)
    assert any("data column 'action': expected arrow type list<float>[3]" in p for p in problems)


def test_unknown_version_is_refused_by_reader_and_named_by_validator(tmp_path: Path) -> None:
    root = make(tmp_path / "ds")
    edit_json(root / "meta/info.json", {("codebase_version",): "v9.9"})
    with pytest.raises(DatasetError, match=r"codebase_version: expected one of v3.0, v2.1, got 'v9.9'"):
        read_dataset(root)
    assert validate_dataset(root) == ["meta/info.json codebase_version: expected one of v3.0, v2.1, got 'v9.9'"]
