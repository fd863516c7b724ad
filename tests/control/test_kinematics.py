"""Forward/inverse kinematics from URDF origins and axes, against closed-form cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from testbed.control.kinematics import KinematicChain, axis_angle_matrix, rotation_error, rpy_matrix
from testbed.errors import RobotDescriptionError

L1, L2, H = 0.325, 0.275, 0.4

SCARA_URDF = f"""<?xml version="1.0"?>
<robot name="mini_scara">
  <link name="base"/><link name="a"/><link name="b"/><link name="c"/><link name="d"/><link name="tip"/>
  <joint name="j1" type="revolute"><parent link="base"/><child link="a"/>
    <origin xyz="0 0 {H}" rpy="0 0 0"/><axis xyz="0 0 1"/>
    <limit lower="-2.5" upper="2.5" effort="1" velocity="1"/></joint>
  <joint name="j2" type="revolute"><parent link="a"/><child link="b"/>
    <origin xyz="{L1} 0 0" rpy="0 0 0"/><axis xyz="0 0 1"/>
    <limit lower="-2.5" upper="2.5" effort="1" velocity="1"/></joint>
  <joint name="j3" type="prismatic"><parent link="b"/><child link="c"/>
    <origin xyz="{L2} 0 0" rpy="0 0 0"/><axis xyz="0 0 -1"/>
    <limit lower="0" upper="0.2" effort="1" velocity="1"/></joint>
  <joint name="j4" type="revolute"><parent link="c"/><child link="d"/>
    <origin xyz="0 0 0" rpy="0 0 0"/><axis xyz="0 0 1"/>
    <limit lower="-3" upper="3" effort="1" velocity="1"/></joint>
  <joint name="flip" type="fixed"><parent link="d"/><child link="tip"/>
    <origin xyz="0 0 -0.05" rpy="3.14159265358979 0 0"/></joint>
</robot>
"""


@pytest.fixture(scope="module")
def scara(tmp_path_factory: pytest.TempPathFactory) -> KinematicChain:
    path = tmp_path_factory.mktemp("scara") / "robot.urdf"
    path.write_text(SCARA_URDF)
    return KinematicChain.from_urdf(path, "tip")


def closed_form(q: np.ndarray) -> tuple[np.ndarray, float]:
    q1, q2, q3, q4 = q
    x = L1 * np.cos(q1) + L2 * np.cos(q1 + q2)
    y = L1 * np.sin(q1) + L2 * np.sin(q1 + q2)
    return np.array([x, y, H - q3 - 0.05]), q1 + q2 + q4


joint_vec = st.tuples(
    st.floats(-2.5, 2.5), st.floats(-2.5, 2.5), st.floats(0.0, 0.2), st.floats(-3.0, 3.0)
).map(np.array)


@settings(max_examples=50, deadline=None)
@given(q=joint_vec)
def test_scara_forward_matches_closed_form(scara: KinematicChain, q: np.ndarray) -> None:
    pose = scara.forward(q)
    pos, yaw = closed_form(q)
    assert np.allclose(pose[:3, 3], pos, atol=1e-12)
    # the tool frame is flipped (z down); its x axis turns with q1 + q2 + q4
    assert np.allclose(pose[:3, 0], [np.cos(yaw), np.sin(yaw), 0.0], atol=1e-9)
    assert np.allclose(pose[:3, 2], [0.0, 0.0, -1.0], atol=1e-9)


def test_chain_lists_movable_joints_and_limits(scara: KinematicChain) -> None:
    assert scara.joint_names == ("j1", "j2", "j3", "j4")
    assert scara.prismatic.tolist() == [False, False, True, False]
    assert scara.upper[2] == 0.2


def test_unknown_tip_link_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "robot.urdf"
    path.write_text(SCARA_URDF)
    with pytest.raises(RobotDescriptionError, match="no link 'tcp' to end the kinematic chain"):
        KinematicChain.from_urdf(path, "tcp")


@settings(max_examples=30, deadline=None)
@given(q=joint_vec)
def test_jacobian_matches_finite_differences(scara: KinematicChain, q: np.ndarray) -> None:
    q = np.clip(q, scara.lower + 1e-3, scara.upper - 1e-3)
    jac = scara.jacobian(q)
    eps = 1e-6
    for i in range(4):
        dq = np.zeros(4)
        dq[i] = eps
        p_plus, p_minus = scara.forward(q + dq), scara.forward(q - dq)
        assert np.allclose(jac[:3, i], (p_plus[:3, 3] - p_minus[:3, 3]) / (2 * eps), atol=1e-6)
        w = rotation_error(p_plus[:3, :3], p_minus[:3, :3]) / (2 * eps)
        assert np.allclose(jac[3:, i], w, atol=1e-6)


def test_tcp_speed_of_outstretched_arm_turning_at_base(scara: KinematicChain) -> None:
    # straight arm, base joint at 1 rad/s: tip speed is the reach, 0.6 m/s
    assert scara.tcp_speed(np.zeros(4), np.array([1.0, 0, 0, 0])) == pytest.approx(L1 + L2)
    assert scara.tcp_speed(np.zeros(4), np.array([0, 0, 0.5, 0])) == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(q=joint_vec)
# behind the base, reachable only with the shoulder at its limit and the elbow bent one way: restarts from
# random mid-range seeds all swung the other way round
@example(q=np.array([-2.5, -1.25, 0.0, 0.0]))
def test_inverse_recovers_reachable_scara_poses(scara: KinematicChain, q: np.ndarray) -> None:
    target = scara.forward(q)
    result = scara.inverse(target, np.zeros(4), orientation="yaw")
    assert result.ok
    assert np.allclose(scara.forward(result.q)[:3, 3], target[:3, 3], atol=1e-4)
    assert np.all(result.q >= scara.lower) and np.all(result.q <= scara.upper)


def test_inverse_reports_unreachable_pose(scara: KinematicChain) -> None:
    target = np.eye(4)
    target[:3, 3] = [1.0, 0.0, 0.3]  # beyond the 0.6 m reach
    result = scara.inverse(target, np.zeros(4), orientation="none", restarts=1)
    assert not result.ok
    assert result.position_error_m == pytest.approx(0.4, abs=1e-3)


def test_rotation_helpers_agree() -> None:
    r = rpy_matrix(0.3, -0.2, 1.1)
    assert np.allclose(r @ r.T, np.eye(3))
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    for angle in (0.0, 0.7, np.pi - 1e-9, np.pi):
        rot = axis_angle_matrix(axis, angle)
        vec = rotation_error(rot @ r, r)
        assert np.allclose(np.linalg.norm(vec), angle, atol=1e-6)
        if angle > 0:
            assert np.allclose(vec / np.linalg.norm(vec), axis, atol=1e-4)


@pytest.mark.parametrize("name", ["gp7", "sia10f", "scara_t6"])
def test_inverse_round_trips_on_shipped_robots(name: str) -> None:
    from testbed.robots import load_robot

    model = load_robot(name)
    chain = KinematicChain.from_urdf(model.urdf_path, model.tcp_link)
    assert chain.n_joints == model.n_joints
    rng = np.random.default_rng(7)
    mode = "yaw" if model.kind == "scara" else "full"
    for _ in range(5):
        q = model.lower + (model.upper - model.lower) * rng.uniform(0.2, 0.8, model.n_joints)
        result = chain.inverse(chain.forward(q), model.home, orientation=mode)
        assert result.ok, (q, result)
