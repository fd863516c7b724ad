"""Jobs in a real-time run: planned in a child process while the robot holds, never on the loop's thread."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import testbed.control.job as job_module
import testbed.eval.runner as runner_module
from testbed.control.job import MotionBlock, parse_job_text
from testbed.eval.drivers import JobDriver
from testbed.eval.runner import run_scenario
from testbed.scenario import load

SCARA_JOB = Path("launch/scara_job.yaml")
# over the pick, over the bin, and again: each run is planned from where the last one ended (no part needed)
SHUTTLE = ("{name: shuttle, poses: {above_pick: {xyz: [0.45, 0.0125, 0.10], yaw: 0.0}, "
           "above_bin: {xyz: [-0.20, 0.42, 0.08], yaw: 0.0}}, "
           "program: ['MOVJ above_pick VJ=80 PL=0', 'MOVJ above_bin VJ=80 PL=0']}")


def _events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture
def plans_here(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads of this process that planned a job (``plan_job``) during the test."""
    threads: list[str] = []
    plan_job = job_module.plan_job

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return plan_job(*args, **kwargs)

    monkeypatch.setattr(job_module, "plan_job", spy)
    return threads


@pytest.fixture
def job_drivers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[JobDriver, set[int]]]:
    """Every JobDriver the runner opens, with the pids its planning child had while the run went on."""
    opened: list[tuple[JobDriver, set[int]]] = []

    class Watched(JobDriver):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.pids: set[int] = set()
            opened.append((self, self.pids))

        def cycle(self, *args: Any) -> None:
            super().cycle(*args)
            if self.planner is not None and self.planner.pid is not None:
                self.pids.add(self.planner.pid)

    monkeypatch.setattr(runner_module, "JobDriver", Watched)
    return opened


def test_real_time_jobs_are_planned_in_a_child_process_and_still_run(tmp_path, plans_here, job_drivers):
    overrides = ["episodes:=1", "sim.max_episode_s:=6", f"cell.robots[0].job:={SHUTTLE}"]
    run_scenario(load(SCARA_JOB, overrides), runs_dir=tmp_path)  # lockstep, for its plans
    loaded = load(SCARA_JOB, [*overrides, "sim.realtime:=true"])
    plans_here.clear()  # the loader plans each job once from home, before the run
    result = run_scenario(loaded, runs_dir=tmp_path)
    kinds = [e["kind"] for e in _events(result.run_dir)]
    assert result.metrics["control"]["mode"] == "realtime"
    # a second run, planned from where the first ended (plans take ~0.1-0.5 s here, runs ~1.8 s)
    assert kinds.count("job_start") >= 2 and kinds.count("job_end") >= 1 and "job_failed" not in kinds
    assert plans_here == []  # no thread of this process planned: not the loop's, not any other
    (lockstep, _), (driver, pids) = job_drivers
    assert pids and os.getpid() not in pids  # the plans came from a child process ...
    assert driver.planner is None  # ... which the run closed
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # ended and reaped
    # the same plans as the cycle makes in lockstep, from the same start poses
    assert len(driver.programs) >= 2 and set(driver.programs) <= set(lockstep.plans)
    for pose, program in driver.programs.items():
        here = lockstep.plans[pose].program
        assert [type(b) for b in program.blocks] == [type(b) for b in here.blocks]
        assert program.slowed == here.slowed
        for mine, theirs in zip(program.blocks, here.blocks, strict=True):
            if isinstance(mine, MotionBlock):
                np.testing.assert_array_equal(mine.rows, theirs.rows)


def test_lockstep_jobs_plan_in_the_cycle_without_a_child(tmp_path, plans_here, job_drivers):
    loaded = load(SCARA_JOB, ["episodes:=1", "sim.max_episode_s:=5", f"cell.robots[0].job:={SHUTTLE}"])
    plans_here.clear()
    result = run_scenario(loaded, runs_dir=tmp_path)
    kinds = [e["kind"] for e in _events(result.run_dir)]
    assert kinds.count("job_start") >= 2 and "job_failed" not in kinds
    # simulated time stands still while the cycle plans: the outcome depends on the launch file alone
    assert plans_here and set(plans_here) == {threading.current_thread().name}
    ((driver, pids),) = job_drivers
    assert driver.planner is None and not pids and driver.programs == {}


def test_a_real_time_job_that_cannot_be_planned_fails_with_the_reason(tmp_path, plans_here):
    loaded = load(SCARA_JOB, ["episodes:=1", "sim.realtime:=true", "sim.max_episode_s:=1.5"])
    # the loader refuses such a job (it plans every job once from home): swap it in after loading
    job = yaml.safe_load(SCARA_JOB.read_text())["cell"]["robots"][0]["job"]
    job["poses"]["pick"] = {"joints": [0.0, 0.0, 9.0, 0.0]}  # the quill 9 m down
    loaded = dataclasses.replace(loaded, jobs={0: parse_job_text(yaml.safe_dump(job), source="unreachable.yaml")})
    plans_here.clear()
    result = run_scenario(loaded, runs_dir=tmp_path)
    events = _events(result.run_dir)
    (failed,) = [e for e in events if e["kind"] == "job_failed"]
    assert "MOVL pick V=300 PL=0" in failed["reason"]
    assert "pose 'pick' puts joints [2] outside their limits" in failed["reason"]
    assert not [e for e in events if e["kind"] == "job_start"] and plans_here == []


def test_a_planning_child_that_dies_fails_the_job_with_the_reason(tmp_path, monkeypatch):
    killed: list[int] = []

    class Killing(JobDriver):
        def cycle(self, *args: Any) -> None:
            planner = self.planner
            if not killed and planner is not None and planner.busy and planner.pid is not None:
                killed.append(planner.pid)
                os.kill(planner.pid, signal.SIGKILL)  # while it plans the first run
            super().cycle(*args)

    monkeypatch.setattr(runner_module, "JobDriver", Killing)
    loaded = load(SCARA_JOB, ["episodes:=1", "sim.realtime:=true", "sim.max_episode_s:=2"])
    result = run_scenario(loaded, runs_dir=tmp_path)
    events = _events(result.run_dir)
    (failed,) = [e for e in events if e["kind"] == "job_failed"]
    assert killed and f"job planning process (pid {killed[0]}, exit code -9) died" in failed["reason"]
    assert not [e for e in events if e["kind"] == "job_start"]
