"""Feature specs: the dtype, shape and names of every column of a dataset.

A ``FeatureSpec`` is the ``features`` entry of ``meta/info.json``. Visual
features always carry ``names`` (``height``, ``width``, ``channel``): some
writers omit them and LeRobot's tools then fail on the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from testbed.errors import DatasetError
from testbed.policies.protocol import PolicySpec

NUMERIC_DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool")
VISUAL_DTYPES = ("image", "video")
IMAGE_NAMES = ("height", "width", "channel")

# LeRobot's bookkeeping columns, present in every dataset.
DEFAULT_FEATURE_DTYPES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of a dataset.

    Args:
        dtype: a numeric dtype (``NUMERIC_DTYPES``), ``image`` (PNG frames stored in the
            parquet data) or ``video`` (frames encoded as mp4 under ``videos/``).
        shape: per-frame shape; ``(1,)`` for scalars, ``(n,)`` for vectors,
            ``(height, width, 3)`` for cameras.
        names: names of the entries (a list as long as the last axis), or LeRobot's
            dict form ``{"motors": [...]}``; required for visual features.
        info: extra description, e.g. video codec details for ``video`` features.
    """

    dtype: str
    shape: tuple[int, ...]
    names: Sequence[str] | Mapping[str, Sequence[str]] | None = None
    info: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.names is not None and not isinstance(self.names, Mapping):
            object.__setattr__(self, "names", tuple(str(n) for n in self.names))

    @property
    def is_visual(self) -> bool:
        """True for camera features (``image`` or ``video``)."""
        return self.dtype in VISUAL_DTYPES

    def check(self, key: str) -> None:
        """Raise ``DatasetError`` naming ``key`` unless this spec can be written.

        Args:
            key: the feature's name, used in messages.
        """
        if "/" in key:
            raise DatasetError(f"features[{key!r}]: feature names may not contain '/'")
        if self.dtype not in NUMERIC_DTYPES + VISUAL_DTYPES:
            raise DatasetError(
                f"features[{key!r}].dtype: expected one of {', '.join(NUMERIC_DTYPES + VISUAL_DTYPES)}, "
                f"got {self.dtype!r}"
            )
        if not self.shape or any(d <= 0 for d in self.shape):
            raise DatasetError(f"features[{key!r}].shape: expected positive dimensions, got {self.shape}")
        if self.is_visual:
            if len(self.shape) != 3 or self.shape[2] != 3:
                raise DatasetError(f"features[{key!r}].shape: a camera feature is (height, width, 3), got {self.shape}")
            if self.names is None or tuple(self.names) != IMAGE_NAMES:
                raise DatasetError(
                    f"features[{key!r}].names: camera features need names {list(IMAGE_NAMES)}, got {self.names!r}"
                )
            return
        if len(self.shape) != 1:
            raise DatasetError(
                f"features[{key!r}].shape: numeric features are 1-D (n,), got {self.shape}; "
                "flatten the array and give names for its entries"
            )
        if self.names is None:
            raise DatasetError(f"features[{key!r}].names: give a name for each of the {self.shape[0]} entries")
        flat = _flat_names(self.names)
        if len(flat) != self.shape[0]:
            raise DatasetError(
                f"features[{key!r}].names: expected {self.shape[0]} names for shape {self.shape}, got {len(flat)}"
            )

    def arrow_type(self) -> pa.DataType:
        """The arrow column type LeRobot (via Hugging Face ``datasets``) uses for this feature."""
        if self.dtype == "image":
            return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        if self.dtype == "video":
            raise DatasetError("video features are stored under videos/, not as a parquet column")
        value = pa.from_numpy_dtype(np.dtype(self.dtype))
        if self.shape == (1,):
            return value
        return pa.list_(value, self.shape[0])

    def to_json(self) -> dict[str, Any]:
        """The ``features`` entry for ``meta/info.json``."""
        names: Any
        if self.names is None:
            names = None
        elif isinstance(self.names, Mapping):
            names = {k: list(v) for k, v in self.names.items()}
        else:
            names = list(self.names)
        entry: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape), "names": names}
        if self.info is not None:
            entry["info"] = dict(self.info)
        return entry

    @classmethod
    def from_json(cls, key: str, entry: Mapping[str, Any]) -> FeatureSpec:
        """Parse a ``features`` entry of ``meta/info.json``.

        Raises:
            DatasetError: if ``dtype`` or ``shape`` is missing, ``shape`` is not a list of integers,
                or ``names`` / ``info`` have the wrong kind.
        """
        if not isinstance(entry, Mapping) or "dtype" not in entry or "shape" not in entry:
            raise DatasetError(f"meta/info.json features[{key!r}]: expected an object with dtype and shape")
        shape = entry["shape"]
        if not isinstance(shape, list | tuple) or not all(type(d) is int for d in shape):
            raise DatasetError(f"meta/info.json features[{key!r}].shape: expected a list of integers, got {shape!r}")
        names = entry.get("names")
        if names is not None and not isinstance(names, list | tuple | Mapping):
            raise DatasetError(f"meta/info.json features[{key!r}].names: expected a list or an object, got {names!r}")
        info = entry.get("info")
        if info is not None and not isinstance(info, Mapping):
            raise DatasetError(f"meta/info.json features[{key!r}].info: expected an object, got {info!r}")
        return cls(dtype=str(entry["dtype"]), shape=tuple(shape), names=names, info=info)


def _flat_names(names: Sequence[str] | Mapping[str, Sequence[str]]) -> list[str]:
    if isinstance(names, Mapping):
        return [str(n) for group in names.values() for n in group]
    return [str(n) for n in names]


def default_features() -> dict[str, FeatureSpec]:
    """LeRobot's bookkeeping features (timestamp, frame_index, episode_index, index, task_index)."""
    return {key: FeatureSpec(dtype, (1,), None) for key, dtype in DEFAULT_FEATURE_DTYPES.items()}


def features_from_policy_spec(
    spec: PolicySpec,
    state_names: Sequence[str],
    action_names: Sequence[str],
    *,
    video: bool = False,
) -> dict[str, FeatureSpec]:
    """Derive dataset features from what a policy consumes and produces.

    Args:
        spec: the policy's spec; its observation keys follow LeRobot's names.
        state_names: one name per entry of ``observation.state``.
        action_names: one name per action entry (``spec.action_dim`` of them).
        video: store cameras as ``video`` (mp4) instead of ``image`` (PNG in parquet).

    Returns:
        feature name -> spec, observations first, then ``action`` (float32, one action row).

    Raises:
        DatasetError: if names do not match the spec's sizes or an observation cannot be stored.
    """
    features: dict[str, FeatureSpec] = {}
    for key, tensor in spec.observation.items():
        if key.startswith("observation.images."):
            if tensor.dtype != "uint8":
                raise DatasetError(f"{key}: camera frames must be uint8, the policy spec says {tensor.dtype}")
            features[key] = FeatureSpec("video" if video else "image", tensor.shape, IMAGE_NAMES)
        elif key == "observation.state":
            features[key] = FeatureSpec(tensor.dtype, tensor.shape, tuple(state_names))
        else:
            if len(tensor.shape) > 1:
                raise DatasetError(f"{key}: observation shape {tensor.shape} is not 1-D; flatten it in the policy spec")
            size = tensor.shape[0] if tensor.shape else 1
            stem = key.rsplit(".", 1)[-1]
            features[key] = FeatureSpec(tensor.dtype, (size,), tuple(f"{stem}_{i}" for i in range(size)))
    features["action"] = FeatureSpec("float32", (spec.action_dim,), tuple(action_names))
    for key, feature in features.items():
        feature.check(key)
    return features
