"""Jobs parsed and planned in a child process: same plans as in-process, errors and deaths reported."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from testbed.control.job import Job, MotionBlock, parse_job_text, plan_job
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


def test_submitted_plans_come_back_through_futures_in_order(planner: JobPlanningProcess) -> None:
    job = planner.parse(JOB)
    far = planner.parse(JOB.replace("above_pick: {xyz: [0.45, 0.0125, 0.10], yaw: 0.0}",
                                    "above_pick: {joints: [0.0, 0.0, 9.0, 0.0]}"))
    start = np.array(SCARA.home, dtype=np.float64)
    futures = [planner.submit_plan(job, SCARA, start), planner.submit_plan(far, SCARA, start),
               planner.submit_plan(job, SCARA, start, speed_scale=0.5)]
    start += 1.0  # the requests keep the start pose they were given
    program = futures[0].result(30)
    here = plan_job(parse_job_text(JOB, source="job_yaml"), SCARA, SCARA.home).program
    for mine, theirs in zip(program.blocks, here.blocks, strict=True):
        if isinstance(mine, MotionBlock):
            assert isinstance(theirs, MotionBlock)
            np.testing.assert_array_equal(mine.rows, theirs.rows)
    with pytest.raises(JobError, match=r"pose 'above_pick' puts joints \[2\] outside their limits"):
        futures[1].result(30)
    slow = futures[2].result(30)  # the child goes on serving after a refusal
    slow_rows = sum(len(b.rows) for b in slow.blocks if isinstance(b, MotionBlock))
    assert slow_rows > sum(len(b.rows) for b in program.blocks if isinstance(b, MotionBlock))
    assert planner.requests == 3 + 2 and planner.pid not in (None, os.getpid())  # 2 parses, 3 plans


def parse_long_job(planner: JobPlanningProcess) -> Job:
    """A job that takes the child seconds to plan."""
    moves = "\n".join("  - MOVL pick V=300 PL=0\n  - MOVL above_pick V=300 PL=0" for _ in range(60))
    return planner.parse(JOB.split("program:")[0] + "program:\n" + moves + "\n")


def wait_until_busy(planner: JobPlanningProcess) -> None:
    """Until a request is with the child (10 s at most)."""
    deadline = time.monotonic() + 10
    while not planner.busy and time.monotonic() < deadline:
        time.sleep(0.001)


def test_a_submitted_plan_whose_child_dies_fails_with_the_reason(planner: JobPlanningProcess) -> None:
    future = planner.submit_plan(parse_long_job(planner), SCARA, SCARA.home)
    wait_until_busy(planner)
    pid = planner.pid
    assert pid is not None and planner.busy and not future.done()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ControllerError, match=rf"pid {pid}, exit code -9\) died while working on a plan request"):
        future.result(10)
    small = parse_job_text(JOB, source="job_yaml")
    assert planner.submit_plan(small, SCARA, SCARA.home).result(60).job == small  # a new child


def test_close_cancels_submitted_plans_not_started_and_ends_the_child() -> None:
    planner = JobPlanningProcess()
    job = planner.parse(JOB)
    pid = planner.pid
    futures = [planner.submit_plan(job, SCARA, SCARA.home) for _ in range(20)]
    planner.close()
    assert futures[0].done() and futures[-1].cancelled()  # the first was planned (or cancelled), the rest not
    assert all(f.done() for f in futures)
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not any(t.name == "job-planning" for t in threading.enumerate())


def test_the_submitting_thread_starts_no_real_time_child() -> None:
    # a run loop raises its thread to SCHED_FIFO; the thread serving submitted plans, and the child it
    # starts, must not inherit that (a child importing at real-time priority stalled the loop ~100 ms)
    if not hasattr(os, "sched_setscheduler"):
        pytest.skip("no sched_setscheduler here")
    seen: dict[str, int] = {}

    def loop_thread() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except OSError:
            return
        seen["loop"] = os.sched_getscheduler(0)
        with JobPlanningProcess() as planner:
            planner.submit_plan(planner.parse(JOB), SCARA, SCARA.home).result(60)
            (worker,) = [t for t in threading.enumerate() if t.name == "job-planning"]
            assert worker.native_id is not None and planner.pid is not None
            seen["worker"] = os.sched_getscheduler(worker.native_id)
            seen["child"] = os.sched_getscheduler(planner.pid)

    thread = threading.Thread(target=loop_thread)
    thread.start()
    thread.join(120)
    if "loop" not in seen:
        pytest.skip("this process may not use SCHED_FIFO")
    assert seen == {"loop": os.SCHED_FIFO, "worker": os.SCHED_OTHER, "child": os.SCHED_OTHER}
