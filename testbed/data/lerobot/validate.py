"""``validate_dataset``: list every problem of a LeRobot dataset directory.

Checks structure (metadata and data files present, paths resolvable), schema
(features well formed, columns of the right arrow type, bookkeeping columns
consistent), counts (episodes, frames, tasks) and statistics (every feature,
camera features included, has min/max/mean/std/count in ``meta/stats.json``;
numeric statistics match a recomputation from the data). Camera statistics
are checked for shape and range only: LeRobot computes them on a subsample
of down-scaled frames, so they cannot be recomputed exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from testbed.data.lerobot import layout
from testbed.data.lerobot.features import DEFAULT_FEATURE_DTYPES, IMAGE_NAMES, FeatureSpec
from testbed.data.lerobot.reader import LeRobotDataset, column_to_numpy, load_json, read_dataset
from testbed.data.lerobot.stats import FeatureStats, columns_stats, vector_stats
from testbed.errors import DatasetError

REQUIRED_INFO_KEYS = (
    "codebase_version",
    "robot_type",
    "fps",
    "total_episodes",
    "total_frames",
    "total_tasks",
    "chunks_size",
    "data_path",
    "features",
)
REQUIRED_STATS = ("min", "max", "mean", "std", "count")
# mean/std: LeRobot derives std from the mean of squares in float64; stay loose enough for that
_RTOL, _ATOL = 1e-4, 1e-6


def validate_dataset(root: Path) -> list[str]:
    """Return every problem found in the dataset at ``root``; an empty list means valid.

    Each message names the file (relative to ``root``), the episode or feature,
    what was expected and what was found.
    """
    root = Path(root)
    problems: list[str] = []
    info_path = root / layout.INFO_PATH
    try:
        info = load_json(info_path)
    except DatasetError as exc:
        return [str(exc)]
    if not isinstance(info, dict):
        return [f"{layout.INFO_PATH}: expected a JSON object"]
    problems += [f"{layout.INFO_PATH}: key {key!r} is missing" for key in REQUIRED_INFO_KEYS if key not in info]
    if info.get("codebase_version") not in layout.SUPPORTED_VERSIONS:
        problems.append(
            f"{layout.INFO_PATH} codebase_version: expected one of {', '.join(layout.SUPPORTED_VERSIONS)}, "
            f"got {info.get('codebase_version')!r}"
        )
        return problems
    problems += _check_features(info.get("features"))
    try:
        ds = read_dataset(root)
    except DatasetError as exc:
        message = str(exc)  # the reader stops at the first problem; it may be one listed already
        return problems if any(p in message for p in problems) else [*problems, message]
    problems += _check_counts(ds)
    try:
        frames = _check_data(ds, problems)
        if frames is not None:
            problems += _check_stats(ds, frames)
    except DatasetError as exc:  # a data file that cannot be read ends the checks that need it
        problems.append(str(exc))
    return problems


def _check_features(features: object) -> list[str]:
    where = f"{layout.INFO_PATH} features"
    if not isinstance(features, dict):
        kind = type(features).__name__
        return [f"{where}: expected an object of feature name -> {{dtype, shape, names}}, got {kind}"]
    problems = []
    for key in DEFAULT_FEATURE_DTYPES:
        if key not in features:
            problems.append(f"{where}: bookkeeping feature {key!r} is missing")
    for key, entry in features.items():
        try:
            spec = FeatureSpec.from_json(key, entry)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        if spec.is_visual and (spec.names is None or len(spec.names) != 3):
            problems.append(
                f"{where}[{key!r}].names: a camera feature needs 3 axis names like {list(IMAGE_NAMES)}, "
                f"got {spec.names!r}"
            )
        if spec.dtype == "video" and not entry.get("info"):
            problems.append(f"{where}[{key!r}].info: video features describe their encoding (video.codec, ...)")
    return problems


def _check_counts(ds: LeRobotDataset) -> list[str]:
    problems = []
    info = ds.info
    indices = [ep.episode_index for ep in ds.episodes]
    if indices != list(range(len(indices))):
        problems.append(f"episode metadata: episode indices are not 0..{len(indices) - 1} in order: {indices[:10]}")
    if info.get("total_episodes") != ds.num_episodes:
        problems.append(
            f"{layout.INFO_PATH} total_episodes: says {info.get('total_episodes')}, "
            f"episode metadata lists {ds.num_episodes}"
        )
    if info.get("total_frames") != ds.num_frames:
        problems.append(
            f"{layout.INFO_PATH} total_frames: says {info.get('total_frames')}, "
            f"episode lengths add up to {ds.num_frames}"
        )
    if info.get("total_tasks") != len(ds.tasks):
        problems.append(
            f"{layout.INFO_PATH} total_tasks: says {info.get('total_tasks')}, tasks file lists {len(ds.tasks)}"
        )
    expected_from = 0
    known_tasks = set(ds.tasks.values())
    for ep in ds.episodes:
        where = f"episode {ep.episode_index}"
        if ep.from_index != expected_from or ep.to_index - ep.from_index != ep.length:
            problems.append(
                f"{where}: dataset_from_index..dataset_to_index is {ep.from_index}..{ep.to_index} for length "
                f"{ep.length}; expected {expected_from}..{expected_from + ep.length}"
            )
        expected_from = ep.from_index + ep.length
        for task in ep.tasks:
            if task not in known_tasks:
                problems.append(f"{where}: task {task!r} is not in the tasks file")
        for key, (path, from_s, to_s) in ep.videos.items():
            if not (ds.root / path).exists():
                problems.append(f"{path}: video file for {key} of {where} is missing")
            if to_s <= from_s:
                problems.append(f"{where} videos/{key}: to_timestamp {to_s} is not after from_timestamp {from_s}")
    return problems


def _check_data(ds: LeRobotDataset, problems: list[str]) -> dict[str, np.ndarray] | None:
    """Check data files, columns and per-episode rows; return all numeric columns on success."""
    paths = list(dict.fromkeys(ep.data_path for ep in ds.episodes))
    columns = [k for k, spec in ds.features.items() if spec.dtype != "video"]
    missing = [p for p in paths if not (ds.root / p).exists()]
    for path in missing:
        users = [ep.episode_index for ep in ds.episodes if ep.data_path == path]
        problems.append(f"{path}: data file is missing (episodes {users[:10]})")
    if ds.version == layout.V30:  # LeRobot loads every data/*/*.parquet, listed in the metadata or not
        known = {Path(p) for p in paths}
        for path in sorted((ds.root / "data").glob("*/*.parquet")):
            if path.relative_to(ds.root) not in known:
                problems.append(
                    f"{path.relative_to(ds.root)}: data file no episode in {layout.EPISODES_DIR} points to "
                    "(LeRobot would load its rows too); remove it or add its episodes"
                )
    if missing:
        return None
    table = ds.frames()
    for key in columns:
        if key not in table.column_names:
            problems.append(f"data: column {key!r} declared in features is missing")
        elif (problem := _check_type(key, ds.features[key], table.schema.field(key).type)) is not None:
            problems.append(problem)
    if any(key not in table.column_names for key in DEFAULT_FEATURE_DTYPES):
        return None
    if table.num_rows != ds.info.get("total_frames"):
        problems.append(
            f"data: files hold {table.num_rows} frames, {layout.INFO_PATH} total_frames says "
            f"{ds.info.get('total_frames')}"
        )
    numeric = {
        key: column_to_numpy(table.column(key), spec)
        for key, spec in ds.features.items()
        if not spec.is_visual and key in table.column_names
    }
    episode_of_row = numeric["episode_index"]
    counts = np.bincount(episode_of_row, minlength=ds.num_episodes) if len(episode_of_row) else np.zeros(0)
    for ep in ds.episodes:
        where = f"{ep.data_path} episode {ep.episode_index}"
        found = int(counts[ep.episode_index]) if ep.episode_index < len(counts) else 0
        if found != ep.length:
            problems.append(f"{where}: metadata length is {ep.length}, the data holds {found} frames")
            continue
        rows = np.flatnonzero(episode_of_row == ep.episode_index)
        if not np.array_equal(numeric["frame_index"][rows], np.arange(ep.length)):
            problems.append(f"{where}: frame_index is not 0..{ep.length - 1}")
        if not np.array_equal(numeric["index"][rows], np.arange(ep.from_index, ep.from_index + ep.length)):
            problems.append(f"{where}: index is not {ep.from_index}..{ep.from_index + ep.length - 1}")
        if np.any(np.diff(numeric["timestamp"][rows]) < 0):
            problems.append(f"{where}: timestamps go backwards")
        unknown = set(np.unique(numeric["task_index"][rows]).tolist()) - set(ds.tasks)
        if unknown:
            problems.append(f"{where}: task_index {sorted(unknown)} not in the tasks file")
        problems += _compare_stats(
            f"episode {ep.episode_index} stats",
            ep.stats,
            columns_stats({key: values[rows] for key, values in numeric.items()}),
            require=False,
        )
    return numeric


def _check_type(key: str, spec: FeatureSpec, found: pa.DataType) -> str | None:
    if spec.dtype == "image":
        ok = pa.types.is_struct(found) and found.get_field_index("bytes") >= 0
        expected = "struct<bytes, path>"
    else:
        try:
            value = pa.from_numpy_dtype(np.dtype(spec.dtype))
        except TypeError:
            return f"{layout.INFO_PATH} features[{key!r}].dtype: {spec.dtype!r} is not a numeric dtype"
        if spec.shape == (1,):
            ok, expected = found == value, str(value)
        else:
            is_list = pa.types.is_list(found) or pa.types.is_fixed_size_list(found)
            ok = is_list and found.value_type == value
            ok = ok and (not pa.types.is_fixed_size_list(found) or found.list_size == spec.shape[0])
            expected = f"list<{value}>[{spec.shape[0]}]"
    return None if ok else f"data column {key!r}: expected arrow type {expected}, got {found}"


def _check_stats(ds: LeRobotDataset, numeric: dict[str, np.ndarray]) -> list[str]:
    path = ds.root / layout.STATS_PATH
    if not path.exists():
        if ds.version == layout.V30:
            return [f"{layout.STATS_PATH}: file is missing"]
        stored = ds.stats
    else:
        try:
            stored = ds.stats
        except DatasetError as exc:
            return [str(exc)]
    problems = []
    for key, spec in ds.features.items():
        if not spec.is_visual:
            continue
        feature = stored.get(key)
        if feature is None:
            problems.append(f"{layout.STATS_PATH}: camera feature {key!r} has no statistics")
            continue
        for name in REQUIRED_STATS:
            value = feature.get(name)
            if value is None:
                problems.append(f"{layout.STATS_PATH} {key}.{name}: missing")
            elif name != "count" and (value.shape != (3, 1, 1) or np.any(value < -1e-9) or np.any(value > 1 + 1e-9)):
                problems.append(
                    f"{layout.STATS_PATH} {key}.{name}: expected (3, 1, 1) values in [0, 1], got {value.tolist()}"
                )
    recomputed = {key: vector_stats(values) for key, values in numeric.items()}
    return problems + _compare_stats(layout.STATS_PATH, stored, recomputed, require=True)


def _compare_stats(
    where: str,
    stored: dict[str, FeatureStats] | object,
    recomputed: dict[str, FeatureStats],
    *,
    require: bool,
) -> list[str]:
    if not isinstance(stored, dict) or (not stored and not require):
        return []
    problems = []
    for key, expected in recomputed.items():
        feature = stored.get(key)
        if feature is None:
            if require:
                problems.append(f"{where}: feature {key!r} has no statistics")
            continue
        for name in REQUIRED_STATS:
            value = feature.get(name)
            if value is None:
                problems.append(f"{where} {key}.{name}: missing")
                continue
            want = expected[name]
            if value.shape != want.shape:
                problems.append(f"{where} {key}.{name}: expected shape {want.shape}, got {value.shape}")
            elif not np.allclose(value, want, rtol=_RTOL, atol=_ATOL):
                problems.append(f"{where} {key}.{name}: stored {_short(value)} differs from recomputed {_short(want)}")
    return problems


def _short(value: np.ndarray) -> str:
    flat = np.asarray(value).ravel()
    text = np.array2string(flat[:6], precision=6, separator=", ")
    return text if flat.size <= 6 else text[:-1] + ", ...]"
