"""Frames/s writing and reading state+action episodes in the LeRobot format.

Prints one JSON object: ``write_frames_per_s`` (LeRobotWriter with its default
checkpoint window, one add_frame call per frame, metadata and stats included),
``write_every_episode_on_disk_frames_per_s`` (a checkpoint at every episode's
end, as a recording run writes, and ``read_every_episode_on_disk_frames_per_s``
reading that dataset back), ``read_frames_per_s``
(read_dataset then every episode as numpy arrays), and the floors: plain
pyarrow writing and reading the same arrays (``pyarrow_write_frames_per_s``,
``pyarrow_read_frames_per_s``), and for the every-episode case
``pyarrow_write_per_episode_frames_per_s``: one ``pq.write_table`` per episode of
the same columns (snappy, as the writer) to its own file where the writer puts
it, one data file per episode like the writer's checkpoints, and nothing else:
no metadata, statistics, temporary file, fsync or rename, and whole-episode
arrays instead of one call per frame. The every-episode writer and its floor are
timed alternately in the same run; ``ratio_write_every_episode_on_disk_vs_floor``
and ``ratio_write_vs_floor`` divide each writer's rate by its floor's. Best of
three runs each.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from testbed.data.lerobot import FeatureSpec, LeRobotWriter, layout, read_dataset
from testbed.data.lerobot.writer import DEFAULT_CHECKPOINT_S

EPISODES = 100
FRAMES_PER_EPISODE = 500
STATE_DIM = ACTION_DIM = 7
REPEATS = 3


def make_episodes() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        {
            "observation.state": rng.normal(size=(FRAMES_PER_EPISODE, STATE_DIM)).astype(np.float32),
            "action": rng.normal(size=(FRAMES_PER_EPISODE, ACTION_DIM)).astype(np.float32),
        }
        for _ in range(EPISODES)
    ]


def write_testbed(root: Path, episodes: list[dict[str, np.ndarray]],
                  checkpoint_s: float = DEFAULT_CHECKPOINT_S) -> None:
    features = {
        "observation.state": FeatureSpec("float32", (STATE_DIM,), [f"j{i}" for i in range(STATE_DIM)]),
        "action": FeatureSpec("float32", (ACTION_DIM,), [f"a{i}" for i in range(ACTION_DIM)]),
    }
    with LeRobotWriter(root, fps=50, robot_type="cobot7", features=features, checkpoint_s=checkpoint_s) as writer:
        for arrays in episodes:
            writer.start_episode("pick part")
            state, action = arrays["observation.state"], arrays["action"]
            for i in range(FRAMES_PER_EPISODE):
                writer.add_frame({"observation.state": state[i], "action": action[i]}, i * 0.02)
            writer.end_episode()


def read_testbed(root: Path) -> int:
    ds = read_dataset(root)
    frames = 0
    for index in range(ds.num_episodes):
        frames += len(ds.episode(index)["action"])
    return frames


def episode_table(arrays: dict[str, np.ndarray], index: int) -> pa.Table:
    """The data columns LeRobotWriter writes for episode ``index``, built from whole-episode arrays."""
    n = FRAMES_PER_EPISODE
    start = index * n
    return pa.table(
        {
            "observation.state": pa.FixedSizeListArray.from_arrays(
                pa.array(arrays["observation.state"].reshape(-1)), STATE_DIM
            ),
            "action": pa.FixedSizeListArray.from_arrays(pa.array(arrays["action"].reshape(-1)), ACTION_DIM),
            "timestamp": pa.array(np.arange(n, dtype=np.float32) * np.float32(0.02)),
            "frame_index": pa.array(np.arange(n, dtype=np.int64)),
            "episode_index": pa.array(np.full(n, index, dtype=np.int64)),
            "index": pa.array(np.arange(start, start + n, dtype=np.int64)),
            "task_index": pa.array(np.zeros(n, dtype=np.int64)),
        }
    )


def write_pyarrow(root: Path, episodes: list[dict[str, np.ndarray]]) -> None:
    path = root / "plain.parquet"
    root.mkdir(parents=True)
    writer = None
    for index, arrays in enumerate(episodes):
        table = episode_table(arrays, index)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="snappy")
        writer.write_table(table)
    assert writer is not None
    writer.close()


def write_pyarrow_per_episode(root: Path, episodes: list[dict[str, np.ndarray]]) -> None:
    """The floor of a checkpoint per episode: each episode's data file, and nothing else."""
    for index, arrays in enumerate(episodes):
        chunk_index, file_index = divmod(index, layout.DEFAULT_CHUNKS_SIZE)
        path = root / layout.DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(episode_table(arrays, index), path, compression="snappy")


