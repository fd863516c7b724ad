"""``LeRobotWriter``: record episodes as a LeRobot v3.0 dataset.

Frames are collected per episode in preallocated numpy buffers. A checkpoint
leaves the episodes ended so far as a complete, valid dataset on disk: the
episodes ended since the last checkpoint go to a new data file
(``data/chunk-XXX/file-XXX.parquet``; earlier files are never rewritten) and
the metadata (tasks when a task was added, the last episodes-metadata file,
stats, info) is rewritten, each file through a temporary file, flushed and
renamed over the old one, ``info.json`` last. The episodes metadata moves on to
a new ``meta/episodes/chunk-XXX/file-XXX.parquet`` once a checkpoint leaves 64
rows (or 256 KB) in one, and the dataset statistics are kept as running aggregates, so a
checkpoint writes as much whether 10 or 100,000 episodes came before it
(except once per new ``extra`` column: every episodes file then gets it).
``end_episode`` makes a checkpoint when ``checkpoint_s`` has passed since the
last one (0: at every episode's end) and ``close()`` makes the last one, so a
process killed at any moment keeps every episode that ended ``checkpoint_s``
or more before it. A checkpoint of a few episodes costs ~5-10 ms (two small
parquet files, two JSON files, four fsyncs), hence the window: the run recorder
checkpoints every episode (episodes end ~0.5 s apart there), bulk writers batch.

Camera features are stored as ``image`` (PNG bytes in the parquet data,
lossless, readable without a video decoder) unless ``video=True``, which
encodes each episode's stream as an H.264 mp4 under ``videos/`` (smaller,
lossy).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from testbed.data.lerobot import layout
from testbed.data.lerobot.features import FeatureSpec, default_features
from testbed.data.lerobot.images import encode_png
from testbed.data.lerobot.stats import FeatureStats, aggregate_stats, columns_stats, image_stats, stats_to_json
from testbed.data.lerobot.tables import tasks_table
from testbed.data.lerobot.video import encode_video, video_info
from testbed.errors import DatasetError

_INITIAL_CAPACITY = 256
DEFAULT_CHECKPOINT_S = 1.0
# meta/episodes/chunk-XXX/file-XXX.parquet (the last one) is rewritten at every checkpoint: a checkpoint that
# leaves it holding this many episodes, or this many bytes, starts a new one, so that a checkpoint rewrites a
# bounded number of rows however many episodes the dataset already has (a 1-row file takes ~1.8 ms, 64 rows ~2.1)
_EPISODES_FILE_ROWS = 64
_EPISODES_FILE_LIMIT_BYTES = 256 * 1024
_SYNC_THREADS = 8  # a checkpoint's files are synced side by side: its data files, tasks, episodes, stats, info
_RESERVED_EPISODE_COLUMNS = ("episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index")
_EXTRA_KINDS = {pa.bool_(): "bool", pa.string(): "string", pa.int64(): "integer", pa.float64(): "number"}


class LeRobotWriter:
    """Write episodes in the LeRobot v3.0 format.

    Args:
        root: dataset directory; must not already hold a dataset.
        fps: frames per second of the recording.
        robot_type: free text, e.g. ``"cobot7"``.
        features: feature name -> spec, e.g. ``observation.state``, ``action``,
            ``observation.images.<camera>``; the bookkeeping columns are added.
        chunks_size: files per ``chunk-XXX`` directory.
        video: store camera features as mp4 (``video``) rather than PNG (``image``).
        data_files_size_mb: the size a data file grows to within one checkpoint (0: an episode per file),
            recorded as ``data_files_size_in_mb`` in ``meta/info.json``; every checkpoint starts a new
            data file, so that ended episodes are on disk without rewriting earlier files.
        checkpoint_s: ``end_episode`` writes the episodes ended so far to disk once this many seconds
            (wall time) have passed since the last checkpoint; 0 writes at every episode's end.

    Raises:
        DatasetError: for a bad feature spec or a root that already has a dataset.
    """

    def __init__(
        self,
        root: Path,
        *,
        fps: float,
        robot_type: str,
        features: Mapping[str, FeatureSpec],
        chunks_size: int = layout.DEFAULT_CHUNKS_SIZE,
        video: bool = False,
        data_files_size_mb: int = layout.DEFAULT_DATA_FILE_SIZE_MB,
        checkpoint_s: float = DEFAULT_CHECKPOINT_S,
    ) -> None:
        self.root = Path(root)
        if not checkpoint_s >= 0:
            raise DatasetError(f"{self.root}: checkpoint_s must be >= 0 seconds, got {checkpoint_s}")
        self.checkpoint_s = checkpoint_s
        if not fps > 0:
            raise DatasetError(f"{self.root}: fps must be positive, got {fps}")
        if chunks_size <= 0:
            raise DatasetError(f"{self.root}: chunks_size must be positive, got {chunks_size}")
        if (self.root / layout.INFO_PATH).exists():
            raise DatasetError(f"{self.root}: already holds a dataset ({layout.INFO_PATH}); choose a new directory")
        self.fps = fps
        self.robot_type = robot_type
        self.chunks_size = chunks_size
        self.video = video
        self._data_files_size_mb = data_files_size_mb
        self.features: dict[str, FeatureSpec] = {}
        for key, spec in features.items():
            if key in default_features():
                raise DatasetError(f"features[{key!r}]: {key} is added by the writer; leave it out")
            if spec.dtype == "video" and not video:
                raise DatasetError(f"features[{key!r}]: dtype 'video' needs LeRobotWriter(..., video=True)")
            if spec.is_visual:
                height, width, _ = spec.shape
                dtype = "video" if video else "image"
                info = video_info(height, width, fps) if video else None
                spec = FeatureSpec(dtype, spec.shape, spec.names, info)
            spec.check(key)
            self.features[key] = spec
        self._user_keys = tuple(self.features)
        self.features.update(default_features())
        self._camera_keys = tuple(k for k in self._user_keys if self.features[k].is_visual)
        self._vector_keys = tuple(k for k in self._user_keys if not self.features[k].is_visual)

        self._tasks: dict[str, int] = {}
        self._tasks_written = 0  # tasks in meta/tasks.parquet
        self._episodes: list[dict[str, Any]] = []
        self._total_frames = 0
        self._closed = False
        # open episode
        self._episode_index: int | None = None
        self._task_index = 0
        self._length = 0
        self._capacity = 0
        self._buffers: dict[str, np.ndarray] = {}
        self._frames: dict[str, list[np.ndarray]] = {}
        self._timestamps = np.empty(0, dtype=np.float32)
        self._meta_file: tuple[int, int] = (0, 0)  # the episodes-metadata file new rows go to
        self._meta_table: pa.Table | None = None  # that file's rows so far
        self._fixed_schema: pa.Schema | None = None  # metadata columns every episode has, set by episode 0
        # extra columns in order of first use: arrow type and the episode that fixed it
        self._extra_types: dict[str, tuple[pa.DataType, int]] = {}
        self._dataset_stats: dict[str, FeatureStats] = {}  # aggregated over the ended episodes
        self._schema = pa.schema(
            [(k, self.features[k].arrow_type()) for k in self.features if self.features[k].dtype != "video"]
        )
        self._video_file = 0
        self._pending: list[tuple[dict[str, Any], pa.Table]] = []  # ended, not yet on disk: (metadata row, data)
        self._data_file: tuple[int, int] = (0, 0)  # the next checkpoint's data file
        self._widened = False  # the extra columns changed since the last checkpoint
        self._sync_pool = ThreadPoolExecutor(max_workers=_SYNC_THREADS, thread_name_prefix="lerobot-fsync")
        self._last_checkpoint = time.monotonic()

    def start_episode(self, task: str) -> int:
        """Open a new episode for ``task`` (natural language) and return its index."""
        self._check_open()
        if self._episode_index is not None:
            raise DatasetError(f"{self.root}: episode {self._episode_index} is still open; call end_episode()")
        if not task:
            raise DatasetError(f"{self.root}: an episode needs a non-empty task description")
        self._task_index = self._tasks.setdefault(task, len(self._tasks))
        self._episode_index = len(self._episodes)
        self._length = 0
        self._grow(_INITIAL_CAPACITY)
        self._frames = {key: [] for key in self._camera_keys}
        return self._episode_index

    def add_frame(self, frame: Mapping[str, np.ndarray], timestamp_s: float) -> None:
        """Append one frame; ``frame`` has exactly the user features as keys.

        Raises:
            DatasetError: if no episode is open, a key is missing or extra, or an array's
                dtype or shape differs from its feature spec.
        """
        if self._episode_index is None:
            raise DatasetError(f"{self.root}: add_frame() before start_episode()")
        if len(frame) != len(self._user_keys):
            self._raise_keys(frame)
        n = self._length
        if n == self._capacity:
            self._grow(2 * self._capacity)
        for key in self._vector_keys:
            value = frame.get(key)
            if value is None:
                self._raise_keys(frame)
            buffer = self._buffers[key]
            if value.dtype != buffer.dtype or value.shape != buffer.shape[1:]:
                self._raise_spec(key, value)
            buffer[n] = value
        for key in self._camera_keys:
            value = frame.get(key)
            if value is None:
                self._raise_keys(frame)
            if value.dtype != np.uint8 or value.shape != self.features[key].shape:
                self._raise_spec(key, value)
            self._frames[key].append(value.copy())
        self._timestamps[n] = timestamp_s
        self._length = n + 1

    def abort_episode(self) -> None:
        """Drop the open episode's frames (the run that fed it failed); episodes already ended stay."""
        self._episode_index = None
        self._length = 0
        self._frames = {}

    def end_episode(self, extra: Mapping[str, Any] | None = None) -> None:
        """Write the open episode's frames and keep its metadata row and statistics.

        Args:
            extra: additional per-episode columns for ``meta/episodes`` (numbers, strings, bools),
                e.g. ``{"success": True, "seed": 3}``. A key may first appear in any episode (earlier
                episodes hold null) and may be left out (null); its type stays the one it first had,
                except that integers and floats mix into a float column.

        Raises:
            DatasetError: no episode is open or it has no frames, or an ``extra`` key is reserved or
                its value's type differs from earlier episodes' (naming the key and both episodes);
                the episode then stays open, to be ended again or aborted.
        """
        if self._episode_index is None:
            raise DatasetError(f"{self.root}: end_episode() without an open episode")
        n = self._length
        if n == 0:
            raise DatasetError(f"{self.root}: episode {self._episode_index} has no frames")
        extra = dict(extra or {})
        extra_types = self._check_extra(extra)
        start = self._total_frames
        columns: dict[str, np.ndarray] = {key: self._buffers[key][:n] for key in self._vector_keys}
        columns["timestamp"] = self._timestamps[:n]
        columns["frame_index"] = np.arange(n, dtype=np.int64)
        columns["episode_index"] = np.full(n, self._episode_index, dtype=np.int64)
        columns["index"] = np.arange(start, start + n, dtype=np.int64)
        columns["task_index"] = np.full(n, self._task_index, dtype=np.int64)
        stats = columns_stats(columns)

        row: dict[str, Any] = {
            "episode_index": self._episode_index,
            "tasks": [self._task_name(self._task_index)],
            "length": n,
        }
        arrays: dict[str, pa.Array] = {}
        for key in self._camera_keys:
            frames = np.stack(self._frames[key])
            stats[key] = image_stats(frames)
            if self.video:
                row.update(self._write_video(key, frames))
            else:
                arrays[key] = pa.StructArray.from_arrays(
                    [pa.array([encode_png(f) for f in frames], pa.binary()), pa.nulls(n, pa.string())],
                    names=["bytes", "path"],
                )
        table = self._data_table(columns, arrays)
        row["data/chunk_index"] = row["data/file_index"] = -1  # the checkpoint that writes the data sets them
        row["dataset_from_index"] = start
        row["dataset_to_index"] = start + n
        for key, feature_stats in stats.items():
            for name, value in feature_stats.items():
                row[f"stats/{key}/{name}"] = value.tolist()
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = self._meta_file
        if self._fixed_schema is None:
            self._fixed_schema = pa.Table.from_pylist([row]).schema
        row.update({k: v.item() if isinstance(v, np.generic) else v for k, v in extra.items()})
        self._widened = self._widened or extra_types != self._extra_types
        self._extra_types = extra_types
        self._episodes.append(row)
        self._pending.append((row, table))
        # pooled statistics combine pairwise exactly as over all episodes at once
        self._dataset_stats = aggregate_stats([self._dataset_stats, stats] if self._dataset_stats else [stats])
        self._total_frames += n
        self._episode_index = None
        self._frames = {}
        if time.monotonic() - self._last_checkpoint >= self.checkpoint_s:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Write the episodes ended since the last checkpoint: new data files (each up to ``data_files_size_mb``,
        at least one episode), then the metadata."""
        self._check_open()
        if not self._pending:
            return
        limit = self._data_files_size_mb * 1024 * 1024
        files: list[list[tuple[dict[str, Any], pa.Table]]] = [[]]
        size = 0  # of the last file's tables
        for episode in self._pending:  # a file holds at least one episode and, past that, up to ~the size limit
            if files[-1] and size + episode[1].nbytes > limit:
                files.append([])
                size = 0
            files[-1].append(episode)
            size += episode[1].nbytes
        batch = _FileBatch(self._sync_pool)
        for episodes in files:
            chunk_index, file_index = self._data_file
            table = pa.concat_tables([t for _, t in episodes]) if len(episodes) > 1 else episodes[0][1]
            path = self.root / layout.DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
            batch.write(path, lambda sink, t=table: pq.write_table(t, sink, compression="snappy"))
            for row, _ in episodes:
                row["data/chunk_index"], row["data/file_index"] = chunk_index, file_index
            self._data_file = layout.next_chunk_file(chunk_index, file_index, self.chunks_size)
        assert self._fixed_schema is not None
        self._write_meta(batch, self._fixed_schema, self._widened, len(self._pending))
        batch.commit()
        self._pending = []
        self._widened = False
        self._last_checkpoint = time.monotonic()

    def close(self) -> None:
        """Write what is left (the last checkpoint) and finish the writer.

        Raises:
            DatasetError: if an episode is still open or none was ever ended.
        """
        if self._closed:
            return
        if self._episode_index is not None:
            raise DatasetError(f"{self.root}: episode {self._episode_index} is still open; call end_episode()")
        if not self._episodes:
            raise DatasetError(f"{self.root}: no episodes recorded; a dataset needs at least one")
        self.checkpoint()
        self._closed = True
        self._sync_pool.shutdown()

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()

    # -- internals ---------------------------------------------------------------------------

    def _check_extra(self, extra: Mapping[str, Any]) -> dict[str, tuple[pa.DataType, int]]:
        """The extra columns' types with this episode's values added; raise if a value does not fit."""
        index = self._episode_index
        types = dict(self._extra_types)
        for key, value in extra.items():
            where = f"{self.root}: episode {index} extra[{key!r}]"
            if key in _RESERVED_EPISODE_COLUMNS or key.startswith(("data/", "videos/", "stats/", "meta/")):
                raise DatasetError(f"{where}: name is reserved by the format")
            if isinstance(value, bool | np.bool_):
                kind = pa.bool_()
            elif isinstance(value, str):
                kind = pa.string()
            elif isinstance(value, int | np.integer):
                kind = pa.int64()
            elif isinstance(value, float | np.floating):
                kind = pa.float64()
            else:
                raise DatasetError(f"{where}: expected a number, string or bool, got {type(value).__name__}")
            known, first = types.get(key, (kind, index))
            if {known, kind} == {pa.int64(), pa.float64()}:
                kind = pa.float64()  # integers and floats share a float column
            elif known != kind:
                raise DatasetError(
                    f"{where}: expected {_EXTRA_KINDS[known]} like episode {first}'s, "
                    f"got {_EXTRA_KINDS[kind]} {value!r}"
                )
            types[key] = (kind, first)
        return types

    def _write_meta(self, batch: _FileBatch, fixed_schema: pa.Schema, widened: bool, new_rows: int) -> None:
        """Rewrite tasks, episodes, stats and info for the episodes ended so far; ``info.json`` last.

        Args:
            batch: the checkpoint's files, the data files already in it.
            fixed_schema: the metadata columns every episode has.
            widened: the extra columns changed (a new key, or integers became floats): every
                episodes-metadata file is rewritten with them, so that all share one schema.
            new_rows: episodes ended since the last checkpoint (the last rows of ``_episodes``).
        """
        if len(self._tasks) != self._tasks_written:
            tasks = tasks_table(list(self._tasks))
            batch.write(self.root / layout.TASKS_PATH, lambda sink: pq.write_table(tasks, sink))
            self._tasks_written = len(self._tasks)
        schema = pa.schema([*fixed_schema, *(pa.field(k, t) for k, (t, _) in self._extra_types.items())])
        if widened:
            files: dict[tuple[int, int], list[dict[str, Any]]] = {}
            for r in self._episodes:
                files.setdefault((r["meta/episodes/chunk_index"], r["meta/episodes/file_index"]), []).append(r)
            for (chunk_index, file_index), rows in files.items():
                table = pa.Table.from_pylist(rows, schema=schema)
                if (chunk_index, file_index) != self._meta_file:
                    path = self.root / layout.EPISODES_PATH.format(chunk_index=chunk_index, file_index=file_index)
                    batch.write(path, lambda sink, t=table: _write_episodes(t, sink))
            self._meta_table = pa.Table.from_pylist(files.get(self._meta_file, []), schema=schema)
        else:
            row = pa.Table.from_pylist(self._episodes[-new_rows:], schema=schema)
            if self._meta_table is not None:
                row = pa.concat_tables([self._meta_table, row]).combine_chunks()
            self._meta_table = row
        chunk_index, file_index = self._meta_file
        episodes_path = self.root / layout.EPISODES_PATH.format(chunk_index=chunk_index, file_index=file_index)
        table = self._meta_table
        size = batch.write(episodes_path, lambda sink: _write_episodes(table, sink))
        if table.num_rows >= _EPISODES_FILE_ROWS or size >= _EPISODES_FILE_LIMIT_BYTES:
            self._meta_file = layout.next_chunk_file(chunk_index, file_index, self.chunks_size)
            self._meta_table = None
        stats = stats_to_json(self._dataset_stats)
        batch.write(self.root / layout.STATS_PATH, lambda sink: sink.write(json.dumps(stats, indent=2).encode()))
        info = self._info()
        batch.write(self.root / layout.INFO_PATH, lambda sink: sink.write(json.dumps(info, indent=2).encode()))

    def _info(self) -> dict[str, Any]:
        fps: float | int = int(self.fps) if float(self.fps).is_integer() else self.fps
        n = len(self._episodes)
        return {
            "codebase_version": layout.V30,
            "robot_type": self.robot_type,
            "total_episodes": n,
            "total_frames": self._total_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": self._data_files_size_mb,
            "video_files_size_in_mb": layout.DEFAULT_VIDEO_FILE_SIZE_MB,
            "fps": fps,
            "splits": {"train": f"0:{n}"},
            "data_path": layout.DATA_PATH,
            "video_path": layout.VIDEO_PATH if self.video and self._camera_keys else None,
            "features": {key: spec.to_json() for key, spec in self.features.items()},
        }

    def _task_name(self, index: int) -> str:
        return next(task for task, i in self._tasks.items() if i == index)

    def _data_table(self, columns: Mapping[str, np.ndarray], images: Mapping[str, pa.Array]) -> pa.Table:
        arrays = []
        for field in self._schema:
            if field.name in images:
                arrays.append(images[field.name])
                continue
            values = columns[field.name]
            if pa.types.is_fixed_size_list(field.type):
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), field.type.list_size))
            else:
                arrays.append(pa.array(values.reshape(-1), field.type))
        return pa.Table.from_arrays(arrays, schema=self._schema)

    def _write_video(self, key: str, frames: np.ndarray) -> dict[str, Any]:
        # one file per episode: chunk/file advance together for every camera
        chunk_index, file_index = divmod(self._episode_index or 0, self.chunks_size)
        path = self.root / layout.VIDEO_PATH.format(video_key=key, chunk_index=chunk_index, file_index=file_index)
        duration_s = encode_video(path, frames, self.fps)
        return {
            f"videos/{key}/chunk_index": chunk_index,
            f"videos/{key}/file_index": file_index,
            f"videos/{key}/from_timestamp": 0.0,
            f"videos/{key}/to_timestamp": duration_s,
        }

    def _grow(self, capacity: int) -> None:
        old = self._buffers
        self._buffers = {}
        for key in self._vector_keys:
            spec = self.features[key]
            buffer = np.empty((capacity, *spec.shape), dtype=spec.dtype)
            if key in old and self._length:
                buffer[: self._length] = old[key][: self._length]
            self._buffers[key] = buffer
        timestamps = np.empty(capacity, dtype=np.float32)
        timestamps[: self._length] = self._timestamps[: self._length]
        self._timestamps = timestamps
        self._capacity = capacity

    def _check_open(self) -> None:
        if self._closed:
            raise DatasetError(f"{self.root}: the writer is closed")

    def _raise_keys(self, frame: Mapping[str, np.ndarray]) -> None:
        missing = sorted(set(self._user_keys) - set(frame))
        extra = sorted(set(frame) - set(self._user_keys))
        raise DatasetError(
            f"episode {self._episode_index} frame {self._length}: keys differ from the features "
            f"(missing: {missing or 'none'}, unexpected: {extra or 'none'})"
        )

    def _raise_spec(self, key: str, value: np.ndarray) -> None:
        spec = self.features[key]
        dtype = "uint8" if spec.is_visual else spec.dtype
        raise DatasetError(
            f"episode {self._episode_index} frame {self._length} {key}: expected {dtype} {spec.shape}, "
            f"got {getattr(value, 'dtype', type(value).__name__)} {getattr(value, 'shape', '')}"
        )


def _write_episodes(table: pa.Table, sink: pa.NativeFile) -> None:
    """Write an episodes-metadata table: plain-encoded, with column statistics for ``episode_index`` only.

    Its many small columns (a list per statistic) gain nothing from dictionaries or min/max statistics, which
    took a fifth (1 row) to a half (64 rows) of the time to write it; ``episode_index``'s let a reader filter by it.
    """
    pq.write_table(table, sink, use_dictionary=False, write_statistics=["episode_index"])


class _FileBatch:
    """The files of one checkpoint, each replaced atomically: written to a hidden temporary file beside it,
    all synced to disk together, then each renamed over its file in the order written (``info.json`` last).

    A reader (or a process killed meanwhile) sees the old file or the new one, never a part of one, and no new
    file is in place before every one is on disk. The syncs run side by side (the file system commits them
    together: ~1 ms for a checkpoint's four files where one after the other took ~4 ms each on a busy disk).
    A replaced file is held open across its rename and closed by the pool: freeing its blocks (~4 ms a file on
    the busy disk, mounted with ``discard``) then happens there rather than inside the rename.
    """

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._staged: list[tuple[Path, Path]] = []  # (temporary file, file it replaces)

    def write(self, path: Path, fill: Callable[[pa.NativeFile], object]) -> int:
        """Stage ``path``'s new content, written by ``fill`` into an open file; return its size in bytes."""
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            sink = pa.OSFile(str(tmp), "wb")
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            sink = pa.OSFile(str(tmp), "wb")
        with sink:
            fill(sink)
            size = sink.tell()
        self._staged.append((tmp, path))
        return size

    def commit(self) -> None:
        """Sync every staged file to disk, then rename each over its file, in order."""
        list(self._pool.map(_sync, [tmp for tmp, _ in self._staged]))
        replaced: list[int] = []  # descriptors of the files renamed over, closed by the pool
        try:
            for tmp, path in self._staged:
                with contextlib.suppress(FileNotFoundError):  # else a new file
                    replaced.append(os.open(path, os.O_RDONLY))
                os.replace(tmp, path)
        finally:
            for fd in replaced:
                self._pool.submit(os.close, fd)
        self._staged = []


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
