"""Frames/s writing and reading state+action episodes in the LeRobot format.

Prints one JSON object: ``write_frames_per_s`` (LeRobotWriter with its default
checkpoint window, one add_frame call per frame, metadata and stats included),
``write_every_episode_on_disk_frames_per_s`` (a checkpoint at every episode's
end, as a recording run writes, and ``read_every_episode_on_disk_frames_per_s``
reading that dataset back), ``read_frames_per_s``
(read_dataset then every episode as numpy arrays), and the floor: plain
pyarrow writing and reading the same arrays (``pyarrow_write_frames_per_s``,
``pyarrow_read_frames_per_s``). Best of three runs each.
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

from testbed.data.lerobot import FeatureSpec, LeRobotWriter, read_dataset
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


def write_pyarrow(root: Path, episodes: list[dict[str, np.ndarray]]) -> None:
    path = root / "plain.parquet"
    root.mkdir(parents=True)
    writer = None
    start = 0
    for index, arrays in enumerate(episodes):
        n = FRAMES_PER_EPISODE
        table = pa.table(
            {
                "observation.state": pa.FixedSizeListArray.from_arrays(
                    pa.array(arrays["observation.state"].reshape(-1)), STATE_DIM
                ),
                "action": pa.FixedSizeListArray.from_arrays(pa.array(arrays["action"].reshape(-1)), ACTION_DIM),
                "timestamp": pa.array(np.arange(n, dtype=np.float32) * 0.02),
                "frame_index": pa.array(np.arange(n, dtype=np.int64)),
                "episode_index": pa.array(np.full(n, index, dtype=np.int64)),
                "index": pa.array(np.arange(start, start + n, dtype=np.int64)),
                "task_index": pa.array(np.zeros(n, dtype=np.int64)),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="snappy")
        writer.write_table(table)
        start += n
    assert writer is not None
    writer.close()


def read_pyarrow(root: Path) -> int:
    table = pq.read_table(root / "plain.parquet", memory_map=True)
    action = table.column("action").combine_chunks().flatten().to_numpy().reshape(-1, ACTION_DIM)
    state = table.column("observation.state").combine_chunks().flatten().to_numpy().reshape(-1, STATE_DIM)
    return min(len(action), len(state))


def best_rate(run: Callable[[Path], object], frames: int) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run(Path(tmp) / "ds")
            best = min(best, time.perf_counter() - start)
    return frames / best


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
    result = {
        "episodes": EPISODES,
        "frames": frames,
        "state_dim": STATE_DIM,
        "action_dim": ACTION_DIM,
        "write_frames_per_s": round(best_rate(lambda r: write_testbed(r, episodes), frames)),
        "read_frames_per_s": round(best_read_rate(lambda r: write_testbed(r, episodes), read_testbed, frames)),
        # as a recording run writes: every ended episode on disk at once (a checkpoint per episode)
        "write_every_episode_on_disk_frames_per_s": round(best_rate(lambda r: write_testbed(r, episodes, 0.0), frames)),
        "read_every_episode_on_disk_frames_per_s": round(
            best_read_rate(lambda r: write_testbed(r, episodes, 0.0), read_testbed, frames)),
        "pyarrow_write_frames_per_s": round(best_rate(lambda r: write_pyarrow(r, episodes), frames)),
        "pyarrow_read_frames_per_s": round(best_read_rate(lambda r: write_pyarrow(r, episodes), read_pyarrow, frames)),
        "targets": {"write_frames_per_s": 50_000, "read_frames_per_s": 200_000},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
