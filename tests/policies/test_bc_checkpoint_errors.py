"""A malformed BC checkpoint is refused by ``BCPolicy.load``, naming the file and the key, before any act."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testbed.errors import DatasetError
from testbed.policies.bc import BCPolicy, spec_to_json
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec

SPEC = PolicySpec({"observation.state": TensorSpec("float32", (7,))}, ActionKind.JOINT_POSITIONS, 7, 2, 20.0,
                  model_name="m", model_version="1")


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "format": np.array("testbed-bc-knn/1"),
        "spec_json": np.array(spec_to_json(SPEC)),
        "obs_mean": np.zeros(7),
        "obs_std": np.ones(7),
        "obs": rng.normal(size=(3, 7)).astype(np.float32),
        "chunks": rng.normal(size=(3, 2, 7)).astype(np.float32),
        "delta_joints": np.array(0),
        "k": np.array(1),
        "replan_every": np.array(1),
    }


def _write(tmp_path: Path, **changes: np.ndarray) -> Path:
    path = tmp_path / "model.npz"
    np.savez(path, **{**_arrays(), **changes})
    return path


def test_a_well_formed_checkpoint_loads_and_acts(tmp_path: Path) -> None:
    policy = BCPolicy.load(_write(tmp_path))
    assert policy.act({"observation.state": np.zeros(7, np.float32)}).shape == (SPEC.chunk_size, 7)


@pytest.mark.parametrize(("changes", "message"), [
    ({"spec_json": np.array("{bad json")}, "spec_json: not a policy spec"),
    ({"spec_json": np.array('{"observation": {}}')}, "spec_json: not a policy spec"),
    ({"obs_mean": np.zeros(3)}, r"obs_mean has shape \(3,\), expected \(7,\)"),
    ({"obs_std": np.ones(8)}, r"obs_std has shape \(8,\), expected \(7,\)"),
    ({"obs_std": np.array([1.0, 1, 1, 0, 1, 1, 1])}, "obs_std must be positive"),
    ({"obs_mean": np.array([0.0, 0, np.nan, 0, 0, 0, 0])}, "obs_mean holds NaN"),
    ({"obs": np.zeros((3, 5), np.float32)}, "obs has 5 columns"),
])
def test_a_malformed_checkpoint_is_refused_naming_file_and_key(
        tmp_path: Path, changes: dict[str, np.ndarray], message: str) -> None:
    path = _write(tmp_path, **changes)
    with pytest.raises(DatasetError, match=message) as caught:
        BCPolicy.load(path)
    assert str(path) in str(caught.value)
