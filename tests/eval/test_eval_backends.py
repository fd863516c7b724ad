"""Evaluation backends: what a user sees when Ray is missing or unreachable, and the CPU reading's sources."""

import os
import subprocess
import sys

import pytest

from testbed.errors import FeatureUnavailable, ScenarioError
from testbed.eval.backends import import_ray
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
