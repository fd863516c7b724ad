"""A checkpoint per episode over many episodes: the dataset stays valid and whole, each checkpoint's writing bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from testbed.data.lerobot import FeatureSpec, LeRobotWriter, read_dataset, validate_dataset
from testbed.data.lerobot import writer as writer_module
from testbed.data.lerobot.stats import columns_stats, vector_stats

NAMES = ["a", "b", "c"]
FEATURES = {"observation.state": FeatureSpec("float32", (3,), NAMES), "action": FeatureSpec("float32", (2,), NAMES[:2])}
EPISODES = 300
REPO = Path(__file__).resolve().parents[2]


def record(root: Path, checkpoint_s: float, *, late_extra: bool = True,
           after_episode: Callable[[int], None] | None = None) -> None:
    """300 episodes of 1-6 frames over 3 tasks; ``success`` from episode 0, ``score`` (if ``late_extra``) from 150."""
    rng = np.random.default_rng(7)
    with LeRobotWriter(root, fps=10, robot_type="r", features=FEATURES, chunks_size=3,
                       checkpoint_s=checkpoint_s) as writer:
        for e in range(EPISODES):
            writer.start_episode(f"task {e % 3}")
            for k in range(1 + e % 6):
                writer.add_frame({"observation.state": rng.normal(size=3).astype(np.float32),
                                  "action": rng.normal(size=2).astype(np.float32)}, k / 10)
            extra: dict[str, object] = {"success": e % 4 == 0}
            if late_extra and e >= 150:
                extra["score"] = e / 7
            writer.end_episode(extra)
            if after_episode is not None:
                after_episode(e)


def episodes_files(root: Path) -> list[Path]:
    return sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))


def test_a_dataset_checkpointed_after_each_of_300_episodes_equals_one_written_at_close(tmp_path: Path) -> None:
    every, once = tmp_path / "every", tmp_path / "once"
    problems: dict[int, list[str]] = {}

    def check(e: int) -> None:  # around the metadata files' rolls (64 rows each) and the late column at 150
        if e in (0, 63, 64, 65, 149, 150, 151, 200):
            problems[e] = validate_dataset(every)
            assert read_dataset(every).num_episodes == e + 1

    record(every, 0.0, after_episode=check)
    record(once, 1e9)
    assert problems == {e: [] for e in (0, 63, 64, 65, 149, 150, 151, 200)}
    assert validate_dataset(every) == [] and validate_dataset(once) == []
    a, b = read_dataset(every), read_dataset(once)
    assert a.num_episodes == b.num_episodes == EPISODES and a.num_frames == b.num_frames
    assert a.info == b.info and a.tasks == b.tasks
    assert json.loads((every / "meta/stats.json").read_text()) == json.loads((once / "meta/stats.json").read_text())
    for x, y in zip(a.episodes, b.episodes, strict=True):
        assert (x.episode_index, x.length, x.tasks, x.from_index, x.to_index, x.extra) == (
            y.episode_index, y.length, y.tasks, y.from_index, y.to_index, y.extra)
        assert x.stats.keys() == y.stats.keys()
        for key in x.stats:
            for name, value in x.stats[key].items():
                assert value.tobytes() == y.stats[key][name].tobytes(), (x.episode_index, key, name)
        ex, ey = a.episode(x.episode_index), b.episode(y.episode_index)
        for key in ex:
            np.testing.assert_array_equal(ex[key], ey[key])
    assert [ep.extra.get("score") for ep in a.episodes[148:152]] == [None, None, 150 / 7, 151 / 7]
    # the metadata is spread over files of at most 64 episodes, all of one schema, each row naming its own file
    files = episodes_files(every)
    assert len(files) == -(-EPISODES // writer_module._EPISODES_FILE_ROWS) and len(episodes_files(once)) == 1
    schemas = {pq.read_schema(path) for path in files}
    assert len(schemas) == 1
    for path in files:
        table = pq.read_table(path)
        assert table.num_rows <= writer_module._EPISODES_FILE_ROWS
        located = set(zip(table.column("meta/episodes/chunk_index").to_pylist(),
                          table.column("meta/episodes/file_index").to_pylist(), strict=True))
        assert {f"meta/episodes/chunk-{c:03d}/file-{f:03d}.parquet" for c, f in located} == {
            str(path.relative_to(every))}


def test_a_checkpoint_rewrites_only_the_last_episodes_file_and_a_bounded_amount_of_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ds"
    writes: list[list[tuple[str, int]]] = [[]]  # per checkpoint: (path, bytes) of every file replaced
    real_write = writer_module._FileBatch.write

    def counting_write(batch: writer_module._FileBatch, path: Path, fill: Callable[[pa.NativeFile], object]) -> int:
        size = real_write(batch, path, fill)
        writes[-1].append((str(path.relative_to(root)), size))
        return size

    inodes: list[dict[str, int]] = []

    def after_episode(e: int) -> None:
        writes.append([])
        inodes.append({str(p.relative_to(root)): p.stat().st_ino for p in episodes_files(root)})

    monkeypatch.setattr(writer_module._FileBatch, "write", counting_write)
    record(root, 0.0, late_extra=False, after_episode=after_episode)
    checkpoints = writes[:EPISODES]  # the last is close()'s: nothing left to write
    assert writes[EPISODES] == []
    data_files = set()
    for e, replaced in enumerate(checkpoints):
        names = [name for name, _ in replaced]
        data = [name for name in names if name.startswith("data/")]
        episodes = [name for name in names if name.startswith("meta/episodes/")]
        assert len(data) == 1 and data[0] not in data_files, (e, names)  # a new data file, earlier ones untouched
        data_files.add(data[0])
        assert episodes == [max(inodes[e])], (e, names)  # the last metadata file, and only it
        expected_rest = ["meta/stats.json", "meta/info.json"]
        if e < 3:
            expected_rest.insert(0, "meta/tasks.parquet")  # a new task
        assert [n for n in names if n not in data and n not in episodes] == expected_rest, (e, names)
        if e:  # the files before the last keep their inode: never replaced again
            kept = {name: ino for name, ino in inodes[e - 1].items() if name != max(inodes[e - 1])}
            assert {name: inodes[e][name] for name in kept} == kept, e
    meta_bytes = [sum(size for name, size in replaced if name.startswith("meta/")) for replaced in checkpoints]
    # bounded: the last 100 checkpoints write about as much metadata as the first 100 (a file of 64 rows at most;
    # larger numbers take a few more bytes), where rewriting every row so far would write twice as much
    assert max(meta_bytes[-100:]) <= 1.25 * max(meta_bytes[:100])
    assert len(episodes_files(root)) == 5 and validate_dataset(root) == []


@settings(max_examples=60, deadline=None)
@given(
    frames=st.integers(1, 40),
    widths=st.lists(st.integers(0, 5), min_size=1, max_size=5),  # 0: a scalar column
    data=st.data(),
)
def test_columns_stats_equal_vector_stats_bit_for_bit(frames: int, widths: list[int], data: st.DataObject) -> None:
    columns = {}
    for i, width in enumerate(widths):
        dtype = data.draw(st.sampled_from([np.float32, np.float64, np.int64]))
        elements = (st.integers(-10**6, 10**6) if dtype is np.int64
                    else st.floats(-1e6, 1e6, width=32 if dtype is np.float32 else 64))
        columns[f"c{i}"] = data.draw(hnp.arrays(dtype, (frames, width) if width else (frames,), elements=elements))
    together = columns_stats(columns)
    assert together.keys() == columns.keys()
    for key, values in columns.items():
        alone = vector_stats(values)
        assert together[key].keys() == alone.keys()
        for name, value in alone.items():
            assert (value.dtype, value.shape) == (together[key][name].dtype, together[key][name].shape), (key, name)
            assert value.tobytes() == together[key][name].tobytes(), (key, name)


# ends episodes 0..N-1 (episode e: 2 frames of value e), then dies inside episode N's checkpoint, once all of
# its files are written and synced but before the first is renamed into place
_DIE_BEFORE_RENAMING = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import numpy as np
    from testbed.data.lerobot import FeatureSpec, LeRobotWriter
    from testbed.data.lerobot import writer as writer_module

    n = int(sys.argv[2])
    w = LeRobotWriter(Path(sys.argv[1]), fps=10, robot_type="r", checkpoint_s=0.0,
                      features={"action": FeatureSpec("float32", (2,), ["a", "b"])})
    for e in range(n + 1):
        if e == n:
            def die(batch):
                for tmp, _ in batch._staged:
                    writer_module._sync(tmp)
                print("staged", len(batch._staged), flush=True)
                os._exit(1)
            writer_module._FileBatch.commit = die
        w.start_episode("sort")
        for k in range(2):
            w.add_frame({"action": np.full(2, e, np.float32)}, k / 10)
        w.end_episode()
    """
)


@pytest.mark.parametrize("ended", [30, 64])  # 64: the checkpoint that starts a second episodes file
def test_a_recorder_killed_between_writing_and_renaming_a_checkpoint_leaves_the_previous_one(
    tmp_path: Path, ended: int
) -> None:
    root = tmp_path / "ds"
    done = subprocess.run([sys.executable, "-c", _DIE_BEFORE_RENAMING, str(root), str(ended)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 1 and "staged 4" in done.stdout, done.stderr[-2000:]  # data, episodes, stats, info
    assert validate_dataset(root) == []
    ds = read_dataset(root)
    assert ds.num_episodes == ended and ds.num_frames == 2 * ended
    for e in (0, ended - 1):
        np.testing.assert_array_equal(ds.episode(e)["action"], np.full((2, 2), e, np.float32))
    hidden = sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp"))
    last_meta = "meta/episodes/chunk-000/.file-001.parquet.tmp" if ended == 64 else (
        "meta/episodes/chunk-000/.file-000.parquet.tmp")
    assert hidden == sorted([f"data/chunk-000/.file-{ended:03d}.parquet.tmp", last_meta,
                             "meta/.info.json.tmp", "meta/.stats.json.tmp"])
