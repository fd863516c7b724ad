"""Blended job moves keep to the speeds they are programmed to: superposition must not add them up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from testbed.control.job import ROW_DT_S, blend_group, parse_job, parse_job_text, plan_job
from testbed.control.kinematics import KinematicChain
from testbed.robots import load_robot


def planned(model_name: str, program: str, poses: str):
    model = load_robot(model_name)
    chain = KinematicChain.from_urdf(model.urdf_path, model.tcp_link)
    job = parse_job_text(f"name: blend\nposes:\n{poses}\nprogram:\n{program}", source="blend.yaml")
    plan = plan_job(job, model, np.asarray(model.home), chain=chain)
    rows = np.vstack([b.rows for b in plan.program.blocks])
    return model, chain, rows


def peaks(model, chain, rows):
    """Peak TCP speed (m/s), joint velocity and acceleration as fractions of the limits, row to row."""
    tips = np.array([chain.forward(q)[:3, 3] for q in rows])
    tcp = float(np.max(np.linalg.norm(np.diff(tips, axis=0), axis=1))) / ROW_DT_S
    vel = float(np.max(np.abs(np.diff(rows, axis=0)) / ROW_DT_S / model.velocity))
    acc = float(np.max(np.abs(np.diff(rows, 2, axis=0)) / ROW_DT_S**2 / model.acceleration))
    return tcp, vel, acc


def line_poses(model_name: str) -> str:
    model = load_robot(model_name)
    chain = KinematicChain.from_urdf(model.urdf_path, model.tcp_link)
    x, _, z = chain.forward(np.asarray(model.home))[:3, 3]
    return "\n".join(f"  {name}: {{xyz: [{x:.4f}, {y}, {z:.4f}], rpy: [3.14159265, 0, 0]}}"
                     for name, y in (("a", -0.25), ("b", 0.0), ("c", 0.25)))


@pytest.mark.parametrize("pl", [4, 8])
def test_blended_linear_moves_keep_their_programmed_speed(pl):
    # MOVL V=400 PL=8 superposed two 0.4 m/s cruises: 0.800 m/s at the TCP, a joint at 1.17x its limit
    poses = line_poses("sia10f")
    program = f"  - MOVL a V=500 PL=0\n  - MOVL b V=400 PL={pl}\n  - MOVL c V=400 PL=0\n"
    model, chain, rows = planned("sia10f", program, poses)
    _, _, exact = planned("sia10f", program.replace(f"PL={pl}", "PL=0"), poses)
    tcp, vel, _ = peaks(model, chain, rows)
    tcp_exact, vel_exact, _ = peaks(model, chain, exact)
    # the higher of the blended lines' V (and the first line's 500 mm/s), or what the moves do with exact
    # stops (their rows' chords run 4e-6 over V: IK and sampling, not blending)
    assert tcp <= max(0.5, tcp_exact) * (1 + 1e-9)
    assert vel <= max(1.0, vel_exact) * (1 + 1e-9)
    assert len(rows) < len(exact)  # still a blend: the cycle is shorter than with an exact stop


@pytest.mark.parametrize("model_name", ["sia10f", "gp7"])
def test_blended_joint_moves_keep_to_the_tcp_and_joint_limits(model_name):
    # sia10f MOVJ VJ=100 PL=8: the blend's TCP reached 1.115 m/s, over the 1.0 m/s limit
    model = load_robot(model_name)
    home = [round(float(v), 5) for v in model.home]
    poses = "\n".join(f"  {name}: {{joints: {[j0, *home[1:]]}}}" for name, j0 in (("a", -1.2), ("b", 0.0), ("c", 1.2)))
    program = "  - MOVJ a VJ=100 PL=0\n  - MOVJ b VJ=100 PL=8\n  - MOVJ c VJ=100 PL=0\n"
    model, chain, rows = planned(model_name, program, poses)
    _, _, exact = planned(model_name, program.replace("PL=8", "PL=0"), poses)
    tcp, vel, acc = peaks(model, chain, rows)
    # the TCP limit, or what the moves do with exact stops (2.6e-6 over it on sia10f: sampling, not blending)
    assert tcp <= max(model.tcp_speed_m_s, peaks(model, chain, exact)[0]) * (1 + 1e-9)
    assert vel <= 1 + 1e-9 and acc <= 1 + 1e-9


def test_blends_within_their_bounds_and_exact_stops_are_rows_as_superposed():
    # the re-timing only touches blends that were too fast: the SCARA cell's job plans bit for bit as before
    data = yaml.safe_load(Path("launch/scara_job.yaml").read_text(encoding="utf-8"))
    model = load_robot("scara_t6")
    chain = KinematicChain.from_urdf(model.urdf_path, model.tcp_link)
    job = parse_job(data["cell"]["robots"][0]["job"], source="scara_job.yaml")
    plan = plan_job(job, model, np.asarray(model.home), chain=chain)
    groups = [b for b in plan.blocks if isinstance(b, list)]
    assert any(seg.step.pl > 0 for g in groups for seg in g[:-1])
    for group, block in zip(groups, [b for b in plan.program.blocks if hasattr(b, "rows")], strict=True):
        assert np.array_equal(block.rows, blend_group(group))  # no chain: plain superposition