def read_pyarrow(root: Path) -> int:
    table = pq.read_table(root / "plain.parquet", memory_map=True)
    action = table.column("action").combine_chunks().flatten().to_numpy().reshape(-1, ACTION_DIM)
    state = table.column("observation.state").combine_chunks().flatten().to_numpy().reshape(-1, STATE_DIM)
    return min(len(action), len(state))


def check_floor_writes_the_same(episodes: list[dict[str, np.ndarray]]) -> None:
    """Raise unless the floor writes as many data files as the every-episode writer, of the same columns and values."""
    with tempfile.TemporaryDirectory() as tmp:
        ours, floor = Path(tmp) / "ours", Path(tmp) / "floor"
        write_testbed(ours, episodes, 0.0)
        write_pyarrow_per_episode(floor, episodes)
        ours_files = sorted(p.relative_to(ours) for p in (ours / "data").rglob("*.parquet"))
        floor_files = sorted(p.relative_to(floor) for p in (floor / "data").rglob("*.parquet"))
        if ours_files != floor_files or len(ours_files) != EPISODES:
            raise RuntimeError(f"data files differ: {len(ours_files)} written by LeRobotWriter, {len(floor_files)} "
                               f"by the floor, {EPISODES} episodes")
        for name in ours_files:
            a, b = pq.read_table(ours / name), pq.read_table(floor / name)
            if a.schema.names != b.schema.names or a.num_rows != b.num_rows or not all(
                    a.column(k).type.equals(b.column(k).type) for k in a.schema.names):
                raise RuntimeError(f"{name}: columns differ: {a.schema} vs {b.schema}")
            for key in ("observation.state", "action", "index"):
                if not a.column(key).equals(b.column(key)):
                    raise RuntimeError(f"{name}: column {key} differs")


def best_rate(run: Callable[[Path], object], frames: int) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run(Path(tmp) / "ds")
            best = min(best, time.perf_counter() - start)
    return frames / best


def best_rates_alternating(runs: dict[str, Callable[[Path], object]], frames: int) -> dict[str, float]:
    """Best rate of each run, the runs taking turns so that a busy spell on the machine falls on all of them."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(REPEATS):
        for name, run in runs.items():
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                run(Path(tmp) / "ds")
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: frames / seconds for name, seconds in best.items()}


def best_read_rate(write: Callable[[Path], object], read: Callable[[Path], int], frames: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        write(root)
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            count = read(root)
            best = min(best, time.perf_counter() - start)
        if count != frames:
            raise RuntimeError(f"read {count} frames, expected {frames}")
    return frames / best


def main() -> None:
    episodes = make_episodes()
    frames = EPISODES * FRAMES_PER_EPISODE
    check_floor_writes_the_same(episodes)
    every_episode = best_rates_alternating({
        "testbed": lambda r: write_testbed(r, episodes, 0.0),
        "floor": lambda r: write_pyarrow_per_episode(r, episodes),
    }, frames)
    write = best_rate(lambda r: write_testbed(r, episodes), frames)
    pyarrow_write = best_rate(lambda r: write_pyarrow(r, episodes), frames)
    result = {
        "episodes": EPISODES,
        "frames": frames,
        "state_dim": STATE_DIM,
        "action_dim": ACTION_DIM,
        "write_frames_per_s": round(write),
        "read_frames_per_s": round(best_read_rate(lambda r: write_testbed(r, episodes), read_testbed, frames)),
        # as a recording run writes: every ended episode on disk at once (a checkpoint per episode)
        "write_every_episode_on_disk_frames_per_s": round(every_episode["testbed"]),
        "read_every_episode_on_disk_frames_per_s": round(
            best_read_rate(lambda r: write_testbed(r, episodes, 0.0), read_testbed, frames)),
        "pyarrow_write_frames_per_s": round(pyarrow_write),
        # the every-episode case's floor: a data file per episode, nothing else
        "pyarrow_write_per_episode_frames_per_s": round(every_episode["floor"]),
        "ratio_write_every_episode_on_disk_vs_floor": round(every_episode["testbed"] / every_episode["floor"], 3),
        "ratio_write_vs_floor": round(write / pyarrow_write, 3),
        "pyarrow_read_frames_per_s": round(best_read_rate(lambda r: write_pyarrow(r, episodes), read_pyarrow, frames)),
        "targets": {"write_frames_per_s": 50_000, "read_frames_per_s": 200_000},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
