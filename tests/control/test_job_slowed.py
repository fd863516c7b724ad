"""A MOVL/MOVC slowed below its V to keep the joints within their limits is planned with few IK passes and reported."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import testbed.control.job as job_module
from testbed.control import ControlLoop
from testbed.control.job import MAX_SLOWDOWN, ROW_DT_S, JobRunner, MotionBlock, parse_job_text, plan_job
from testbed.control.job_process import JobPlanningProcess
from testbed.control.kinematics import KinematicChain
from testbed.control.trajectory import line_path, path_profile, peak_tcp_speed, sample_rows
from testbed.robots import load_robot

# the SIA10F's tool turned down, lines 0.5 m sideways: at V=1000 joint_3 would accelerate ~1.28x its limit
# back from b to a; at V=500 every line fits (tests/control/test_job_path_limits.py plans the same poses)
PROGRAM = ["MOVL a V=500 PL=0", "MOVL b V=500 PL=8", "MOVL a V=1000 PL=0"]


@pytest.fixture(scope="module")
def sia10f() -> tuple[Any, KinematicChain]:
    model = load_robot("sia10f")
    return model, KinematicChain.from_urdf(model.urdf_path, model.tcp_link)


def sia_job(chain: KinematicChain, model: Any, program: list[str]):
    x, _, z = chain.forward(np.asarray(model.home))[:3, 3]
    down = "rpy: [3.14159265, 0, 0]"
    lines = "".join(f"  - {line}\n" for line in program)
    return parse_job_text(f"name: sideways\nposes:\n  a: {{xyz: [{x:.4f}, -0.25, {z:.4f}], {down}}}\n"
                          f"  b: {{xyz: [{x:.4f}, 0.25, {z:.4f}], {down}}}\nprogram:\n{lines}", source="sideways.yaml")


@pytest.fixture(scope="module")
def slowed_plan(sia10f):
    model, chain = sia10f
    passes: list[tuple[int, float]] = []
    follow = job_module._follow_path

    def counted(step, *args):
        passes.append((step.index, args[-1]))
        return follow(step, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(job_module, "_follow_path", counted)
        plan = plan_job(sia_job(chain, model, PROGRAM), model, np.asarray(model.home), chain=chain)
    return plan, passes


def test_the_plan_names_the_slowed_line_its_factor_and_the_speed_asked_and_reached(sia10f, slowed_plan):
    _, chain = sia10f
    plan, _ = slowed_plan
    (moved,) = plan.program.slowed
    assert (moved.step.index, moved.step.text, moved.step.where) == (2, "MOVL a V=1000 PL=0", "sideways.yaml:8")
    assert 1.0 < moved.factor <= MAX_SLOWDOWN and moved.speed_m_s == 1.0
    # the factor is the move's duration over its profile's at V; on a line the TCP cruises at V / factor
    (group,) = [b for b in plan.blocks if isinstance(b, list)]
    segment = group[2]
    path = line_path(chain.forward(np.asarray(segment.motion.start)), plan.job.poses["a"].matrix())
    assert moved.factor == pytest.approx(segment.motion.duration_s / path_profile(path, 1.0, 2.0)[0], rel=1e-12)
    assert moved.reached_m_s == pytest.approx(1.0 / moved.factor, rel=0.01)
    assert moved.reached_m_s == peak_tcp_speed(chain, sample_rows(segment.motion, ROW_DT_S), ROW_DT_S)
    # blended after 'MOVL b ... PL=8': it starts inside its block, where its segment starts
    (block,) = [b for b in plan.program.blocks if isinstance(b, MotionBlock)]
    assert block.slowed == (moved,)
    first_two = group[0].motion.duration_s + group[1].motion.duration_s
    assert group[0].motion.duration_s < moved.offset_s < first_two


def test_a_slowed_line_is_found_by_one_measuring_pass_and_one_checking_pass(sia10f, slowed_plan):
    model, _ = sia10f
    plan, passes = slowed_plan
    ks = [k for index, k in passes if index == 2]
    # velocity ~1/k, acceleration ~1/k^2: the pass at V gives the slowdown, one more pass confirms it
    assert ks[0] == 1.0 and len(ks) == 2 and ks[1] == pytest.approx(plan.program.slowed[0].factor, rel=1e-9)
    rows = plan.program.blocks[0].rows  # type: ignore[union-attr]
    padded = np.vstack([rows[:1], rows, rows[-1:]])
    assert np.all(np.max(np.abs(np.diff(padded, axis=0)), axis=0) / ROW_DT_S <= model.velocity * (1 + 1e-9))
    assert np.all(np.max(np.abs(np.diff(padded, 2, axis=0)), axis=0) / ROW_DT_S**2 <= model.acceleration * (1 + 1e-9))


def test_lines_that_fit_at_their_speed_are_not_reported(sia10f):
    model, chain = sia10f
    plan = plan_job(sia_job(chain, model, PROGRAM[:2]), model, np.asarray(model.home), chain=chain)
    assert plan.program.slowed == ()
    assert all(b.slowed == () for b in plan.program.blocks if isinstance(b, MotionBlock))


def test_the_runner_reports_a_slowed_line_once_at_the_tick_it_starts(sia10f, slowed_plan):
    model, _ = sia10f
    plan, _ = slowed_plan
    (moved,) = plan.program.slowed
    loop = ControlLoop([model], 0.001)
    loop.reset(np.asarray(model.home, float)[None])
    runner = JobRunner(plan.job, model, loop, 0)
    runner.start_program(0.0, plan.program)
    reported: list[tuple[float, tuple]] = []
    for k in range(20000):
        t = k * 0.001
        out = runner.tick(t)
        if out.slowed:
            reported.append((t, out.slowed))
        if out.done:
            break
        loop.tick(t)
    assert out.done and out.failed is None
    ((t_reported, moves),) = reported
    assert moves == (moved,)
    assert moved.offset_s <= t_reported + 1e-9 < moved.offset_s + 0.001  # the first cycle of the line


def test_a_program_planned_in_the_child_process_carries_the_same_slowed_lines(sia10f, slowed_plan):
    model, _ = sia10f
    plan, _ = slowed_plan
    with JobPlanningProcess() as planner:
        program = planner.plan(plan.job, model, np.asarray(model.home))
    assert program.slowed == plan.program.slowed and len(program.slowed) == 1
