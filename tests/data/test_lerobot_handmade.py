"""Datasets built by hand from LeRobot's published format description, not with our writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from testbed.data.lerobot import read_dataset, validate_dataset

FPS = 10
LENGTHS = (4, 6)
TASKS = ("pick the bolt", "place the bolt")


def features_json() -> dict[str, dict[str, object]]:
    scalar = {"shape": [1], "names": None}
    return {
        "observation.state": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": [2], "names": ["dx", "dy"]},
        "timestamp": {"dtype": "float32", **scalar},
        "frame_index": {"dtype": "int64", **scalar},
        "episode_index": {"dtype": "int64", **scalar},
        "index": {"dtype": "int64", **scalar},
        "task_index": {"dtype": "int64", **scalar},
    }


def episode_table(episode: int, start: int) -> pa.Table:
    n = LENGTHS[episode]
    state = np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * episode
    return pa.table(
        {
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.ravel()), 2),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(-state.ravel()), 2),
            "timestamp": pa.array(np.arange(n, dtype=np.float32) / FPS),
            "frame_index": pa.array(np.arange(n, dtype=np.int64)),
            "episode_index": pa.array(np.full(n, episode, dtype=np.int64)),
            "index": pa.array(np.arange(start, start + n, dtype=np.int64)),
            "task_index": pa.array(np.full(n, episode, dtype=np.int64)),
        }
    )


def stats_json(values: np.ndarray) -> dict[str, list[float]]:
    values = values.reshape(len(values), -1).astype(np.float64)
    return {
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "count": [len(values)],
    }


def table_stats(table: pa.Table) -> dict[str, dict[str, list[float]]]:
    out = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            values = column.flatten().to_numpy().reshape(len(column), -1)
        else:
            values = column.to_numpy()
        out[name] = stats_json(values)
    return out


def info_json(version: str, data_path: str) -> dict[str, object]:
    return {
        "codebase_version": version,
        "robot_type": "scara4",
        "total_episodes": 2,
        "total_frames": sum(LENGTHS),
        "total_tasks": 2,
        "chunks_size": 1000,
        "fps": FPS,
        "splits": {"train": "0:2"},
        "data_path": data_path,
        "video_path": None,
        "features": features_json(),
    }


def build_v21(root: Path) -> None:
    (root / "meta").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    info = info_json("v2.1", "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet")
    info |= {"total_chunks": 1, "total_videos": 0}
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS))
    )
    episodes, stats, start = [], [], 0
    for episode, n in enumerate(LENGTHS):
        table = episode_table(episode, start)
        pq.write_table(table, root / f"data/chunk-000/episode_{episode:06d}.parquet")
        episodes.append({"episode_index": episode, "tasks": [TASKS[episode]], "length": n})
        stats.append({"episode_index": episode, "stats": table_stats(table)})
        start += n
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (root / "meta/episodes_stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats))


def build_v30(root: Path) -> None:
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    info = info_json("v3.0", "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet")
    info |= {"data_files_size_in_mb": 100, "video_files_size_in_mb": 200}
    (root / "meta/info.json").write_text(json.dumps(info))
    pq.write_table(pa.table({"task": list(TASKS), "task_index": [0, 1]}), root / "meta/tasks.parquet")
    tables, rows, start = [], [], 0
    for episode, n in enumerate(LENGTHS):
        table = episode_table(episode, start)
        tables.append(table)
        row = {
            "episode_index": episode,
            "tasks": [TASKS[episode]],
            "length": n,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": start,
            "dataset_to_index": start + n,
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
        }
        for feature, stats in table_stats(table).items():
            row |= {f"stats/{feature}/{name}": value for name, value in stats.items()}
        rows.append(row)
        start += n
    everything = pa.concat_tables(tables)
    pq.write_table(everything, root / "data/chunk-000/file-000.parquet")
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    (root / "meta/stats.json").write_text(json.dumps(table_stats(everything)))


def check_contents(root: Path, version: str) -> None:
    ds = read_dataset(root)
    assert ds.version == version
    assert ds.num_episodes == 2
    assert ds.num_frames == sum(LENGTHS)
    assert ds.tasks == {0: TASKS[0], 1: TASKS[1]}
    second = ds.episode(1)
    expected = np.arange(12, dtype=np.float32).reshape(6, 2) + 100
    np.testing.assert_array_equal(second["observation.state"], expected)
    np.testing.assert_array_equal(second["action"], -expected)
    np.testing.assert_array_equal(second["index"], np.arange(4, 10))
    assert ds.episodes[1].tasks == (TASKS[1],)
    np.testing.assert_allclose(ds.stats["observation.state"]["max"], [110.0, 111.0])
    assert ds.stats["action"]["count"].tolist() == [10]
    assert ds.frames().num_rows == 10
    assert validate_dataset(root) == []


def test_reads_handmade_v21_dataset(tmp_path: Path) -> None:
    build_v21(tmp_path / "v21")
    check_contents(tmp_path / "v21", "v2.1")


def test_reads_handmade_v30_dataset(tmp_path: Path) -> None:
    build_v30(tmp_path / "v30")
    check_contents(tmp_path / "v30", "v3.0")
