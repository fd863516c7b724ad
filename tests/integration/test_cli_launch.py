import json
import signal
import subprocess
import sys
import time
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
    assert "lockstep (no wall-clock deadlines: jitter and missed cycles n/a)" in done.stdout
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


def test_runs_dir_naming_a_file_is_one_line_and_exit_2(tmp_path):
    not_a_dir = tmp_path / "runs"
    not_a_dir.write_text("")
    for command in (["launch", "launch/factory_cell.yaml"], ["eval", "launch/factory_cell.yaml", "--workers", "1"]):
        done = run_cli(*command, "episodes:=1", "--runs-dir", str(not_a_dir))
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == f"error: --runs-dir {not_a_dir}: is a file, expected a directory for run records"


def test_eval_with_no_workers_is_refused_before_it_starts(tmp_path):
    done = run_cli("eval", "launch/factory_cell.yaml", "--workers", "0", "--runs-dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == "error: --workers: expected a positive number of processes, got 0"
    assert not any(tmp_path.iterdir())


def test_a_launch_stopped_by_sigterm_ends_its_record_with_run_aborted(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "launch", "launch/factory_cell.yaml",
                             "episodes:=50", "--runs-dir", str(tmp_path)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        events_file = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = list(tmp_path.glob("*/events.jsonl"))
            if found and '"episode_end"' in found[0].read_text():
                events_file = found[0]
                break
            time.sleep(0.1)
        assert events_file is not None, "the run never finished an episode"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stderr
    assert stderr.strip() == "stopped: terminated by SIGTERM"
    last = json.loads(events_file.read_text().splitlines()[-1])
    assert last["kind"] == "run_aborted" and last["reason"] == "interrupted (terminated by SIGTERM)"
    assert (events_file.parent / "joint_states.parquet").is_file()
