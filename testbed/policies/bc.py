"""Behaviour cloning: a nearest-neighbour action-chunk policy trained from demonstrations, numpy only.

Training keeps, for every demonstration frame, the normalized observation
(``observation.state`` followed by ``observation.environment_state``) and the
chunk of the next ``chunk_size`` recorded actions. Acting finds the ``k``
nearest training frames (distance weighted per entry, see ``DEFAULT_WEIGHTS``),
takes their distance-weighted mean chunk and plays it for ``replan_every``
steps before asking again. Joint targets are absolute by default; ``delta=True``
stores them relative to the measured joints (measured on the conveyor cell:
absolute 5/5 successes, delta 1/5, k=4, 50 demonstrations). The model file is a
plain ``.npz`` (no pickle) holding the arrays and the policy spec as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from testbed.errors import DatasetError, SpecMismatch
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec

MODEL_FORMAT = "testbed-bc-knn/1"
OBS_KEYS = ("observation.state", "observation.environment_state")
STD_FLOOR = 1e-3
# The cell's environment state (see testbed.policies.observations.ENV_STATE_NAMES): part x y z yaw,
# part top z, part type, ready, holding, bin x y top z. Where the part is, how tall, which type and whether it
# is held decide the motion.
DEFAULT_WEIGHTS: Mapping[str, Sequence[float]] = {
    "observation.environment_state": (2.0, 2.0, 2.0, 1.0, 3.0, 3.0, 2.0, 3.0, 1.0, 1.0, 1.0),
}  # constant dimensions must not blow up the normalization


def spec_to_json(spec: PolicySpec) -> str:
    """Serialize a ``PolicySpec`` to JSON (stored inside the model file)."""
    return json.dumps(
        {
            "observation": {k: {"dtype": v.dtype, "shape": list(v.shape)} for k, v in spec.observation.items()},
            "action_kind": spec.action_kind.value,
            "action_dim": spec.action_dim,
            "chunk_size": spec.chunk_size,
            "control_hz": spec.control_hz,
            "model_name": spec.model_name,
            "model_version": spec.model_version,
            "extra": dict(spec.extra),
        }
    )


def spec_from_json(text: str) -> PolicySpec:
    """Inverse of ``spec_to_json``."""
    data = json.loads(text)
    return PolicySpec(
        observation={k: TensorSpec(v["dtype"], tuple(v["shape"])) for k, v in data["observation"].items()},
        action_kind=ActionKind(data["action_kind"]),
        action_dim=int(data["action_dim"]),
        chunk_size=int(data["chunk_size"]),
        control_hz=float(data["control_hz"]),
        model_name=data["model_name"],
        model_version=data["model_version"],
        extra=data.get("extra", {}),
    )


@dataclass(frozen=True)
class TrainReport:
    """What ``train_bc`` produced.

    Args:
        model_path: the ``.npz`` written.
        episodes: demonstration episodes used.
        frames: training samples (one per frame).
        skipped_episodes: episodes left out (recorded as failures).
    """

    model_path: Path
    episodes: int
    frames: int
    skipped_episodes: int


class BCPolicy:
    """Nearest-neighbour action-chunk policy; implements the ``Policy`` protocol.

    Args:
        spec: what it consumes and produces.
        obs_mean, obs_std: ``(obs_dim,)`` normalization of concatenated observations.
        obs: ``(samples, obs_dim)`` normalized training observations.
        chunks: ``(samples, chunk_size, action_dim)`` action chunks; joint columns relative
            to the sample's measured joints when ``delta_joints`` > 0.
        delta_joints: how many leading action columns are relative to the leading state entries.
        k: neighbours averaged per query.
        replan_every: policy steps between neighbour queries; in between, ``act`` plays the
            rest of the last chunk. Committing to a chunk carries the arm through the
            near-standstill starts of demonstrated moves, where a fresh query every step
            would find the standstill again and never leave it.
    """

    def __init__(
        self,
        spec: PolicySpec,
        *,
        obs_mean: np.ndarray,
        obs_std: np.ndarray,
        obs: np.ndarray,
        chunks: np.ndarray,
        delta_joints: int,
        k: int = 4,
        replan_every: int | None = None,
    ) -> None:
        if obs.ndim != 2 or chunks.ndim != 3 or obs.shape[0] != chunks.shape[0] or obs.shape[0] == 0:
            raise SpecMismatch(f"bc model: obs {obs.shape} and chunks {chunks.shape} do not pair up")
        if chunks.shape[1:] != (spec.chunk_size, spec.action_dim):
            raise SpecMismatch(
                f"bc model: chunks {chunks.shape[1:]} differ from spec ({spec.chunk_size}, {spec.action_dim})"
            )
        if k < 1:
            raise SpecMismatch(f"bc model: k must be positive, got {k}")
        obs_dim = sum(int(np.prod(tensor.shape, dtype=np.int64)) for tensor in spec.observation.values())
        for name, vector in (("obs_mean", obs_mean), ("obs_std", obs_std)):
            if np.shape(vector) != (obs_dim,):
                raise SpecMismatch(f"bc model: {name} has shape {np.shape(vector)}, expected ({obs_dim},) "
                                   "(one entry per observation value of the spec)")
            if not np.all(np.isfinite(vector)):
                raise SpecMismatch(f"bc model: {name} holds NaN or infinite values")
        if not np.all(np.asarray(obs_std) > 0):
            raise SpecMismatch(f"bc model: obs_std must be positive everywhere, got {np.asarray(obs_std).tolist()}")
        if obs.shape[1] != obs_dim:
            raise SpecMismatch(f"bc model: obs has {obs.shape[1]} columns, the spec's observation {obs_dim}")
        self._spec = spec
        self.obs_mean = obs_mean.astype(np.float64)
        self.obs_std = obs_std.astype(np.float64)
        self.obs = np.ascontiguousarray(obs, dtype=np.float64)
        self.chunks = chunks.astype(np.float32)
        self.delta_joints = int(delta_joints)
        self.k = min(int(k), obs.shape[0])
        self.replan_every = max(1, spec.chunk_size // 2) if replan_every is None else int(replan_every)
        if not 1 <= self.replan_every <= spec.chunk_size:
            raise SpecMismatch(f"bc model: replan_every must be in 1..{spec.chunk_size}, got {self.replan_every}")
        self._sq_norms = np.einsum("ij,ij->i", self.obs, self.obs)
        self._plan: np.ndarray | None = None
        self._played = 0

    def spec(self) -> PolicySpec:
        """The spec stored with the model."""
        return self._spec

    def reset(self, episode: int) -> None:
        """Drop the chunk being played."""
        self._plan = None
        self._played = 0

    def close(self) -> None:
        """Drop the chunk being played; the model is plain arrays, freed with the object (no handles to release)."""
        self._plan = None
        self._played = 0

    def _features(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        parts = []
        for key in self._spec.observation:
            if key not in obs:
                raise SpecMismatch(f"bc policy: observation is missing {key!r} (has: {', '.join(sorted(obs))})")
            parts.append(np.asarray(obs[key], dtype=np.float64).reshape(-1))
        return (np.concatenate(parts) - self.obs_mean) / self.obs_std

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The rest of the current chunk; a new one every ``replan_every`` steps.

        Returns:
            float32 ``(rows, action_dim)``, ``rows`` from ``chunk_size - replan_every + 1`` to ``chunk_size``.
        """
        if self._plan is None or self._played >= self.replan_every:
            self._plan = self.predict(obs)
            self._played = 0
        rows = self._plan[self._played :]
        self._played += 1
        return rows.copy()

    def predict(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Mean chunk of the ``k`` nearest demonstration frames, float32 ``(chunk_size, action_dim)``."""
        x = self._features(obs)
        d2 = self._sq_norms - 2.0 * (self.obs @ x) + float(x @ x)
        nearest = np.argpartition(d2, self.k - 1)[: self.k] if self.k < d2.size else np.arange(d2.size)
        weights = 1.0 / (np.sqrt(np.maximum(d2[nearest], 0.0)) + 1e-3)
        weights /= weights.sum()
        chunk = np.tensordot(weights, self.chunks[nearest], axes=1).astype(np.float32)
        if self.delta_joints:
            state = np.asarray(obs["observation.state"], dtype=np.float32).reshape(-1)
            chunk[:, : self.delta_joints] += state[: self.delta_joints]
        return chunk

    def save(self, path: Path) -> Path:
        """Write the model as ``.npz`` (arrays + spec JSON; loadable without pickle)."""
        path = Path(path)
        with path.open("wb") as fh:
            np.savez_compressed(
                fh,
                format=np.array(MODEL_FORMAT),
                spec_json=np.array(spec_to_json(self._spec)),
                obs_mean=self.obs_mean,
                obs_std=self.obs_std,
                obs=self.obs.astype(np.float32),
                chunks=self.chunks,
                delta_joints=np.array(self.delta_joints),
                k=np.array(self.k),
                replan_every=np.array(self.replan_every),
            )
        return path

    @classmethod
    def load(cls, path: str | Path, *, k: int | None = None, replan_every: int | None = None) -> BCPolicy:
        """Load a model written by ``train_bc`` / ``save``.

        Args:
            path: the ``.npz`` file.
            k: override the number of neighbours stored in the model.
            replan_every: override the replanning interval stored in the model.

        Raises:
            DatasetError: the file is missing, not a BC model, or inconsistent.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read a BC model: {exc}") from exc
        if str(arrays.get("format", "")) != MODEL_FORMAT:
            raise DatasetError(f"{path}: not a BC model (expected format {MODEL_FORMAT!r})")
        try:
            spec = spec_from_json(str(arrays["spec_json"]))
        except KeyError as exc:
            if "spec_json" not in arrays:
                raise DatasetError(f"{path}: inconsistent BC model: 'spec_json' missing") from exc
            raise DatasetError(f"{path}: spec_json: not a policy spec (missing {exc})") from exc
        except (ValueError, TypeError, AttributeError, SpecMismatch) as exc:
            raise DatasetError(f"{path}: spec_json: not a policy spec ({type(exc).__name__}: {exc})") from exc
        try:
            return cls(
                spec,
                obs_mean=arrays["obs_mean"],
                obs_std=arrays["obs_std"],
                obs=arrays["obs"],
                chunks=arrays["chunks"],
                delta_joints=int(arrays["delta_joints"]),
                k=int(arrays["k"]) if k is None else int(k),
                replan_every=int(arrays["replan_every"]) if replan_every is None else int(replan_every),
            )
        except KeyError as exc:
            raise DatasetError(f"{path}: inconsistent BC model: {exc} missing") from exc
        except (ValueError, TypeError, SpecMismatch) as exc:
            raise DatasetError(f"{path}: inconsistent BC model: {exc}") from exc


def _weight_vector(
    weights: Mapping[str, Sequence[float]] | None, obs_keys: Sequence[str], features: Mapping[str, Any]
) -> np.ndarray:
    """Per-entry distance weights; defaults apply only where their size fits the feature."""
    parts = []
    for key in obs_keys:
        size = int(np.prod(features[key].shape))
        if weights is not None and key in weights:
            w = np.asarray(weights[key], dtype=np.float64)
            if w.shape != (size,) or not np.all(w > 0):
                raise DatasetError(f"weights[{key!r}]: expected {size} positive numbers, got {list(w)}")
        elif weights is None and len(DEFAULT_WEIGHTS.get(key, ())) == size:
            w = np.asarray(DEFAULT_WEIGHTS[key], dtype=np.float64)
        else:
            w = np.ones(size)
        parts.append(w)
    return np.concatenate(parts)


def _episode_chunks(actions: np.ndarray, chunk_size: int) -> np.ndarray:
    """``(frames, chunk_size, action_dim)``: for each frame the next actions, the last one repeated at the end."""
    frames = actions.shape[0]
    index = np.minimum(np.arange(frames)[:, None] + np.arange(chunk_size)[None, :], frames - 1)
    return actions[index]


def train_bc(
    dataset_dir: Path,
    out_path: Path,
    *,
    chunk_size: int = 10,
    k: int = 4,
    replan_every: int | None = None,
    seed: int = 0,
    max_samples: int | None = None,
    delta: bool = False,
    only_successful: bool = True,
    obs_keys: Sequence[str] = OBS_KEYS,
    weights: Mapping[str, Sequence[float]] | None = None,
) -> TrainReport:
    """Fit a nearest-neighbour action-chunk policy to a LeRobot demonstration dataset.

    Args:
        dataset_dir: LeRobot dataset (v3.0 or v2.1) with ``obs_keys`` and ``action``.
        out_path: the ``.npz`` model to write.
        chunk_size: actions per chunk the policy returns.
        k: neighbours averaged per query.
        replan_every: steps between queries when acting (default ``chunk_size // 2``).
        seed: seeds the subsampling when ``max_samples`` is set; same seed, same model.
        max_samples: keep at most this many frames (uniformly drawn).
        delta: store joint targets relative to the measured joints.
        only_successful: leave out episodes whose metadata says ``success: false``.
        obs_keys: observation features concatenated as the model input.
        weights: per observation key, a weight per entry in the distance (default 1; see
            ``DEFAULT_WEIGHTS``); a larger weight makes neighbours agree more on that entry.

    Raises:
        DatasetError: the dataset lacks a feature or holds no usable episode.
    """
    from testbed.data.lerobot import read_dataset

    dataset_dir = Path(dataset_dir)
    ds = read_dataset(dataset_dir)
    for key in (*obs_keys, "action"):
        if key not in ds.features:
            raise DatasetError(f"{dataset_dir}: feature {key!r} missing (has: {', '.join(ds.features)})")
    obs_parts: list[np.ndarray] = []
    chunk_parts: list[np.ndarray] = []
    skipped = 0
    for i, location in enumerate(ds.episodes):
        if only_successful and location.extra.get("success") is False:
            skipped += 1
            continue
        episode = ds.episode(i)
        obs = np.concatenate([episode[key].reshape(len(episode[key]), -1) for key in obs_keys], axis=1)
        actions = episode["action"].astype(np.float32)
        chunks = _episode_chunks(actions, chunk_size)
        obs_parts.append(obs.astype(np.float64))
        chunk_parts.append(chunks)
    if not obs_parts:
        raise DatasetError(f"{dataset_dir}: no usable episode ({skipped} recorded as failures)")
    obs = np.concatenate(obs_parts)
    chunks = np.concatenate(chunk_parts)
    state_dim = int(np.prod(ds.features[obs_keys[0]].shape)) if obs_keys[0] == "observation.state" else 0
    action_dim = chunks.shape[2]
    delta_joints = min(action_dim - 1, state_dim - 1) if delta and state_dim > 1 else 0
    if delta_joints:
        chunks[:, :, :delta_joints] -= obs[:, None, :delta_joints].astype(np.float32)
    if max_samples is not None and obs.shape[0] > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(obs.shape[0], size=max_samples, replace=False))
        obs, chunks = obs[keep], chunks[keep]
    mean = obs.mean(axis=0)
    std = np.maximum(obs.std(axis=0), STD_FLOOR)
    std /= _weight_vector(weights, obs_keys, ds.features)
    spec = PolicySpec(
        observation={key: TensorSpec(ds.features[key].dtype, ds.features[key].shape) for key in obs_keys},
        action_kind=ActionKind.JOINT_POSITIONS,
        action_dim=action_dim,
        chunk_size=chunk_size,
        control_hz=ds.fps,
        model_name="bc-knn",
        model_version=MODEL_FORMAT,
        extra={"dataset": dataset_dir.name, "robot_type": str(ds.info.get("robot_type", ""))},
    )
    policy = BCPolicy(
        spec,
        obs_mean=mean,
        obs_std=std,
        obs=(obs - mean) / std,
        chunks=chunks,
        delta_joints=delta_joints,
        k=k,
        replan_every=replan_every,
    )
    policy.save(out_path)
    return TrainReport(Path(out_path), len(obs_parts), int(obs.shape[0]), skipped)


__all__ = ["BCPolicy", "TrainReport", "spec_from_json", "spec_to_json", "train_bc"]
