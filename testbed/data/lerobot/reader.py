"""``read_dataset``: load a LeRobot dataset written in format v3.0 or v2.1.

The version comes from ``meta/info.json`` ``codebase_version``. Both versions
are normalised into one list of episode locations, so ``LeRobotDataset``
answers the same questions whichever layout is on disk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from testbed.data.lerobot import layout
from testbed.data.lerobot.features import FeatureSpec
from testbed.data.lerobot.images import decode_image
from testbed.data.lerobot.stats import FeatureStats, aggregate_stats, stats_from_json
from testbed.data.lerobot.tables import read_parquet, read_tasks_parquet
from testbed.data.lerobot.video import decode_video
from testbed.errors import DatasetError


@dataclass(frozen=True)
class EpisodeLocation:
    """Where one episode's frames live.

    Args:
        episode_index: the episode's index.
        length: frames in the episode.
        tasks: task texts of the episode.
        from_index: global index of its first frame; ``to_index`` is one past its last.
        to_index: one past the global index of its last frame.
        data_path: parquet file, relative to the dataset root.
        videos: camera key -> (mp4 path relative to root, from_s, to_s).
        stats: feature -> statistics of this episode, where the dataset stores them.
        extra: any further metadata columns (e.g. ``success``).
    """

    episode_index: int
    length: int
    tasks: tuple[str, ...]
    from_index: int
    to_index: int
    data_path: str
    videos: Mapping[str, tuple[str, float, float]] = field(default_factory=dict)
    stats: Mapping[str, FeatureStats] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


def load_json(path: Path) -> Any:
    """Parse a JSON file, raising ``DatasetError`` that names it."""
    if not path.exists():
        raise DatasetError(f"{path}: file is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file, raising ``DatasetError`` with the line number."""
    if not path.exists():
        raise DatasetError(f"{path}: file is missing")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON ({exc})") from exc
    return rows


def fill_path(template: object, where: str, **fields: object) -> str:
    """Fill a path template of ``meta/info.json`` (``data_path``, ``video_path``).

    Raises:
        DatasetError: naming ``where`` and the fields the template may use, if it is not a string
            or asks for anything else.
    """
    names = ", ".join("{" + name + "}" for name in fields)
    if not isinstance(template, str):
        raise DatasetError(f"{where}: expected a path template string using {names}, got {template!r}")
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise DatasetError(
            f"{where}: template {template!r} can only use {names} ({type(exc).__name__}: {exc})"
        ) from exc


