"""A LeRobot dataset's export: only the files the format consists of, each written from decided content.

Transfer rules decide the features ``meta/info.json`` declares (and the card classifies). Anything else in
the directory (a parquet column no feature declares, statistics or episode metadata of such a column, a
file the format does not name) is something no rule has decided, so it does not leave: it is refused, or
left behind when the exporter names it (``--drop NAME``), and the report records it either way.

What is written (v3.0; v2.1 likewise with its JSON-lines metadata):

- ``meta/info.json`` with the kept features;
- ``meta/tasks.parquet``, ``meta/stats.json``, ``meta/episodes/chunk-*/file-*.parquet`` with the format's
  columns for the kept features;
- the data files the episode metadata points to, with the kept features and the bookkeeping columns;
- the video files of kept video features.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from testbed.data.card import CARD_FILENAME
from testbed.data.inspect import BOOKKEEPING_FEATURES
from testbed.data.lerobot import layout, read_dataset
from testbed.data.lerobot.reader import LeRobotDataset, load_json, load_jsonl
from testbed.errors import DatasetError

# what a LeRobot info.json holds besides features (v3.0 and v2.1)
INFO_KEYS = frozenset({"codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks",
                       "total_videos", "total_chunks", "chunks_size", "data_files_size_in_mb",
                       "video_files_size_in_mb", "fps", "splits", "data_path", "video_path", "features"})
# the format's own episode-metadata columns (v3.0 parquet; v2.1 episodes.jsonl uses the first three)
EPISODE_COLUMNS = frozenset({"episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index",
                             "data/chunk_index", "data/file_index", "meta/episodes/chunk_index",
                             "meta/episodes/file_index"})
VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
# per-episode columns the testbed's recorder adds (testbed.eval.runner: end_episode({"success": ...})):
# the episode's outcome, no factory or personal information
RECORDER_EPISODE_COLUMNS = frozenset({"success"})
TASK_COLUMNS = frozenset({"task_index", "task", "__index_level_0__"})
# files of the dataset the export replaces with its own (the new card and report)
REPLACED_FILES = frozenset({CARD_FILENAME, "export_report.json"})


@dataclass
class Undeclared:
    """Something in a LeRobot dataset directory that no declared feature covers.

    Args:
        name: what ``--drop`` takes: a column name (``operator_id``), a file's path in the dataset
            (``orders.csv``) or ``meta/info.json:<key>``.
        kind: ``column``, ``file`` or ``info key``.
        where: the files it was found in, relative to the dataset.
    """

    name: str
    kind: str
    where: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """``column operator_id (in data/chunk-000/file-000.parquet)``."""
        if self.kind == "file":
            return f"file {self.name}"
        shown = ", ".join(self.where[:3]) + (f" +{len(self.where) - 3} more" if len(self.where) > 3 else "")
        return f"{self.kind} {self.name} (in {shown})"

    def to_json(self, reason: str) -> dict[str, Any]:
        """JSON-ready, as in the report's ``left_behind`` and the audit log."""
        return {"name": self.name, "kind": self.kind, "where": list(self.where), "reason": reason}


@dataclass
class Inventory:
    """A LeRobot dataset's files sorted into what the format consists of and what it does not."""

    dataset: LeRobotDataset
    info: dict[str, Any]
    data_files: list[str]
    episode_files: list[str]
    videos: dict[str, list[str]]  # video feature -> its files
    undeclared: dict[str, Undeclared]

    def note(self, name: str, kind: str, where: str) -> None:
        entry = self.undeclared.setdefault(name, Undeclared(name, kind))
        if where not in entry.where:
            entry.where.append(where)


