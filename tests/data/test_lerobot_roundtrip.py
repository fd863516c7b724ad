"""Round trips through LeRobotWriter and read_dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.data.lerobot import (
    FeatureSpec,
    LeRobotWriter,
    features_from_policy_spec,
    read_dataset,
    validate_dataset,
    vector_stats,
)
from testbed.errors import DatasetError
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec

CAMERA = ("height", "width", "channel")


def state_action_features(state_dim: int = 7, action_dim: int = 7) -> dict[str, FeatureSpec]:
    return {
        "observation.state": FeatureSpec("float32", (state_dim,), [f"j{i}" for i in range(state_dim)]),
        "action": FeatureSpec("float32", (action_dim,), [f"a{i}" for i in range(action_dim)]),
    }


def write_random(root: Path, lengths: list[int], seed: int = 0, **kwargs: object) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    written = []
    with LeRobotWriter(root, fps=30, robot_type="cobot7", features=state_action_features(), **kwargs) as w:
        for n in lengths:
            w.start_episode("pick part" if len(written) % 2 == 0 else "place part")
            arrays = {
                "observation.state": rng.normal(size=(n, 7)).astype(np.float32),
                "action": rng.normal(size=(n, 7)).astype(np.float32),
            }
            for i in range(n):
                w.add_frame({k: v[i] for k, v in arrays.items()}, i / 30)
            w.end_episode({"success": n % 2 == 0})
            written.append(arrays)
    return written


def test_state_action_episodes_read_back_identical(tmp_path: Path) -> None:
    lengths = [5, 17, 300, 1]
    written = write_random(tmp_path / "ds", lengths)
    ds = read_dataset(tmp_path / "ds")
    assert ds.version == "v3.0"
    assert ds.num_episodes == 4
    assert ds.num_frames == sum(lengths)
    assert ds.tasks == {0: "pick part", 1: "place part"}
    for index, arrays in enumerate(written):
        episode = ds.episode(index)
        for key, values in arrays.items():
            np.testing.assert_array_equal(episode[key], values)
        np.testing.assert_array_equal(episode["frame_index"], np.arange(lengths[index]))
        np.testing.assert_array_equal(episode["episode_index"], np.full(lengths[index], index))
        np.testing.assert_allclose(episode["timestamp"], np.arange(lengths[index]) / 30, rtol=1e-6)
    assert ds.episodes[2].extra["success"] is True
    assert ds.frames().num_rows == sum(lengths)


def test_dataset_stats_match_recomputation(tmp_path: Path) -> None:
    written = write_random(tmp_path / "ds", [40, 60, 25], seed=1)
    ds = read_dataset(tmp_path / "ds")
    for key in ("observation.state", "action"):
        everything = np.concatenate([arrays[key] for arrays in written])
        expected = vector_stats(everything)
        for name in ("min", "max", "mean", "std", "count"):
            np.testing.assert_allclose(ds.stats[key][name], expected[name], rtol=1e-9, atol=1e-12)
        for index, arrays in enumerate(written):
            episode_expected = vector_stats(arrays[key])
            for name, value in episode_expected.items():
                np.testing.assert_allclose(ds.episodes[index].stats[key][name], value, rtol=1e-12)
    assert validate_dataset(tmp_path / "ds") == []


def test_info_json_has_the_format_keys(tmp_path: Path) -> None:
    write_random(tmp_path / "ds", [3, 4])
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    for key in (
        "codebase_version",
        "robot_type",
        "fps",
        "total_episodes",
        "total_frames",
        "total_tasks",
        "chunks_size",
        "data_path",
        "video_path",
        "features",
        "splits",
    ):
        assert key in info, key
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["total_frames"] == 7
    assert set(info["features"]) >= {"timestamp", "frame_index", "episode_index", "index", "task_index"}
    assert (tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet").exists()
    assert (tmp_path / "ds/meta/tasks.parquet").exists()


def test_small_file_limit_spreads_episodes_over_files_and_chunks(tmp_path: Path) -> None:
    written = write_random(tmp_path / "ds", [200] * 6, chunks_size=2, data_files_size_mb=0)
    ds = read_dataset(tmp_path / "ds")
    paths = [ep.data_path for ep in ds.episodes]
    assert len(set(paths)) == 6
    assert "data/chunk-002/file-001.parquet" in paths
    for index, arrays in enumerate(written):
        np.testing.assert_array_equal(ds.episode(index)["action"], arrays["action"])
    assert validate_dataset(tmp_path / "ds") == []


def test_camera_frames_round_trip_losslessly_as_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    features = state_action_features() | {"observation.images.top": FeatureSpec("image", (16, 20, 3), CAMERA)}
    frames = rng.integers(0, 256, size=(6, 16, 20, 3), dtype=np.uint8)
    with LeRobotWriter(tmp_path / "ds", fps=10, robot_type="cobot7", features=features) as w:
        w.start_episode("look")
        for i in range(6):
            w.add_frame(
                {
                    "observation.state": np.zeros(7, np.float32),
                    "action": np.ones(7, np.float32),
                    "observation.images.top": frames[i],
                },
                i / 10,
            )
        w.end_episode()
    ds = read_dataset(tmp_path / "ds")
    np.testing.assert_array_equal(ds.episode(0)["observation.images.top"], frames)
    stats = ds.stats["observation.images.top"]
    assert stats["mean"].shape == (3, 1, 1)
    np.testing.assert_allclose(stats["mean"].ravel(), frames.reshape(-1, 3).mean(axis=0) / 255.0)
    assert ds.info["features"]["observation.images.top"]["names"] == list(CAMERA)
    assert validate_dataset(tmp_path / "ds") == []


def test_camera_frames_round_trip_closely_as_mp4(tmp_path: Path) -> None:
    features = {
        "observation.images.top": FeatureSpec("image", (32, 32, 3), CAMERA),
        "action": FeatureSpec("float32", (2,), ["x", "y"]),
    }
    frames = np.broadcast_to(np.linspace(10, 240, 8)[:, None, None, None], (8, 32, 32, 3)).astype(np.uint8)
    with LeRobotWriter(tmp_path / "ds", fps=10, robot_type="cobot7", features=features, video=True) as w:
        w.start_episode("look")
        for i in range(8):
            w.add_frame({"observation.images.top": frames[i], "action": np.zeros(2, np.float32)}, i / 10)
        w.end_episode()
    ds = read_dataset(tmp_path / "ds")
    assert ds.features["observation.images.top"].dtype == "video"
    assert (tmp_path / "ds/videos/observation.images.top/chunk-000/file-000.mp4").exists()
    decoded = ds.episode(0)["observation.images.top"]
    assert decoded.shape == frames.shape
    assert np.mean(np.abs(decoded.astype(float) - frames)) < 4.0
    assert validate_dataset(tmp_path / "ds") == []


@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=5),
    dim=st.integers(min_value=1, max_value=9),
    dtype=st.sampled_from(["float32", "float64", "int64"]),
)
def test_any_numeric_episodes_round_trip(
    tmp_path_factory: pytest.TempPathFactory, lengths: list[int], dim: int, dtype: str
) -> None:
    root = tmp_path_factory.mktemp("ds") / "ds"
    rng = np.random.default_rng(len(lengths) * 31 + dim)
    features = {"observation.state": FeatureSpec(dtype, (dim,), [f"s{i}" for i in range(dim)])}
    episodes = [(rng.normal(size=(n, dim)) * 100).astype(dtype) for n in lengths]
    with LeRobotWriter(root, fps=15, robot_type="scara4", features=features) as w:
        for values in episodes:
            w.start_episode("t")
            for row in values:
                w.add_frame({"observation.state": row}, 0.0)
            w.end_episode()
    ds = read_dataset(root)
    for index, values in enumerate(episodes):
        got = ds.episode(index)["observation.state"]
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got.reshape(values.shape), values)
    assert validate_dataset(root) == []


def test_frame_with_wrong_dtype_is_refused_naming_the_key(tmp_path: Path) -> None:
    w = LeRobotWriter(tmp_path / "ds", fps=30, robot_type="cobot7", features=state_action_features())
    w.start_episode("pick")
    with pytest.raises(DatasetError, match=r"episode 0 frame 0 action: expected float32 \(7,\), got float64"):
        w.add_frame({"observation.state": np.zeros(7, np.float32), "action": np.zeros(7)}, 0.0)
    with pytest.raises(DatasetError, match=r"missing: \['action'\]"):
        w.add_frame({"observation.state": np.zeros(7, np.float32), "extra": np.zeros(7)}, 0.0)


def test_camera_feature_without_names_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"observation.images.top.*names"):
        LeRobotWriter(
            tmp_path / "ds",
            fps=30,
            robot_type="r",
            features={"observation.images.top": FeatureSpec("image", (8, 8, 3), None)},
        )


def test_writer_refuses_an_existing_dataset(tmp_path: Path) -> None:
    write_random(tmp_path / "ds", [2])
    with pytest.raises(DatasetError, match="already holds a dataset"):
        LeRobotWriter(tmp_path / "ds", fps=30, robot_type="r", features=state_action_features())


def test_close_with_open_episode_is_refused(tmp_path: Path) -> None:
    w = LeRobotWriter(tmp_path / "ds", fps=30, robot_type="r", features=state_action_features())
    w.start_episode("pick")
    with pytest.raises(DatasetError, match="episode 0 is still open"):
        w.close()


def test_features_from_policy_spec_names_every_entry() -> None:
    spec = PolicySpec(
        observation={
            "observation.state": TensorSpec("float32", (3,)),
            "observation.environment_state": TensorSpec("float32", (2,)),
            "observation.images.wrist": TensorSpec("uint8", (48, 64, 3)),
        },
        action_kind=ActionKind.JOINT_POSITIONS,
        action_dim=4,
        chunk_size=8,
        control_hz=20,
    )
    features = features_from_policy_spec(spec, ["a", "b", "c"], ["j1", "j2", "j3", "grip"])
    assert features["observation.state"].names == ("a", "b", "c")
    assert features["observation.images.wrist"] == FeatureSpec("image", (48, 64, 3), CAMERA)
    assert features["action"] == FeatureSpec("float32", (4,), ("j1", "j2", "j3", "grip"))
    assert len(features["observation.environment_state"].names) == 2
    with pytest.raises(DatasetError, match=r"'action'\].names: expected 4 names"):
        features_from_policy_spec(spec, ["a", "b", "c"], ["j1"])
