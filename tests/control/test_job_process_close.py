"""close() ends the planning child now: a plan in progress fails as closed, a child slow to exit is killed quietly."""

from __future__ import annotations

import os
import signal

import pytest
from test_job_process import JOB, SCARA, parse_long_job, wait_until_busy

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
    future = planner.submit_plan(parse_long_job(planner), SCARA, SCARA.home)
    wait_until_busy(planner)
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
