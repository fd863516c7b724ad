"""Per-feature statistics in LeRobot's layout.

Each feature gets ``min``, ``max``, ``mean``, ``std`` (shape of one frame's
vector, or ``(3, 1, 1)`` per colour channel scaled to [0, 1] for cameras),
``count`` (shape ``(1,)``, frames) and the quantiles ``q01 q10 q50 q90 q99``.
Episode statistics are exact; dataset statistics aggregate them the way
LeRobot does: count-weighted mean, pooled variance, extreme min/max and
count-weighted quantiles (an approximation LeRobot also makes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from testbed.errors import DatasetError

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)

FeatureStats = dict[str, np.ndarray]


def vector_stats(values: np.ndarray) -> FeatureStats:
    """Statistics of a numeric feature.

    Args:
        values: ``(frames,)`` or ``(frames, n)`` array, at least one frame.

    Returns:
        stat name -> array of shape ``(n,)`` (``(1,)`` for scalars and for ``count``).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    if data.shape[0] == 0:
        raise DatasetError("cannot compute statistics of an empty episode")
    stats = _moment_stats(data)
    quantiles = np.quantile(data, QUANTILES, axis=0)
    for key, row in zip(QUANTILE_KEYS, quantiles, strict=True):
        stats[key] = row
    return stats


def _moment_stats(data: np.ndarray) -> FeatureStats:
    """min, max, mean, std and count of a ``(frames, n)`` float64 array, per column."""
    return {
        "min": data.min(axis=0),
        "max": data.max(axis=0),
        "mean": data.mean(axis=0),
        "std": data.std(axis=0),
        "count": np.array([data.shape[0]], dtype=np.int64),
    }


def columns_stats(columns: Mapping[str, np.ndarray]) -> dict[str, FeatureStats]:
    """``vector_stats`` of each column, equal value for value, with one quantile computation for them all.

    Quantiles take most of ``vector_stats``' time on short episodes, and a column's quantiles do not
    depend on the columns beside it (each is its own order statistics and interpolation), so they are
    computed once over the columns side by side. Min, max, mean and std stay per column, computed
    exactly as ``vector_stats`` does (a sum's rounding may depend on the array's layout).

    Args:
        columns: name -> ``(frames,)`` or ``(frames, n)`` array, all with the same number of frames (at least one).
    """
    datas = {}
    for key, values in columns.items():
        data = np.asarray(values, dtype=np.float64)
        datas[key] = data[:, None] if data.ndim == 1 else data
    if not datas:
        return {}
    frames = {data.shape[0] for data in datas.values()}
    if len(frames) != 1 or 0 in frames:
        raise DatasetError(f"cannot compute statistics of columns of {sorted(frames)} frames; expected one count > 0")
    quantiles = np.quantile(np.concatenate(list(datas.values()), axis=1), QUANTILES, axis=0)
    out: dict[str, FeatureStats] = {}
    start = 0
    for key, data in datas.items():
        end = start + data.shape[1]
        stats = _moment_stats(data)
        for name, row in zip(QUANTILE_KEYS, quantiles[:, start:end], strict=True):
            stats[name] = row.copy()
        out[key] = stats
        start = end
    return out


def image_stats(frames: np.ndarray) -> FeatureStats:
    """Per-channel statistics of camera frames, scaled to [0, 1].

    Args:
        frames: uint8 ``(frames, height, width, 3)``.

    Returns:
        stat name -> ``(3, 1, 1)`` array (``count`` is ``(1,)``, frames).
    """
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise DatasetError(f"camera frames must be (frames, height, width, 3), got {frames.shape}")
    pixels = frames.reshape(-1, frames.shape[-1])
    stats = vector_stats(pixels)
    out = {key: (value / 255.0).reshape(-1, 1, 1) for key, value in stats.items() if key != "count"}
    out["count"] = np.array([frames.shape[0]], dtype=np.int64)
    return out


def aggregate_stats(per_episode: Sequence[Mapping[str, FeatureStats]]) -> dict[str, FeatureStats]:
    """Combine episode statistics into dataset statistics.

    Args:
        per_episode: one ``feature -> stats`` mapping per episode.

    Returns:
        feature -> aggregated stats, for the union of features.
    """
    keys = sorted({key for stats in per_episode for key in stats})
    return {key: _aggregate_feature([s[key] for s in per_episode if key in s]) for key in keys}


def _aggregate_feature(items: Sequence[FeatureStats]) -> FeatureStats:
    counts = np.stack([np.asarray(s["count"], dtype=np.float64) for s in items])
    means = np.stack([s["mean"] for s in items])
    variances = np.stack([np.asarray(s["std"]) ** 2 for s in items])
    total = counts.sum(axis=0)
    weights = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))
    mean = (means * weights).sum(axis=0) / total
    variance = ((variances + (means - mean) ** 2) * weights).sum(axis=0) / total
    out: FeatureStats = {
        "min": np.min(np.stack([s["min"] for s in items]), axis=0),
        "max": np.max(np.stack([s["max"] for s in items]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": total.astype(np.int64),
    }
    for key in QUANTILE_KEYS:
        if all(key in s for s in items):
            out[key] = (np.stack([s[key] for s in items]) * weights).sum(axis=0) / total
    return out


def stats_to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """Nested lists for ``meta/stats.json``."""
    return {key: {name: np.asarray(v).tolist() for name, v in feat.items()} for key, feat in stats.items()}


def stats_from_json(raw: Mapping[str, Any], where: str) -> dict[str, FeatureStats]:
    """Parse ``meta/stats.json`` (or one episode's stats) into numpy arrays.

    Raises:
        DatasetError: naming ``where`` if the layout is not feature -> stat -> numbers.
    """
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{where}: expected an object of feature -> statistics")
    out: dict[str, FeatureStats] = {}
    for key, feat in raw.items():
        if not isinstance(feat, Mapping):
            raise DatasetError(f"{where}: {key}: expected an object of statistic -> numbers")
        try:
            out[key] = {name: np.asarray(value, dtype=np.float64) for name, value in feat.items()}
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: {key}: statistics are not numeric ({exc})") from exc
        if "count" in out[key]:
            out[key]["count"] = out[key]["count"].astype(np.int64)
    return out
