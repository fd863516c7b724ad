import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BAD_FILES = {
    "misspelled_key": ("name: t\ncell:\n  robots:\n    - modle: gp7\n", "cell.robots[0].modle: unknown key"),
    "wrong_type": ("name: t\nepisodes: three\n", "episodes: expected a valid integer"),
    "missing_robot_model": ("name: t\ncell:\n  robots:\n    - model: mh6x\n", "unknown robot 'mh6x'"),
    "malformed_yaml": ("name: t\ncell: [\n  - a\n  b: c\n", "malformed YAML"),
}


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_validate_reports_one_clear_line_and_exit_2(tmp_path, case):
    text, expected = BAD_FILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    done = run_cli("validate", str(path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {path}:") and expected in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_validate_accepts_the_default_scenario():
    done = run_cli("validate", "launch/factory_cell.yaml", "episodes:=2")
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout


def test_launch_runs_and_prints_a_summary(tmp_path):
    done = run_cli("launch", "launch/factory_cell.yaml", "episodes:=1", "--runs-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "success rate" in done.stdout and "sim real-time factor" in done.stdout
    (run_dir,) = tmp_path.iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["episodes"] == 1 and metrics["scenario"] == "factory_cell"


def test_launch_with_a_bad_override_exits_2_without_running(tmp_path):
    done = run_cli("launch", "launch/factory_cell.yaml", "episodes:=0", "--runs-dir", str(tmp_path))
    assert done.returncode == 2
    assert "episodes: expected greater than or equal to 1" in done.stderr
    assert not any(tmp_path.iterdir())


def test_eval_runs_episodes_on_workers_and_prints_throughput(tmp_path):
    done = run_cli("eval", "launch/factory_cell.yaml", "episodes:=2", "policy.serve:=null", "policy.builtin:=expert",
                   "--workers", "2", "--runs-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "episodes/minute on 2 worker(s)" in done.stdout and "success rate" in done.stdout
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["evaluation"]["workers"] == 2
