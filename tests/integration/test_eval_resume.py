"""A real `testbed eval` killed (SIGKILL, SIGINT, a dead worker) and resumed: same results, nothing twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from testbed.eval.cpu import child_pids
from testbed.eval.journal import OUTCOME_COLUMNS, RESULTS_JSONL

REPO = Path(__file__).resolve().parents[2]
ARGS = ["eval", "launch/factory_cell.yaml", "policy.serve:=null", "policy.builtin:=expert", "--episodes", "3",
        "--sweep", "cell.conveyor.speed=0.1,0.2", "--workers", "2"]
IDS = [f"v{v}/default/{e:04d}" for v in (0, 1) for e in range(3)]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def start(runs: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "testbed.cli", *ARGS, "--runs-dir", str(runs)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_rows(runs: Path, proc: subprocess.Popen, at_least: int) -> Path:
    """The evaluation directory, once its journal holds ``at_least`` rows."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        journals = list(runs.glob(f"*/{RESULTS_JSONL}"))
        if journals and journals[0].read_text().count("\n") >= at_least:
            return journals[0].parent
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} rows journaled in time")


def outcomes(run_dir: Path) -> list[tuple]:
    return [tuple(r[c] for c in OUTCOME_COLUMNS) for r in pq.read_table(run_dir / "results.parquet").to_pylist()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("whole")
    done = cli(*ARGS, "--quiet", "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    return run_dir


def test_kill_9_then_resume_equals_an_uninterrupted_run(uninterrupted, tmp_path):
    proc = start(tmp_path)
    run_dir = wait_for_rows(tmp_path, proc, 2)
    workers = _worker_pids(proc.pid)
    proc.kill()
    proc.wait(30)
    # orphaned workers notice and end (after the episode in hand) instead of running on
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers and not any(_alive(pid) for pid in workers)
    journaled = [json.loads(line) for line in (run_dir / RESULTS_JSONL).read_text().splitlines()]
    assert 2 <= len(journaled) < len(IDS)
    assert not (run_dir / "results.parquet").exists()
    with (run_dir / RESULTS_JSONL).open("a") as f:  # as if killed in the middle of writing a row
        f.write('{"episode_id": "v1/default/00')
    done = cli("eval", "--resume", str(run_dir), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    assert [r["episode_id"] for r in rows] == IDS
    assert outcomes(run_dir) == outcomes(uninterrupted)
    # the journaled episodes were kept, not run again; the journal holds each episode once
    lines = [json.loads(line) for line in (run_dir / RESULTS_JSONL).read_text().splitlines()]
    assert sorted(r["episode_id"] for r in lines) == IDS
    assert lines[: len(journaled)] == journaled
    sessions = [json.loads(line) for line in (run_dir / "sessions.jsonl").read_text().splitlines()]
    assert [s["outcome"] for s in sessions] == ["completed"]  # the killed session could not note itself
    assert sessions[0]["episodes_run"] == len(IDS) - len(journaled)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sum(g["episodes"] for g in summary["groups"]) == len(IDS)


def test_ctrl_c_leaves_run_aborted_and_a_resumable_directory(uninterrupted, tmp_path):
    proc = start(tmp_path)
    run_dir = wait_for_rows(tmp_path, proc, 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"Resume with: testbed eval --resume {run_dir}" in err
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "run_aborted" and events[-1]["reason"].startswith("interrupted")
    kept = len((run_dir / RESULTS_JSONL).read_text().splitlines())
    assert kept >= 1
    done = cli("eval", "--resume", str(run_dir), "--workers", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{kept}/{len(IDS)} episode(s) journaled" in done.stdout
    assert outcomes(run_dir) == outcomes(uninterrupted)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["run_start", "run_aborted", "run_resumed", "run_end"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _worker_pids(pid: int) -> list[int]:
    workers = []
    for child in child_pids(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "multiprocessing" in cmdline and "resource_tracker" not in cmdline:
            workers.append(child)
    return workers


def test_a_killed_worker_is_named_and_the_journaled_episodes_are_kept(tmp_path):
    proc = start(tmp_path)
    run_dir = wait_for_rows(tmp_path, proc, 1)
    workers = _worker_pids(proc.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "died (killed by SIGKILL)" in err and f"(pid {workers[0]})" in err
    assert f"resume with: testbed eval --resume {run_dir}" in err
    rows = (run_dir / RESULTS_JSONL).read_text().splitlines()
    assert len(rows) >= 1
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "run_aborted" and "WorkerFailed" in events[-1]["reason"]
