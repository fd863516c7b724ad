"""Job mode: parsing and refusing bad jobs by line, planning, and running on the control loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testbed.control import ControlLoop, LifecycleState
from testbed.control.job import JobRunner, load_job, parse_job, plan_job
from testbed.control.kinematics import KinematicChain
from testbed.errors import JobError
from testbed.robots import load_robot

JOB = """\
name: scara_pick_place
poses:
  home: {joints: [0.0, 1.0, 0.0, 0.0]}
  above_pick: {xyz: [0.35, 0.25, 0.15], yaw: 0.0}
  pick: {xyz: [0.35, 0.25, 0.05], yaw: 0.0}
  via: {xyz: [0.45, 0.0, 0.15], yaw: 0.0}
  above_place: {xyz: [0.2, -0.4, 0.15], yaw: 0.5}
program:
  - MOVJ home VJ=50 PL=0
  - MOVJ above_pick VJ=80 PL=4
  - MOVL pick V=200 PL=0
  - DOUT OT#(1) ON
  - WAIT IN#(1)=ON T=1.0
  - MOVL above_pick V=300 PL=3
  - MOVC via above_place V=400 PL=0
  - DOUT OT#(1) OFF
  - TIMER T=0.2
  - MOVJ home VJ=100
"""


@pytest.fixture(scope="module")
def scara():
    return load_robot("scara_t6")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def start_loop(model) -> ControlLoop:
    loop = ControlLoop([model], 0.001)
    loop.reset(np.asarray(model.home, float)[None])
    loop.drain_events()
    return loop


@pytest.mark.parametrize(
    ("line", "bad", "message"),
    [
        (10, "  - MOVJ nowhere VJ=50", r"job.yaml:10 program\[1\] 'MOVJ nowhere VJ=50': unknown pose 'nowhere'"),
        (10, "  - MOVJ home VJ=150", r"job.yaml:10 program\[1\].*VJ=150 is out of range \(expected 0.01..100\)"),
        (10, "  - MOVL pick V=100 PL=9", r"job.yaml:10 program\[1\].*PL=9 is out of range"),
        (10, "  - MOVL pick", r"job.yaml:10 program\[1\].*MOVL needs V="),
        (10, "  - MOVL pick V=100 VJ=3", r"job.yaml:10 program\[1\].*unknown parameter\(s\) \['VJ'\]"),
        (10, "  - JUMP home", r"job.yaml:10 program\[1\] 'JUMP home': unknown instruction"),
        (10, "  - MOVC via V=100", r"job.yaml:10 program\[1\].*MOVC takes 2 pose names"),
        (10, "  - WAIT IN#(2)=MAYBE", r"job.yaml:10 program\[1\].*unknown instruction"),
    ],
)
def test_bad_line_is_refused_naming_file_line_and_step(tmp_path: Path, line: int, bad: str, message: str) -> None:
    lines = JOB.splitlines()
    lines[line - 1] = bad
    with pytest.raises(JobError, match=message):
        load_job(write(tmp_path, "\n".join(lines) + "\n"))


def test_bad_pose_is_refused_naming_it() -> None:
    with pytest.raises(JobError, match=r"launch/x.yaml poses.p: 'xyz' must be a list of 3 numbers"):
        parse_job({"poses": {"p": {"xyz": [1, 2]}}, "program": ["TIMER T=1"]}, source="launch/x.yaml")


def test_unreachable_pose_is_refused_before_motion(tmp_path: Path, scara) -> None:
    text = JOB.replace("above_place: {xyz: [0.2, -0.4, 0.15]", "above_place: {xyz: [0.9, -0.4, 0.15]")
    job = load_job(write(tmp_path, text))
    loop = start_loop(scara)
    runner = JobRunner(job, scara, loop, 0)
    before = loop.setpoint.copy()
    expected = r"job.yaml:15 program\[6\] 'MOVC via above_place V=400 PL=0': pose 'above_place' is unreachable"
    with pytest.raises(JobError, match=expected):
        runner.start(0.0)
    loop.tick(0.0)
    assert np.array_equal(loop.setpoint, before)


def test_linear_speed_above_tcp_limit_is_refused(tmp_path: Path, scara) -> None:
    job = load_job(write(tmp_path, JOB.replace("MOVL pick V=200", "MOVL pick V=5000")))
    with pytest.raises(JobError, match=r"program\[2\].*V=5000 mm/s exceeds the TCP speed limit 2000 mm/s"):
        plan_job(job, scara, scara.home)


def test_job_runs_to_the_end_with_gripper_io(tmp_path: Path, scara) -> None:
    job = load_job(write(tmp_path, JOB))
    loop = start_loop(scara)
    runner = JobRunner(job, scara, loop, 0)
    runner.start(0.0)
    chain = KinematicChain.from_urdf(scara.urdf_path, scara.tcp_link)
    gripper = []
    pick_xyz = None
    out = None
    for k in range(20000):
        t = k * 0.001
        out = runner.tick(t)
        if out.gripper is not None:
            gripper.append(out.gripper)
            if out.gripper:
                pick_xyz = chain.forward(loop.setpoint[0, :4])[:3, 3]
                runner.set_input(1, True)  # the part is gripped
        loop.tick(t, loop.setpoint)
        if out.done:
            break
    assert out is not None and out.done and out.failed is None and out.step == len(job.steps)
    assert gripper == [True, False]
    assert pick_xyz is not None and np.allclose(pick_xyz, [0.35, 0.25, 0.05], atol=1e-3)
    for _ in range(500):
        loop.tick(t, loop.setpoint)
    assert np.allclose(loop.setpoint[0, :4], [0.0, 1.0, 0.0, 0.0], atol=1e-6)
    assert loop.state(0) is LifecycleState.ACTIVE


def test_wait_timeout_stops_the_job_and_holds(tmp_path: Path, scara) -> None:
    job = load_job(write(tmp_path, JOB))
    loop = start_loop(scara)
    runner = JobRunner(job, scara, loop, 0)
    runner.start(0.0)
    for k in range(5000):
        out = runner.tick(k * 0.001)
        loop.tick(k * 0.001, loop.setpoint)
        if out.done:
            break
    assert out.failed is not None and "job.yaml:13 program[4] 'WAIT IN#(1)=ON T=1.0': timed out" in out.failed
    held = loop.setpoint.copy()
    for k in range(5000, 5500):
        loop.tick(k * 0.001, loop.setpoint)
    assert np.allclose(loop.setpoint, held)


def test_blending_shortens_the_cycle(scara) -> None:
    def duration(pl: int) -> float:
        job = parse_job(
            {
                "poses": {"a": {"joints": [0.5, 1.0, 0.05, 0.0]}, "b": {"joints": [1.0, 0.5, 0.1, 0.5]}},
                "program": [f"MOVJ a VJ=50 PL={pl}", "MOVJ b VJ=50 PL=0"],
            }
        )
        loop = start_loop(scara)
        runner = JobRunner(job, scara, loop, 0)
        runner.start(0.0)
        for k in range(10000):
            if runner.tick(k * 0.001).done:
                return k * 0.001
            loop.tick(k * 0.001)
        raise AssertionError("job did not finish")

    assert duration(8) < duration(0) - 0.05


def test_circular_move_passes_through_via_point(scara) -> None:
    job = parse_job(
        {
            "poses": {
                "start": {"xyz": [0.4, -0.1, 0.1], "yaw": 0.0},
                "via": {"xyz": [0.5, 0.0, 0.1], "yaw": 0.0},
                "end": {"xyz": [0.4, 0.1, 0.1], "yaw": 0.0},
            },
            "program": ["MOVL start V=500", "MOVC via end V=100"],
        }
    )
    plan = plan_job(job, scara, scara.home)
    chain = KinematicChain.from_urdf(scara.urdf_path, scara.tcp_link)
    (group,) = plan.blocks
    arc = group[1].motion
    tips = np.array([chain.forward(arc.sample(t)[0])[:3, 3] for t in np.linspace(0, arc.duration_s, 200)])
    assert np.min(np.linalg.norm(tips - [0.5, 0.0, 0.1], axis=1)) < 2e-3
    assert np.allclose(np.linalg.norm(tips[:, :2] - [0.4, 0.0], axis=1), 0.1, atol=1e-3)


def test_a_program_planned_elsewhere_runs_like_a_local_plan(tmp_path: Path, scara) -> None:
    job = load_job(write(tmp_path, JOB.replace("  - WAIT IN#(1)=ON T=1.0\n", "")))
    traces = []
    for planned_elsewhere in (False, True):
        loop = start_loop(scara)
        runner = JobRunner(job, scara, loop, 0)
        if planned_elsewhere:
            runner.start_program(0.0, plan_job(job, scara, loop.setpoint[0, :4]).program)
        else:
            runner.start(0.0)
        trace = []
        for k in range(6000):
            if runner.tick(k * 0.001).done:
                break
            trace.append(loop.tick(k * 0.001).copy())
        traces.append(np.array(trace))
    np.testing.assert_array_equal(traces[0], traces[1])


def test_a_program_for_another_robot_is_refused(scara) -> None:
    job = parse_job({"poses": {"a": {"joints": [0.5, 1.0, 0.05, 0.0]}}, "program": ["MOVJ a VJ=50"]})
    program = plan_job(job, scara, scara.home).program
    loop = ControlLoop([load_robot("gp7")], 0.001)
    loop.reset(np.asarray(load_robot("gp7").home)[None])
    with pytest.raises(JobError, match="the program moves 4 joints, robot 0 has 6"):
        JobRunner(job, load_robot("gp7"), loop, 0).start_program(0.0, program)
