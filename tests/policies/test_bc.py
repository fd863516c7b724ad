"""Behaviour cloning: nearest-neighbour action chunks, model files without pickle, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testbed.data.lerobot import FeatureSpec, LeRobotWriter
from testbed.errors import DatasetError
from testbed.policies.bc import BCPolicy, spec_from_json, spec_to_json, train_bc
from testbed.policies.protocol import Policy

STATE, ENV, ACTION = 4, 3, 4


def _write_demos(root: Path, episodes: int = 3, frames: int = 30, fail: tuple[int, ...] = ()) -> None:
    """Demonstrations of a smooth reach: the action is the next state, moving toward a per-episode goal."""
    features = {
        "observation.state": FeatureSpec("float32", (STATE,), [f"s{i}" for i in range(STATE)]),
        "observation.environment_state": FeatureSpec("float32", (ENV,), [f"e{i}" for i in range(ENV)]),
        "action": FeatureSpec("float32", (ACTION,), [f"a{i}" for i in range(ACTION)]),
    }
    rng = np.random.default_rng(7)
    with LeRobotWriter(root, fps=20, robot_type="toy", features=features) as writer:
        for ep in range(episodes):
            goal = rng.uniform(-1, 1, ENV).astype(np.float32)
            state = np.zeros(STATE, np.float32)
            writer.start_episode("reach")
            for t in range(frames):
                target = state.copy()
                target[:ENV] += 0.2 * (goal - state[:ENV])
                target[ENV] = 1.0 if t > frames // 2 else 0.0
                writer.add_frame(
                    {"observation.state": state.copy(), "observation.environment_state": goal, "action": target},
                    t / 20,
                )
                state = target
            writer.end_episode({"success": ep not in fail})


def _obs(state: np.ndarray, env: np.ndarray) -> dict[str, np.ndarray]:
    return {"observation.state": state.astype(np.float32), "observation.environment_state": env.astype(np.float32)}


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demos") / "ds"
    _write_demos(root)
    return root


def test_nearest_frame_returns_its_demonstrated_chunk(demos: Path, tmp_path: Path) -> None:
    from testbed.data.lerobot import read_dataset

    train_bc(demos, tmp_path / "m.npz", chunk_size=5, k=1)
    policy = BCPolicy.load(tmp_path / "m.npz")
    episode = read_dataset(demos).episode(1)
    t = 7
    chunk = policy.predict(_obs(episode["observation.state"][t], episode["observation.environment_state"][t]))
    np.testing.assert_allclose(chunk, episode["action"][t : t + 5], atol=1e-5)


def test_last_frames_repeat_the_final_action(demos: Path, tmp_path: Path) -> None:
    from testbed.data.lerobot import read_dataset

    train_bc(demos, tmp_path / "m.npz", chunk_size=5, k=1)
    policy = BCPolicy.load(tmp_path / "m.npz")
    episode = read_dataset(demos).episode(0)
    chunk = policy.predict(_obs(episode["observation.state"][-2], episode["observation.environment_state"][-2]))
    np.testing.assert_allclose(chunk[1:], np.repeat(episode["action"][-1:], 4, axis=0), atol=1e-5)


def test_policy_plays_its_chunk_then_replans(demos: Path, tmp_path: Path) -> None:
    train_bc(demos, tmp_path / "m.npz", chunk_size=6, k=2, replan_every=3)
    policy = BCPolicy.load(tmp_path / "m.npz")
    assert isinstance(policy, Policy)
    obs = _obs(np.zeros(STATE), np.array([0.5, -0.2, 0.1]))
    first = policy.act(obs)
    policy.spec().validate_action(first)
    assert first.shape == (6, ACTION)
    np.testing.assert_array_equal(policy.act(obs), first[1:])
    np.testing.assert_array_equal(policy.act(obs), first[2:])
    assert policy.act(obs).shape == (6, ACTION)  # fourth call: a fresh query
    policy.reset(1)
    np.testing.assert_array_equal(policy.act(obs), first)


def test_model_file_is_plain_npz_with_spec(demos: Path, tmp_path: Path) -> None:
    train_bc(demos, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        spec = spec_from_json(str(data["spec_json"]))
    assert spec.action_dim == ACTION and spec.control_hz == 20.0
    assert spec_from_json(spec_to_json(spec)) == spec
    assert BCPolicy.load(tmp_path / "m.npz").spec() == spec


def test_training_is_deterministic_given_seed(demos: Path, tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        train_bc(demos, tmp_path / f"{name}.npz", max_samples=40, seed=seed)
    a, b, c = (BCPolicy.load(tmp_path / f"{n}.npz") for n in "abc")
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.chunks, b.chunks)
    assert a.obs.shape[0] == 40
    assert not np.array_equal(a.obs, c.obs)


def test_failed_episodes_are_left_out(tmp_path: Path) -> None:
    _write_demos(tmp_path / "ds", episodes=3, frames=10, fail=(1,))
    report = train_bc(tmp_path / "ds", tmp_path / "m.npz")
    assert (report.episodes, report.frames, report.skipped_episodes) == (2, 20, 1)


def test_missing_feature_is_named(demos: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"'observation\.images\.top' missing"):
        train_bc(demos, tmp_path / "m.npz", obs_keys=("observation.state", "observation.images.top"))


def test_bad_weights_are_named(demos: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"weights\['observation.state'\]: expected 4"):
        train_bc(demos, tmp_path / "m.npz", weights={"observation.state": [1.0, 2.0]})


def test_not_a_model_file_is_an_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DatasetError, match="not a BC model"):
        BCPolicy.load(tmp_path / "other.npz")
    with pytest.raises(DatasetError, match="cannot read"):
        BCPolicy.load(tmp_path / "missing.npz")
