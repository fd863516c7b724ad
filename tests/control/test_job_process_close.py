"""close() ends the planning child now: a plan in progress fails as closed, a child slow to exit is killed quietly."""

from __future__ import annotations

import os
import signal
import time

import pytest
from test_job_process import JOB, SCARA

from testbed.control.job_process import JobPlanningProcess
from testbed.errors import ControllerError


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_close_during_a_plan_fails_it_as_closed_and_ends_the_child() -> None:
    planner = JobPlanningProcess()
    moves = "\n".join("  - MOVL pick V=300 PL=0\n  - MOVL above_pick V=300 PL=0" for _ in range(60))
    job = planner.parse(JOB.split("program:")[0] + "program:\n" + moves + "\n")  # seconds to plan
    future = planner.submit_plan(job, SCARA, SCARA.home)
    deadline = time.monotonic() + 10
    while not planner.busy and time.monotonic() < deadline:
        time.sleep(0.001)
    pid = planner.pid
    assert pid is not None and planner.busy and not future.done()
    planner.close(timeout_s=30.0)  # returns without waiting for the plan
    with pytest.raises(ControllerError, match="closed while it planned this job"):
        future.result(0)
    assert _gone(pid)


def test_an_idle_child_that_does_not_exit_when_asked_is_killed_without_an_error() -> None:
    planner = JobPlanningProcess()
    planner.parse(JOB)
    pid = planner.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # as a child at nice 19 on a busy machine: it gets no CPU to exit
    try:
        planner.close(timeout_s=0.5)
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
    assert _gone(pid)
