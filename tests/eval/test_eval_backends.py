"""Evaluation backends: what a user sees when Ray is missing or unreachable, and the CPU reading's sources."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.errors import FeatureUnavailable, ScenarioError, WorkerFailed
from testbed.eval.backends import LocalBackend, import_ray
from testbed.eval.cpu import child_pids, cpu_between, cpu_seconds, process_cpu_s
from testbed.eval.evaluation import Settings


def test_missing_ray_names_the_cluster_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
    with pytest.raises(FeatureUnavailable, match=r"--ray: Ray is not installed; .*pip install 'testbed\[cluster\]'"):
        import_ray()


def test_shared_servers_are_refused_for_a_remote_cluster():
    with pytest.raises(ScenarioError, match=r"--policy-servers shared: .*--ray 10.0.0.5:6379"):
        Settings(workers=2, ray="10.0.0.5:6379", policy_servers="shared")
    assert Settings(workers=2, ray="local", policy_servers="shared").policy_servers == "shared"


def test_cpu_reading_counts_a_busy_child_process():
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.6: pass\nprint('burnt', flush=True)\n"
                              "time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        start = cpu_seconds()
        assert child.pid in child_pids(os.getpid())
        assert child.stdout.readline().strip() == "burnt"  # the child burnt 0.6 s of CPU; this process waited
        spent = cpu_between(start, cpu_seconds())
        assert spent >= 0.55
        assert process_cpu_s(child.pid) >= 0.55
    finally:
        child.kill()
        child.wait()


def test_submitting_to_a_worker_killed_just_before_names_the_worker_and_how_it_ended():
    backend = LocalBackend(1)
    try:
        pid = int(re.fullmatch(r"worker 1/1 \(pid (\d+)\)", backend.describe(0)).group(1))
        os.kill(pid, signal.SIGKILL)
        _wait_until_dead(pid)  # dead, not yet reaped, and the backend not yet polled: as between two polls
        batch = {"batch": 3, "episodes": [0]}
        with pytest.raises(WorkerFailed, match=rf"evaluation worker 1/1 \(pid {pid}\) died \(killed by SIGKILL\) "
                                               r"before it could take batch 3"):
            backend.submit(0, batch)
    finally:
        backend.close(abort=True)


def _wait_until_dead(pid: int, timeout_s: float = 10.0) -> None:
    """Until ``pid`` is a zombie (its pipe end closed by the kernel), without reaping it."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + timeout_s
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, f"process {pid} did not die within {timeout_s} s of SIGKILL"
        time.sleep(0.01)