def lerobot_inventory(src: Path) -> Inventory:
    """Read ``src`` and list what in it no feature of ``meta/info.json`` declares.

    ``meta/info.json`` is read once, by the dataset reader (which checks it); ``Inventory.info`` is that reading.

    Raises:
        DatasetError: the dataset's metadata cannot be read, or a path it names leaves the dataset.
    """
    ds = read_dataset(src)
    info = ds.info
    features = ds.features
    videos_of = [k for k, spec in features.items() if spec.dtype == "video"]
    columns = {k for k, spec in features.items() if spec.dtype != "video"} | BOOKKEEPING_FEATURES
    inv = Inventory(ds, info, [], [], {k: [] for k in videos_of}, {})
    for key in info:
        if key not in INFO_KEYS:
            inv.note(f"{layout.INFO_PATH}:{key}", "info key", layout.INFO_PATH)
    v30 = ds.version == layout.V30
    if v30:
        inv.episode_files = sorted(str(p.relative_to(src)) for p in (src / layout.EPISODES_DIR).glob(
            "chunk-*/file-*.parquet"))
        meta = [layout.INFO_PATH, layout.TASKS_PATH, layout.STATS_PATH, *inv.episode_files]
    else:
        meta = [layout.INFO_PATH, layout.V21_TASKS_PATH, layout.V21_EPISODES_PATH, layout.V21_EPISODES_STATS_PATH,
                layout.STATS_PATH]
    inv.data_files = list(dict.fromkeys(ep.data_path for ep in ds.episodes))
    for ep in ds.episodes:
        for key, (path, _, _) in ep.videos.items():
            if path not in inv.videos[key]:
                inv.videos[key].append(path)
    known = set(meta) | set(inv.data_files) | {p for paths in inv.videos.values() for p in paths} | REPLACED_FILES
    for path in [*inv.data_files, *(p for paths in inv.videos.values() for p in paths)]:
        _inside(src, path)
    for path in _files(src):
        if path not in known:
            inv.note(path, "file", path)
    for path in inv.data_files:
        if (src / path).is_file():
            for name in pq.read_schema(src / path).names:
                if name not in columns:
                    inv.note(name, "column", path)
    if v30:
        for path in inv.episode_files:
            for name in pq.read_schema(src / path).names:
                _note_episode_column(inv, name, path, features)
        if (src / layout.TASKS_PATH).is_file():
            for name in pq.read_schema(src / layout.TASKS_PATH).names:
                if name not in TASK_COLUMNS:
                    inv.note(name, "column", layout.TASKS_PATH)
    else:
        for row in _jsonl(src, layout.V21_EPISODES_PATH):
            for name in row:
                if name not in EPISODE_COLUMNS and name not in RECORDER_EPISODE_COLUMNS:
                    inv.note(name, "column", layout.V21_EPISODES_PATH)
        for row in _jsonl(src, layout.V21_EPISODES_STATS_PATH):
            for name in row:
                if name not in ("episode_index", "stats"):
                    inv.note(name, "column", layout.V21_EPISODES_STATS_PATH)
            for name in row.get("stats", {}):
                if name not in features:
                    inv.note(name, "column", f"{layout.V21_EPISODES_STATS_PATH} stats")
        for row in _jsonl(src, layout.V21_TASKS_PATH):
            for name in row:
                if name not in TASK_COLUMNS:
                    inv.note(name, "column", layout.V21_TASKS_PATH)
    for name in _stats_json(src):
        if name not in features:
            inv.note(name, "column", layout.STATS_PATH)
    return inv


def _note_episode_column(inv: Inventory, name: str, path: str, features: Mapping[str, Any]) -> None:
    if name in EPISODE_COLUMNS or name in RECORDER_EPISODE_COLUMNS:
        return
    if name.startswith("stats/"):
        feature = name[len("stats/"):].rpartition("/")[0]
        if feature not in features:
            inv.note(feature, "column", f"{path} stats")
        return
    if name.startswith("videos/"):
        feature, _, column = name[len("videos/"):].rpartition("/")
        if feature in inv.videos and column in VIDEO_COLUMNS:
            return
        inv.note(feature or name, "column", f"{path} videos")
        return
    inv.note(name, "column", path)


