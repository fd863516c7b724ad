"""Stopping evaluation backends: an aborted evaluation's worker runs end with run_aborted; Ray calls have deadlines."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from testbed.errors import WorkerFailed

REPO = Path(__file__).resolve().parents[2]
LAUNCH = "launch/factory_cell.yaml"


def start_eval(runs: Path, *flags: str) -> subprocess.Popen:
    """`testbed eval` as a process of its own, long enough (16 episodes) to be stopped mid-run."""
    return subprocess.Popen([sys.executable, "-m", "testbed.cli", "eval", LAUNCH, "--episodes", "16", "--workers", "2",
                             "--runs-dir", str(runs), *flags], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_running_workers(proc: subprocess.Popen, runs: Path, count: int, timeout_s: float) -> list[Path]:
    """The worker run folders once ``count`` of them are inside an episode (an episode_start is recorded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the evaluation ended before it was stopped: {proc.communicate()[1][-3000:]}"
        streams = sorted(runs.glob("*/workers/*/events.jsonl"))
        started = [s for s in streams if '"episode_start"' in s.read_text()]
        if len(started) >= count:
            return [s.parent for s in streams]
        time.sleep(0.1)
    raise AssertionError(f"{count} worker(s) did not start an episode within {timeout_s} s")


def stop_and_check(proc: subprocess.Popen, runs: Path, workers: int, start_timeout_s: float) -> None:
    """SIGTERM the orchestrator mid-run; then every run folder, its own and each worker's, ends with run_aborted."""
    try:
        wait_for_running_workers(proc, runs, workers, start_timeout_s)
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, stderr[-3000:]
    (evaluation,) = runs.iterdir()
    assert events(evaluation / "events.jsonl")[-1] | {"wall": None} == {
        "t": 0.0, "wall": None, "episode": None, "kind": "run_aborted", "robot": None,
        "reason": "interrupted (terminated by SIGTERM)"}
    streams = sorted((evaluation / "workers").glob("*/events.jsonl"))
    assert len(streams) >= workers
    for stream in streams:
        last = events(stream)[-1]
        assert last["kind"] == "run_aborted", f"{stream} ends with {last}"
        assert last["reason"].startswith("interrupted ("), last


def test_an_aborted_evaluation_ends_every_local_worker_run_with_run_aborted(tmp_path):
    stop_and_check(start_eval(tmp_path), tmp_path, 2, start_timeout_s=120)
    for stream in (tmp_path.glob("*/workers/*/events.jsonl")):
        assert events(stream)[-1]["reason"] == "interrupted (terminated by SIGTERM)"


def test_an_aborted_evaluation_ends_every_ray_worker_run_with_run_aborted(tmp_path):
    stop_and_check(start_eval(tmp_path, "--ray", "local"), tmp_path, 2, start_timeout_s=180)
    for stream in (tmp_path.glob("*/workers/*/events.jsonl")):
        assert events(stream)[-1]["reason"] == "interrupted (stopped by the evaluation)"


def test_ray_poll_fails_clearly_when_the_queue_actor_stops_answering(monkeypatch):
    from testbed.eval import backends

    monkeypatch.setattr(backends, "RAY_CALL_TIMEOUT_S", 2.0)  # the deadline itself, short for the test
    backend = backends.RayBackend(1, "local")
    ray, queue = backend._ray, backend._queue.actor
    pid = ray.get(queue.__ray_call__.remote(lambda _actor: os.getpid()), timeout=60)
    outcome: list[BaseException | list] = []

    def poll() -> None:
        try:
            outcome.append(backend.poll(0.5))
        except BaseException as exc:  # what poll raised is the result under test
            outcome.append(exc)

    os.kill(pid, signal.SIGSTOP)  # as a stalled node holding the queue actor
    try:
        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        thread.join(60)  # a hang check only: the deadline is 2 s
        assert outcome, "poll(0.5) did not return within 60 s while the queue actor was stopped"
    finally:
        os.kill(pid, signal.SIGCONT)
        thread.join(30)
        backend.close(abort=True)
    (raised,) = outcome
    assert isinstance(raised, WorkerFailed), raised
    assert str(raised) == ("the Ray queue actor that carries the workers' result rows did not answer within 2 s; "
                           "the rows it held are lost with it")
