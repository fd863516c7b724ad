"""`testbed datasets validate` and `info` on damaged LeRobot datasets: one clear line each, exit 2, no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.cli import main
from testbed.data.lerobot import read_dataset, validate_dataset
from testbed.errors import DatasetError

REPO = Path(__file__).resolve().parents[2]
DEMOS = REPO / "datasets/expert_demos"


def edit_info(**change: object) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / "meta/info.json"
        info = json.loads(path.read_text())
        info.update(change)
        path.write_text(json.dumps(info))

    return edit


def action_shape(shape: object) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / "meta/info.json"
        info = json.loads(path.read_text())
        info["features"]["action"]["shape"] = shape
        path.write_text(json.dumps(info))

    return edit


def truncate(relative: str, size: int) -> Callable[[Path], None]:
    def cut(root: Path) -> None:
        with (root / relative).open("rb+") as f:
            f.truncate(size)

    return cut


# damage, what both commands must say; info reads no frames, so a damaged data file is validate's alone
CASES = {
    "data_path_field": (edit_info(data_path="data/{chunk}/x.parquet"),
                        "meta/info.json data_path: template 'data/{chunk}/x.parquet' can only use {chunk_index}, "
                        "{file_index}", True),
    "data_path_number": (edit_info(data_path=7), "meta/info.json data_path: expected a path template string", True),
    "features_list": (edit_info(features=[]),
                      "meta/info.json features: expected an object of feature name -> {dtype, shape, names}, got list",
                      True),
    "feature_shape": (action_shape("seven"),
                      "meta/info.json features['action'].shape: expected a list of integers, got 'seven'", True),
    "fps_text": (edit_info(fps="twenty"), "meta/info.json fps: expected a number > 0 (frames per second), got 'twenty'",
                 True),
    "fps_zero": (edit_info(fps=0), "meta/info.json fps: expected a number > 0 (frames per second), got 0", True),
    "episodes_truncated": (truncate("meta/episodes/chunk-000/file-000.parquet", 500),
                           "meta/episodes/chunk-000/file-000.parquet: episode metadata file is not readable parquet",
                           True),
    "tasks_truncated": (truncate("meta/tasks.parquet", 100),
                        "meta/tasks.parquet: tasks file is not readable parquet", True),
    "data_truncated": (truncate("data/chunk-000/file-000.parquet", 1000),
                       "data/chunk-000/file-000.parquet: data file is not readable parquet", False),
}


@pytest.fixture
def demos(tmp_path: Path) -> Path:
    root = tmp_path / "demos"
    shutil.copytree(DEMOS, root)
    return root


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_dataset_is_one_clear_problem(demos: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    damage, message, info_fails = CASES[case]
    damage(demos)
    assert main(["datasets", "validate", str(demos)]) == 2
    err = capsys.readouterr().err
    assert message in err and "1 problem(s)" in err, err
    assert main(["datasets", "info", str(demos)]) == (2 if info_fails else 0)
    if info_fails:
        assert message in capsys.readouterr().err
        with pytest.raises(DatasetError, match="^" + str(demos)):
            read_dataset(demos)
    assert [p for p in validate_dataset(demos) if message in p]


@pytest.mark.parametrize("command", ["validate", "info"])
def test_cli_prints_no_traceback_for_a_bad_data_path(demos: Path, command: str) -> None:
    edit_info(data_path="data/{chunk}/x.parquet")(demos)
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "datasets", command, str(demos)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "meta/info.json data_path: template" in done.stderr, done.stderr



def drop_length_of_episode_1(root: Path) -> None:
    path = root / "meta/episodes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[1]["length"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


V21_CASES = {
    "v21_data_path": (edit_info(data_path="data/{chunk_index}.parquet"),
                      "meta/info.json data_path: template 'data/{chunk_index}.parquet' can only use {episode_chunk}, "
                      "{episode_index}"),
    "v21_length_missing": (drop_length_of_episode_1,
                           "meta/episodes.jsonl:2: column 'length': expected a number, got None"),
    "v21_task_text": (lambda root: (root / "meta/tasks.jsonl").write_text('{"task_index": 0}\n'),
                      "meta/tasks.jsonl:1: expected an object with task_index and task"),
    "v21_chunks_size": (edit_info(chunks_size="many"),
                        "meta/info.json chunks_size: expected a positive integer, got 'many'"),
}


@pytest.mark.parametrize("case", list(V21_CASES))
def test_damaged_v21_dataset_is_named(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    from test_lerobot_handmade import build_v21

    root = tmp_path / "v21"
    build_v21(root)
    damage, message = V21_CASES[case]
    damage(root)
    assert main(["datasets", "info", str(root)]) == 2
    assert message in capsys.readouterr().err
    assert [p for p in validate_dataset(root) if message in p]
