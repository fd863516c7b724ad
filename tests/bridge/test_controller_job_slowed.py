"""A job sent to the ControllerService whose MOVL is slowed below its V says so in the loop's events."""

from __future__ import annotations

import time

import numpy as np

from testbed.bridge.controller_backend import ControlLoopBackend, control_job_loader
from testbed.control import ControlLoop
from testbed.control.kinematics import KinematicChain
from testbed.robots import load_robot

SIA10F = load_robot("sia10f")
DT = 1.0 / 240.0


def _sideways_job(program: list[str]) -> str:
    # the SIA10F's tool turned down, lines 0.5 m sideways: at V=1000 the line back from b to a is slowed
    # (tests/control/test_job_slowed.py plans the same poses); at V=500 every line fits
    chain = KinematicChain.from_urdf(SIA10F.urdf_path, SIA10F.tcp_link)
    x, _, z = chain.forward(np.asarray(SIA10F.home))[:3, 3]
    down = "rpy: [3.14159265, 0, 0]"
    lines = "".join(f"  - {line}\n" for line in program)
    return (f"name: sideways\nposes:\n  a: {{xyz: [{x:.4f}, -0.25, {z:.4f}], {down}}}\n"
            f"  b: {{xyz: [{x:.4f}, 0.25, {z:.4f}], {down}}}\nprogram:\n{lines}")


def _run_job(program: list[str]) -> list:
    loop = ControlLoop([SIA10F], DT, stream_timeout_s=0.5)
    loop.reset(SIA10F.home[None, :].copy())
    loader = control_job_loader(loop)
    events = []
    with ControlLoopBackend(loop, job_loader=loader) as backend:
        future = backend.send_job("sia10f", _sideways_job(program))
        cycle, deadline = 0, time.monotonic() + 60
        while not future.done() or backend.snapshot("sia10f").job:
            assert time.monotonic() < deadline, "the job did not start and end within 60 s"
            backend.tick(cycle * DT)
            events += loop.drain_events()
            cycle += 1
            if not future.done():
                time.sleep(0.001)  # planned in the child process meanwhile
        assert future.result(0) == "sideways"
    loader.close()
    return [e for e in events if e.kind == "move_slowed"]


def test_a_slowed_line_of_a_served_job_is_a_move_slowed_event_when_it_starts() -> None:
    (event,) = _run_job(["MOVL a V=500 PL=0", "MOVL b V=500 PL=0", "MOVL a V=1000 PL=0"])
    assert event.robot == 0
    detail = event.detail
    assert (detail["job"], detail["step"], detail["line"]) == ("sideways", 2, "MOVL a V=1000 PL=0")
    assert detail["factor"] > 1.0 and detail["speed_m_s"] == 1.0 and detail["reached_m_s"] < 1.0


def test_a_job_whose_lines_all_fit_reports_none() -> None:
    assert _run_job(["MOVL a V=500 PL=0", "MOVL b V=500 PL=0"]) == []
