"""Every shipped model loads, agrees with its URDF, and the URDF files match their designs."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.robots import known_robots, load_robot, parse_urdf
from testbed.robots.authoring import RobotDesign, render_urdf
from testbed.robots.designs import CUP_MASS_KG, DESIGNS

# catalogue manipulator masses (ROBOTS.md); the suction cup comes on top
CATALOGUE_MASS_KG = {"gp7": 34.0, "scara_t6": 22.0, "sia10f": 60.0}
CATALOGUE_PAYLOAD_KG = {"gp7": 7.0, "scara_t6": 6.0, "sia10f": 10.0}
EXPECTED_JOINTS = {"gp7": 6, "scara_t6": 4, "sia10f": 7}
MODELS = sorted(EXPECTED_JOINTS)


def test_known_robots_lists_every_model() -> None:
    assert known_robots() == MODELS


@pytest.mark.parametrize("name", MODELS)
def test_model_loads_with_expected_joints(name: str) -> None:
    model = load_robot(name)
    assert model.n_joints == EXPECTED_JOINTS[name]
    assert model.joint_names == tuple(f"joint_{i}" for i in range(1, model.n_joints + 1))
    for array in (model.lower, model.upper, model.velocity, model.acceleration, model.jerk, model.home):
        assert array.dtype == np.float64
        assert array.shape == (model.n_joints,)
        assert not array.flags.writeable
    assert model.tcp_link == "tcp"
    assert model.flange_link == "tool0"
    assert model.payload_kg == CATALOGUE_PAYLOAD_KG[name]


@pytest.mark.parametrize("name", MODELS)
def test_limits_agree_with_urdf(name: str) -> None:
    model = load_robot(name)
    urdf = parse_urdf(model.urdf_path)
    joints = [urdf.joint(n) for n in model.joint_names]
    assert all(j is not None for j in joints)
    np.testing.assert_array_equal(model.lower, [j.lower for j in joints if j])
    np.testing.assert_array_equal(model.upper, [j.upper for j in joints if j])
    assert np.all(model.velocity <= np.array([j.velocity for j in joints if j]) + 1e-6)
    assert np.all(model.max_force <= np.array([j.effort for j in joints if j]) + 1e-6)
    assert np.all(model.acceleration > model.velocity)
    assert np.all(model.jerk > model.acceleration)


@pytest.mark.parametrize("name", MODELS)
def test_home_is_inside_joint_range(name: str) -> None:
    model = load_robot(name)
    assert np.all(model.home >= model.lower)
    assert np.all(model.home <= model.upper)


@pytest.mark.parametrize("name", MODELS)
def test_link_masses_sum_to_catalogue_mass(name: str) -> None:
    urdf = parse_urdf(load_robot(name).urdf_path)
    arm = sum(m for link, m in urdf.link_mass_kg.items() if link != "suction_cup")
    assert arm == pytest.approx(CATALOGUE_MASS_KG[name])
    assert urdf.link_mass_kg["suction_cup"] == pytest.approx(CUP_MASS_KG)


@pytest.mark.parametrize("name", MODELS)
def test_tool_chain_ends_in_suction_cup_and_tcp(name: str) -> None:
    urdf = parse_urdf(load_robot(name).urdf_path)
    assert urdf.links[0] == "base_link"
    by_child = {j.child: j for j in urdf.joints}
    assert by_child["suction_cup"].parent == "tool0" and by_child["suction_cup"].kind == "fixed"
    assert by_child["tcp"].parent == "suction_cup" and by_child["tcp"].kind == "fixed"
    assert by_child["tcp"].origin_xyz == pytest.approx((0.0, 0.0, 0.04))
    assert by_child["tool0"].kind == "fixed"


@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: d.name)
def test_urdf_file_is_what_its_design_renders(design: RobotDesign) -> None:
    path = load_robot(design.name).urdf_path
    assert path.read_text(encoding="utf-8") == render_urdf(design), (
        f"{path} is stale: run python -m testbed.robots.authoring"
    )
