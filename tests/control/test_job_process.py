"""Jobs parsed and planned in a child process: same plans as in-process, errors and deaths reported."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from testbed.control.job import MotionBlock, parse_job_text, plan_job
from testbed.control.job_process import JobPlanningProcess
from testbed.errors import ControllerError, JobError
from testbed.robots import load_robot

SCARA = load_robot("scara_t6")

JOB = """\
name: sort
poses:
  above_pick: {xyz: [0.45, 0.0125, 0.10], yaw: 0.0}
  pick: {xyz: [0.45, 0.0125, 0.018], yaw: 0.0}
  above_bin: {xyz: [-0.20, 0.42, 0.08], yaw: 0.0}
program:
  - MOVJ above_pick VJ=60 PL=3
  - MOVL pick V=300 PL=0
  - DOUT OT#(1) ON
  - MOVL above_pick V=500 PL=5
  - MOVJ above_bin VJ=60 PL=0
"""


@pytest.fixture
def planner() -> Iterator[JobPlanningProcess]:
    with JobPlanningProcess() as process:
        yield process


def _wait_dead(planner: JobPlanningProcess) -> None:
    deadline = time.monotonic() + 10
    while planner.alive and time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_planning_process_plans_what_plan_job_plans_here(planner: JobPlanningProcess) -> None:
    job = planner.parse(JOB)
    program = planner.plan(job, SCARA, SCARA.home)
    here = plan_job(parse_job_text(JOB, source="job_yaml"), SCARA, SCARA.home).program
    assert program.job == here.job and planner.pid is not None and planner.pid != os.getpid()
    assert [type(b) for b in program.blocks] == [type(b) for b in here.blocks]
    for mine, theirs in zip(program.blocks, here.blocks, strict=True):
        if isinstance(mine, MotionBlock):
            assert isinstance(theirs, MotionBlock)
            np.testing.assert_array_equal(mine.rows, theirs.rows)


def test_bad_jobs_are_refused_naming_the_line(planner: JobPlanningProcess) -> None:
    with pytest.raises(JobError, match="job_yaml: not valid YAML"):
        planner.parse("name: [x\n")
    with pytest.raises(JobError, match=r"job_yaml:8 program\[1\] 'MOVL pick V=300 PL=9'"):
        planner.parse(JOB.replace("PL=0", "PL=9", 1))
    far = planner.parse(JOB.replace("[0.45, 0.0125, 0.10]", "[2.0, 0.0, 0.10]"))
    with pytest.raises(JobError, match="pose 'above_pick' is unreachable"):
        planner.plan(far, SCARA, SCARA.home)
    assert planner.parse(JOB).name == "sort"  # the child goes on serving after refusals


def test_a_child_that_died_while_idle_is_reported_then_replaced(planner: JobPlanningProcess) -> None:
    job = planner.parse(JOB)
    pid = planner.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _wait_dead(planner)
    assert not planner.alive
    with pytest.raises(ControllerError, match=rf"pid {pid}, exit code -9\) had died while idle.*send the job again"):
        planner.plan(job, SCARA, SCARA.home)
    planner.plan(job, SCARA, SCARA.home)  # a new child
    assert planner.pid not in (None, pid)


def test_a_child_killed_while_planning_fails_that_plan(planner: JobPlanningProcess) -> None:
    # long enough to plan that the kill lands while the child works on it
    moves = "\n".join("  - MOVL pick V=300 PL=0\n  - MOVL above_pick V=300 PL=0" for _ in range(60))
    job = planner.parse(JOB.split("program:")[0] + "program:\n" + moves + "\n")
    outcome: list[BaseException] = []

    def plan() -> None:
        try:
            planner.plan(job, SCARA, SCARA.home)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=plan)
    thread.start()
    deadline = time.monotonic() + 10
    while not planner.busy and time.monotonic() < deadline:
        time.sleep(0.001)
    pid = planner.pid
    assert pid is not None and planner.busy
    os.kill(pid, signal.SIGKILL)
    thread.join(10)
    assert not thread.is_alive()
    (error,) = outcome
    assert isinstance(error, ControllerError)
    assert f"pid {pid}, exit code -9) died while working on a plan request" in str(error)


def test_close_ends_the_child() -> None:
    planner = JobPlanningProcess()
    planner.parse(JOB)
    pid = planner.pid
    assert pid is not None
    planner.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ended and reaped
    planner.close()  # closing twice is fine