def check_info(info: object, path: Path) -> dict[str, Any]:
    """The parts of ``meta/info.json`` the reader relies on, checked: return it as a dict.

    Raises:
        DatasetError: naming the file and key, for a missing key, an unknown ``codebase_version``,
            an ``fps`` that is not a number > 0, ``features`` that are not an object of feature
            objects, or a ``data_path`` that is not a string.
    """
    if not isinstance(info, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    for key in ("codebase_version", "fps", "features", "data_path"):
        if key not in info:
            raise DatasetError(f"{path}: key {key!r} is missing")
    version = info["codebase_version"]
    if version not in layout.SUPPORTED_VERSIONS:
        raise DatasetError(
            f"{path} codebase_version: expected one of {', '.join(layout.SUPPORTED_VERSIONS)}, got {version!r}"
        )
    fps = info["fps"]
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0:
        raise DatasetError(f"{path} fps: expected a number > 0 (frames per second), got {fps!r}")
    features = info["features"]
    if not isinstance(features, dict):
        raise DatasetError(
            f"{path} features: expected an object of feature name -> {{dtype, shape, names}}, "
            f"got {type(features).__name__}"
        )
    for key, entry in features.items():
        try:
            FeatureSpec.from_json(key, entry)
        except DatasetError as exc:  # its message starts with meta/info.json: name the whole path
            raise DatasetError(f"{path.parent.parent}/{exc}") from exc
    for key in ("data_path", "video_path"):
        if info.get(key) is not None and not isinstance(info[key], str):
            raise DatasetError(f"{path} {key}: expected a path template string, got {info[key]!r}")
    return info


def column_to_numpy(column: pa.ChunkedArray | pa.Array, spec: FeatureSpec) -> np.ndarray:
    """Convert a numeric parquet column to ``(frames,)`` for scalars or ``(frames, n)`` for vectors."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type) or pa.types.is_large_list(array.type):
        values = array.flatten().to_numpy(zero_copy_only=False)
        if spec.shape == (1,):
            return values
        return values.reshape(len(array), *spec.shape)
    return array.to_numpy(zero_copy_only=False)


class LeRobotDataset:
    """A LeRobot dataset on disk, read lazily file by file.

    Use ``read_dataset(root)`` to build one.
    """

    def __init__(
        self,
        root: Path,
        info: dict[str, Any],
        episodes: list[EpisodeLocation],
        tasks: dict[int, str],
        stats: dict[str, FeatureStats] | None,
    ) -> None:
        self.root = root
        self.info = info
        self.version: str = info["codebase_version"]
        self.features: dict[str, FeatureSpec] = {
            key: FeatureSpec.from_json(key, entry) for key, entry in info["features"].items()
        }
        self.episodes = episodes
        self.tasks = tasks
        self._stats = stats
        self._tables: dict[str, pa.Table] = {}

    @property
    def num_episodes(self) -> int:
        """Episodes in the dataset."""
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        """Frames in the dataset, summed over episodes."""
        return sum(ep.length for ep in self.episodes)

    @property
    def fps(self) -> float:
        """Frames per second from ``meta/info.json``."""
        return float(self.info["fps"])

    @property
    def stats(self) -> dict[str, FeatureStats]:
        """Dataset statistics: ``meta/stats.json``, or aggregated from episode statistics."""
        if self._stats is None:
            self._stats = aggregate_stats([ep.stats for ep in self.episodes if ep.stats])
        return self._stats

    def frames(self) -> pa.Table:
        """All frames of all episodes as one arrow table (camera images left encoded)."""
        paths = list(dict.fromkeys(ep.data_path for ep in self.episodes))
        tables = [self._table(path) for path in paths]
        if len(tables) == 1:
            return tables[0]
        for path, table in zip(paths[1:], tables[1:], strict=True):
            if table.schema != tables[0].schema:
                raise DatasetError(
                    f"{self.root / path}: columns differ from {paths[0]}'s ({table.schema.names} vs "
                    f"{tables[0].schema.names}, or their types)"
                )
        return pa.concat_tables(tables)

    def episode(self, index: int) -> dict[str, np.ndarray]:
        """Every feature of episode ``index`` as numpy arrays.

        Returns:
            feature -> ``(frames,)`` for scalars, ``(frames, n)`` for vectors,
            uint8 ``(frames, height, width, 3)`` for cameras.

        Raises:
            DatasetError: if the index is out of range or the files disagree with the metadata.
        """
        if not 0 <= index < len(self.episodes):
            raise DatasetError(f"{self.root}: episode {index} out of range (0..{len(self.episodes) - 1})")
        ep = self.episodes[index]
        rows = self.episode_rows(index)
        out: dict[str, np.ndarray] = {}
        for key, spec in self.features.items():
            if spec.dtype == "video":
                out[key] = self._video_frames(ep, key)
            elif key not in rows.column_names:
                raise DatasetError(f"{self.root / ep.data_path}: column {key!r} is missing")
            elif spec.dtype == "image":
                out[key] = self._images(rows.column(key), f"{ep.data_path} episode {index} {key}")
            else:
                out[key] = column_to_numpy(rows.column(key), spec)
        return out

    def episode_rows(self, index: int) -> pa.Table:
        """The parquet rows of episode ``index`` (raw arrow columns)."""
        ep = self.episodes[index]
        table = self._table(ep.data_path)
        if table.num_rows == 0 or "index" not in table.column_names:
            raise DatasetError(f"{self.root / ep.data_path}: no 'index' column or no rows")
        offset = ep.from_index - int(table.column("index")[0].as_py())
        rows = table.slice(offset, ep.length)
        episode_column = rows.column("episode_index") if "episode_index" in rows.column_names else None
        if (
            offset < 0
            or rows.num_rows != ep.length
            or episode_column is None
            or episode_column[0].as_py() != ep.episode_index
            or episode_column[rows.num_rows - 1].as_py() != ep.episode_index
        ):
            raise DatasetError(
                f"{self.root / ep.data_path}: rows for episode {ep.episode_index} "
                f"(index {ep.from_index}..{ep.to_index - 1}) are not where the metadata says"
            )
        return rows

    def _table(self, path: str) -> pa.Table:
        if path not in self._tables:
            self._tables[path] = read_parquet(self.root / path, "data file")
        return self._tables[path]

    def _images(self, column: pa.ChunkedArray, where: str) -> np.ndarray:
        frames = []
        for item in column.to_pylist():
            data = item.get("bytes") if isinstance(item, dict) else None
            if data is None and isinstance(item, dict) and item.get("path"):
                data = (self.root / item["path"]).read_bytes()
            if data is None:
                raise DatasetError(f"{where}: image has neither bytes nor path")
            frames.append(decode_image(data, where))
        return np.stack(frames)

    def _video_frames(self, ep: EpisodeLocation, key: str) -> np.ndarray:
        if key not in ep.videos:
            raise DatasetError(f"{self.root}: episode {ep.episode_index} has no video location for {key}")
        path, from_s, to_s = ep.videos[key]
        frames = decode_video(self.root / path, from_s, to_s)
        return frames[: ep.length]


def read_dataset(root: Path) -> LeRobotDataset:
    """Open the LeRobot dataset at ``root`` (format v3.0 or v2.1).

    Raises:
        DatasetError: naming the file and field when metadata is missing or malformed.
    """
    root = Path(root)
    info = check_info(load_json(root / layout.INFO_PATH), root / layout.INFO_PATH)
    if info["codebase_version"] == layout.V30:
        return _read_v30(root, info)
    return _read_v21(root, info)


def _number(row: Mapping[str, Any], key: str, where: str, kind: type[int] | type[float] = int) -> Any:
    """``row[key]`` as ``kind``; ``DatasetError`` naming ``where`` and the column if it is missing or not a number."""
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DatasetError(f"{where}: column {key!r}: expected a number, got {value!r}")
    return kind(value)


def _tasks_of(row: Mapping[str, Any], where: str) -> tuple[str, ...]:
    tasks = row.get("tasks") or ()
    if isinstance(tasks, str) or not all(isinstance(t, str) for t in tasks):
        raise DatasetError(f"{where}: column 'tasks': expected a list of task texts, got {tasks!r}")
    return tuple(tasks)


def _stats_file(root: Path) -> dict[str, FeatureStats] | None:
    path = root / layout.STATS_PATH
    return stats_from_json(load_json(path), str(path)) if path.exists() else None


def _read_v30(root: Path, info: dict[str, Any]) -> LeRobotDataset:
    tasks = read_tasks_parquet(root / layout.TASKS_PATH)
    files = sorted((root / layout.EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(f"{root / layout.EPISODES_DIR}: no episode metadata files (chunk-XXX/file-XXX.parquet)")
    rows = [
        {**row, "__file": path}
        for path in files
        for row in read_parquet(path, "episode metadata file").to_pylist()
    ]
    rows.sort(key=lambda r: r.get("episode_index") if isinstance(r.get("episode_index"), int) else -1)
    video_keys = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    info_path = root / layout.INFO_PATH
    episodes = []
    for row in rows:
        where = f"{row.pop('__file')} episode {row.get('episode_index')}"
        for key in ("episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index"):
            if row.get(key) is None:
                raise DatasetError(f"{where}: column {key!r} is missing")
        data_path = fill_path(
            info["data_path"],
            f"{info_path} data_path",
            chunk_index=_number(row, "data/chunk_index", where),
            file_index=_number(row, "data/file_index", where),
        )
        videos = {}
        for key in video_keys:
            prefix = f"videos/{key}/"
            if row.get(prefix + "chunk_index") is None:
                raise DatasetError(f"{where}: column {prefix}chunk_index is missing")
            path = fill_path(
                info.get("video_path") or layout.VIDEO_PATH,
                f"{info_path} video_path",
                video_key=key,
                chunk_index=_number(row, prefix + "chunk_index", where),
                file_index=_number(row, prefix + "file_index", where),
            )
            videos[key] = (
                path,
                _number(row, prefix + "from_timestamp", where, float),
                _number(row, prefix + "to_timestamp", where, float),
            )
        stats: dict[str, dict[str, Any]] = {}
        extra = {}
        for column, value in row.items():
            if column.startswith("stats/"):
                feature, _, stat = column[len("stats/") :].rpartition("/")
                if value is not None:
                    stats.setdefault(feature, {})[stat] = value
            elif not column.startswith(("data/", "videos/", "meta/")) and column not in (
                "episode_index",
                "length",
                "tasks",
                "dataset_from_index",
                "dataset_to_index",
            ):
                extra[column] = value
        from_index = _number(row, "dataset_from_index", where)
        length = _number(row, "length", where)
        to_index = _number(row, "dataset_to_index", where) if row.get("dataset_to_index") is not None else None
        episodes.append(
            EpisodeLocation(
                episode_index=_number(row, "episode_index", where),
                length=length,
                tasks=_tasks_of(row, where),
                from_index=from_index,
                to_index=to_index if to_index is not None else from_index + length,
                data_path=data_path,
                videos=videos,
                stats=stats_from_json(stats, where) if stats else {},
                extra=extra,
            )
        )
    return LeRobotDataset(root, info, episodes, tasks, _stats_file(root))


def _read_v21(root: Path, info: dict[str, Any]) -> LeRobotDataset:
    info_path = root / layout.INFO_PATH
    chunks_size = info.get("chunks_size", layout.DEFAULT_CHUNKS_SIZE)
    if isinstance(chunks_size, bool) or not isinstance(chunks_size, int) or chunks_size <= 0:
        raise DatasetError(f"{info_path} chunks_size: expected a positive integer, got {chunks_size!r}")
    tasks_path = root / layout.V21_TASKS_PATH
    tasks = {}
    for number, r in enumerate(load_jsonl(tasks_path), start=1):
        if not isinstance(r, dict) or not isinstance(r.get("task"), str):
            raise DatasetError(f"{tasks_path}:{number}: expected an object with task_index and task, got {r!r}")
        tasks[_number(r, "task_index", f"{tasks_path}:{number}")] = r["task"]
    stats_path = root / layout.V21_EPISODES_STATS_PATH
    episode_stats = {}
    for number, r in enumerate(load_jsonl(stats_path) if stats_path.exists() else [], start=1):
        if not isinstance(r, dict):
            raise DatasetError(f"{stats_path}:{number}: expected an object with episode_index and stats")
        episode_stats[_number(r, "episode_index", f"{stats_path}:{number}")] = r.get("stats", {})
    episodes_path = root / layout.V21_EPISODES_PATH
    rows = []
    for number, r in enumerate(load_jsonl(episodes_path), start=1):
        if not isinstance(r, dict):
            raise DatasetError(f"{episodes_path}:{number}: expected an object with episode_index, length and tasks")
        where = f"{episodes_path}:{number}"
        rows.append((_number(r, "episode_index", where), _number(r, "length", where), where, r))
    rows.sort(key=lambda item: item[0])
    video_keys = [k for k, f in info["features"].items() if f.get("dtype") == "video"]
    episodes = []
    start = 0
    for index, length, where, row in rows:
        chunk = index // chunks_size
        videos = {
            key: (
                fill_path(
                    info.get("video_path") or layout.V21_VIDEO_PATH,
                    f"{info_path} video_path",
                    episode_chunk=chunk,
                    video_key=key,
                    episode_index=index,
                ),
                0.0,
                length / float(info["fps"]),
            )
            for key in video_keys
        }
        episodes.append(
            EpisodeLocation(
                episode_index=index,
                length=length,
                tasks=_tasks_of(row, where),
                from_index=start,
                to_index=start + length,
                data_path=fill_path(
                    info["data_path"], f"{info_path} data_path", episode_chunk=chunk, episode_index=index
                ),
                videos=videos,
                stats=(
                    stats_from_json(episode_stats[index], f"{stats_path} episode {index}")
                    if index in episode_stats
                    else {}
                ),
                extra={k: v for k, v in row.items() if k not in ("episode_index", "length", "tasks")},
            )
        )
        start += length
    return LeRobotDataset(root, info, episodes, tasks, _stats_file(root))