def write_lerobot(src: Path, dst: Path, inv: Inventory, dropped: Collection[str]) -> list[str]:
    """Write the export of ``src`` into ``dst``: declared features minus ``dropped``, nothing undeclared.

    Args:
        src: the dataset.
        dst: the (empty) output directory.
        inv: ``lerobot_inventory(src)``; every entry of ``inv.undeclared`` must be in ``dropped``.
        dropped: feature names decided to stay, and undeclared names left behind on request.

    Returns:
        the files written, relative to ``dst``.
    """
    missing = [name for name in inv.undeclared if name not in dropped]
    if missing:  # export_dataset refuses these before it gets here
        raise DatasetError(f"{src}: {missing[0]} is not declared and was not left behind")
    features = inv.dataset.features
    kept = {k for k in features if k not in dropped}
    columns = {k for k in kept if features[k].dtype != "video"} | BOOKKEEPING_FEATURES
    written: list[str] = []

    def put_table(path: str, table: pa.Table, keep: Collection[str], metadata: bool = False) -> None:
        table = table.select([c for c in table.column_names if c in keep])
        if not metadata:  # schema metadata is free text no rule has decided
            table = table.replace_schema_metadata(None)
        _target(dst, path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, _target(dst, path))
        written.append(path)

    def put_json(path: str, value: Any, lines: bool = False) -> None:
        _target(dst, path).parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r) + "\n" for r in value) if lines else json.dumps(value, indent=2) + "\n"
        _target(dst, path).write_text(text, encoding="utf-8")
        written.append(path)

    info = {k: v for k, v in inv.info.items() if k in INFO_KEYS}
    info["features"] = {k: v for k, v in inv.info["features"].items() if k in kept}
    put_json(layout.INFO_PATH, info)
    for path in inv.data_files:
        put_table(path, pq.read_table(src / path), columns)
    stats = _stats_json(src)
    if stats:
        put_json(layout.STATS_PATH, {k: v for k, v in stats.items() if k in kept})
    if inv.dataset.version == layout.V30:
        tasks = pq.read_table(src / layout.TASKS_PATH)
        put_table(layout.TASKS_PATH, tasks, TASK_COLUMNS, metadata=set(tasks.column_names) <= TASK_COLUMNS)
        for path in inv.episode_files:
            table = pq.read_table(src / path)
            put_table(path, table, [c for c in table.column_names if _episode_column_kept(c, kept)])
    else:
        put_json(layout.V21_TASKS_PATH, [{k: v for k, v in row.items() if k in TASK_COLUMNS}
                                         for row in _jsonl(src, layout.V21_TASKS_PATH)], lines=True)
        put_json(layout.V21_EPISODES_PATH, [{k: v for k, v in row.items() if k in EPISODE_COLUMNS
                                             or k in RECORDER_EPISODE_COLUMNS}
                                            for row in _jsonl(src, layout.V21_EPISODES_PATH)], lines=True)
        if (src / layout.V21_EPISODES_STATS_PATH).is_file():
            put_json(layout.V21_EPISODES_STATS_PATH,
                     [{"episode_index": row["episode_index"],
                       "stats": {k: v for k, v in row.get("stats", {}).items() if k in kept}}
                      for row in _jsonl(src, layout.V21_EPISODES_STATS_PATH)], lines=True)
    for key, paths in inv.videos.items():
        if key not in kept:
            continue
        for path in paths:
            _target(dst, path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / path, _target(dst, path))
            written.append(path)
    return written


def _episode_column_kept(name: str, kept: Collection[str]) -> bool:
    if name in EPISODE_COLUMNS or name in RECORDER_EPISODE_COLUMNS:
        return True
    if name.startswith("stats/"):
        return name[len("stats/"):].rpartition("/")[0] in kept
    if name.startswith("videos/"):
        return name[len("videos/"):].rpartition("/")[0] in kept
    return False


def _files(root: Path) -> list[str]:
    out = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        base = Path(folder).relative_to(root)
        out += [(base / name).as_posix() for name in sorted(files)]
    return out


def _jsonl(src: Path, path: str) -> list[dict[str, Any]]:
    return load_jsonl(src / path) if (src / path).is_file() else []


def _stats_json(src: Path) -> dict[str, Any]:
    path = src / layout.STATS_PATH
    value = load_json(path) if path.is_file() else {}
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: expected a JSON object of feature -> statistics")
    return value


def _inside(root: Path, path: str) -> None:
    if Path(path).is_absolute() or ".." in Path(path).parts:
        raise DatasetError(f"{root / layout.INFO_PATH}: the dataset names {path!r}, a path outside the dataset")


def _target(root: Path, path: str) -> Path:
    _inside(root, path)
    return root / path
