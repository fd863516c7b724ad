"""Planned MOVL/MOVC rows keep every joint within its velocity and acceleration limits (PL=0: no blending)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.control.job import ROW_DT_S, Segment, blend_group, parse_job_text, plan_job
from testbed.control.kinematics import KinematicChain
from testbed.control.trajectory import line_path, plan_cartesian
from testbed.errors import JobError
from testbed.robots import load_robot


def robot(name: str):
    model = load_robot(name)
    return model, KinematicChain.from_urdf(model.urdf_path, model.tcp_link)


def plan(model, chain, poses: str, program: str):
    job = parse_job_text(f"name: path\nposes:\n{poses}\nprogram:\n{program}", source="path.yaml")
    return plan_job(job, model, np.asarray(model.home), chain=chain)


def joint_peaks(model, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per joint, peak row-to-row velocity and acceleration (from and to rest) as fractions of the limits."""
    padded = np.vstack([rows[:1], rows, rows[-1:]])
    vel = np.max(np.abs(np.diff(padded, axis=0)), axis=0) / ROW_DT_S / model.velocity
    acc = np.max(np.abs(np.diff(padded, 2, axis=0)), axis=0) / ROW_DT_S**2 / model.acceleration
    return vel, acc


def test_sia10f_linear_and_circular_moves_keep_every_joint_within_its_limits():
    # the tool turned 180 deg about z from home puts joint_7 at its limit along the line: the path IK stopped
    # it there abruptly and joint_3 accelerated at 25x (line) and 47x (arc) its 12 rad/s^2 between rows
    model, chain = robot("sia10f")
    x, _, z = chain.forward(np.asarray(model.home))[:3, 3]
    down = "rpy: [3.14159265, 0, 0]"
    poses = (f"  a: {{xyz: [{x:.4f}, -0.25, {z:.4f}], {down}}}\n  b: {{xyz: [{x:.4f}, 0.25, {z:.4f}], {down}}}\n"
             f"  v: {{xyz: [{x + 0.15:.4f}, 0.0, {z:.4f}], {down}}}\n")
    program = ("  - MOVL a V=500 PL=0\n  - MOVL b V=500 PL=0\n  - MOVL a V=1000 PL=0\n"
               "  - TIMER T=0.1\n  - MOVC v b V=600 PL=0\n")
    planned = plan(model, chain, poses, program)
    for block in planned.program.blocks:
        if not hasattr(block, "rows"):
            continue
        vel, acc = joint_peaks(model, block.rows)
        assert np.all(vel <= 1.0 + 1e-9), (block.steps[0].text, vel)
        assert np.all(acc <= 1.0 + 1e-9), (block.steps[0].text, acc)
    # still the programmed path: each line ends on its teach point
    ends = [b.rows[-1] for b in planned.program.blocks if hasattr(b, "rows")]
    assert np.allclose(chain.forward(ends[-1])[:3, 3], [round(x, 4), 0.25, round(z, 4)], atol=1e-6)


def test_a_gp7_line_within_the_limits_is_planned_as_before():
    # re-planning only touches moves whose rows were too fast: this one is plan_cartesian's rows, bit for bit
    model, chain = robot("gp7")
    home = np.asarray(model.home)
    start = chain.forward(home)
    x, y, z = start[:3, 3]
    poses = f"  a: {{xyz: [{x + 0.1:.4f}, {y + 0.1:.4f}, {z:.4f}], rpy: [0, 3.14159265, 0]}}\n"
    planned = plan(model, chain, poses, "  - MOVL a V=200 PL=0\n")
    (group,) = [b for b in planned.blocks if isinstance(b, list)]
    end = planned.job.poses["a"].matrix()
    motion = plan_cartesian(chain, home, line_path(start, end), 0.2, 2.0, model.velocity, dt_s=ROW_DT_S)
    expected = blend_group([Segment(group[0].step, motion)])
    (block,) = [b for b in planned.program.blocks if hasattr(b, "rows")]
    assert np.array_equal(block.rows, expected)
    vel, acc = joint_peaks(model, block.rows)
    assert np.all(vel <= 1.0) and np.all(acc <= 1.0)


def test_a_wrist_flip_no_slowdown_can_follow_is_refused_naming_the_line_and_joint():
    # joint_5 through 0 with joint_4 at 0.01 rad: the tool's reorientation needs joint_4 to turn ~pi within a
    # few rows; it was planned (and streamed) as such
    model, chain = robot("gp7")
    home = np.asarray(model.home, float)
    qa = home.copy()
    qa[3], qa[4] = 0.01, 0.3
    qb = qa.copy()
    qb[4] = -0.3
    tb = chain.forward(qb)
    rpy = (math.atan2(tb[2, 1], tb[2, 2]), -math.asin(tb[2, 0]), math.atan2(tb[1, 0], tb[0, 0]))
    poses = (f"  a: {{joints: {[round(float(v), 8) for v in qa]}}}\n"
             f"  b: {{xyz: {[round(float(v), 8) for v in tb[:3, 3]]}, rpy: {[round(v, 10) for v in rpy]}}}\n")
    with pytest.raises(JobError, match=r"path\.yaml:\d+ program\[1\] 'MOVL b V=200 PL=0': joint joint_4 cannot"):
        plan(model, chain, poses, "  - MOVJ a VJ=20 PL=0\n  - MOVL b V=200 PL=0\n")
