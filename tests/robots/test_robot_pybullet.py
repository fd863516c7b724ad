"""The URDFs load in pybullet, do not self-collide, hold their pose, and reach the cell poses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pybullet as p
import pytest

from testbed.robots import RobotModel, load_robot
from testbed.robots.designs import SCARA_TCP_Z_BOTTOM_M, SCARA_TCP_Z_TOP_M

MODELS = ("gp7", "scara_t6", "sia10f")

# cell poses in the robot base frame (m), tool pointing straight down
ARM_POSES = [(0.45, 0.0, z) for z in (0.02, 0.10, 0.20)] + [
    (0.05, 0.45, 0.15),
    (0.30, 0.40, 0.15),
    (-0.20, 0.42, 0.15),
]
SCARA_POSES = [
    (x, y, z)
    for x, y in ((0.45, 0.0), (0.05, 0.45), (0.30, 0.40), (-0.20, 0.42))
    for z in (SCARA_TCP_Z_BOTTOM_M, SCARA_TCP_Z_TOP_M)
]


@dataclass
class Loaded:
    client: int
    body: int
    model: RobotModel
    movable: list[int]
    link_index: dict[str, int]

    def set_joints(self, q: np.ndarray) -> None:
        for index, value in zip(self.movable, q, strict=True):
            p.resetJointState(self.body, index, float(value), physicsClientId=self.client)

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (3,) and rotation matrix (3, 3) in the base frame (base at the origin)."""
        state = p.getLinkState(
            self.body, self.link_index["tcp"], computeForwardKinematics=True, physicsClientId=self.client
        )
        rot = np.array(p.getMatrixFromQuaternion(state[5])).reshape(3, 3)
        return np.array(state[4]), rot


@pytest.fixture(params=MODELS)
def loaded(request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]) -> Iterator[Loaded]:
    model = load_robot(request.param)
    client = p.connect(p.DIRECT)
    try:
        capfd.readouterr()
        body = p.loadURDF(
            str(model.urdf_path),
            useFixedBase=True,
            flags=p.URDF_USE_INERTIA_FROM_FILE,
            physicsClientId=client,
        )
        output = capfd.readouterr()
        assert "warning" not in (output.out + output.err).lower(), output
        movable, link_index = [], {}
        for i in range(p.getNumJoints(body, physicsClientId=client)):
            info = p.getJointInfo(body, i, physicsClientId=client)
            link_index[info[12].decode()] = i
            if info[2] != p.JOINT_FIXED:
                movable.append(i)
        yield Loaded(client, body, model, movable, link_index)
    finally:
        p.disconnect(client)


def test_joint_names_and_types_match_model(loaded: Loaded) -> None:
    infos = [p.getJointInfo(loaded.body, i, physicsClientId=loaded.client) for i in loaded.movable]
    assert tuple(info[1].decode() for info in infos) == loaded.model.joint_names
    kinds = {p.JOINT_REVOLUTE: "revolute", p.JOINT_PRISMATIC: "prismatic"}
    assert tuple(kinds[info[2]] for info in infos) == loaded.model.joint_types
    np.testing.assert_allclose([info[8] for info in infos], loaded.model.lower)
    np.testing.assert_allclose([info[9] for info in infos], loaded.model.upper)
    assert {"tool0", "suction_cup", "tcp"} <= set(loaded.link_index)


def _rigid_neighbours(loaded: Loaded) -> set[tuple[int, int]]:
    """Link pairs joined through at most one moving joint (they touch by construction)."""
    parent = {i: p.getJointInfo(loaded.body, i, physicsClientId=loaded.client)[16] for i in loaded.link_index.values()}
    moving = set(loaded.movable)

    def chain(i: int) -> list[int]:
        out = [i]
        while i != -1:
            i = parent[i]
            out.append(i)
        return out

    pairs = set()
    links = [-1, *sorted(parent)]
    for a in links:
        for b in links:
            if a >= b:
                continue
            ca, cb = chain(a), chain(b)
            common = next(x for x in ca if x in cb)
            crossings = sum(1 for x in ca[: ca.index(common)] + cb[: cb.index(common)] if x in moving)
            if crossings <= 1:
                pairs.add((a, b))
    return pairs


@pytest.mark.parametrize("pose", ["zero", "home"])
def test_no_self_collision(loaded: Loaded, pose: str) -> None:
    q = np.zeros(loaded.model.n_joints) if pose == "zero" else loaded.model.home
    loaded.set_joints(q)
    neighbours = _rigid_neighbours(loaded)
    links = [-1, *sorted(loaded.link_index.values())]
    touching = []
    checked = 0
    for a in links:
        for b in links:
            if a < b and (a, b) not in neighbours:
                checked += 1
                points = p.getClosestPoints(loaded.body, loaded.body, 0.0, a, b, physicsClientId=loaded.client)
                if points:
                    touching.append((a, b))
    assert checked >= loaded.model.n_joints  # the pairs that could collide were looked at
    assert touching == []


@pytest.mark.parametrize("pose", ["zero", "home"])
def test_pybullet_self_collision_reports_no_contact(loaded: Loaded, pose: str) -> None:
    flags = p.URDF_USE_INERTIA_FROM_FILE | p.URDF_USE_SELF_COLLISION | p.URDF_USE_SELF_COLLISION_EXCLUDE_PARENT
    body = p.loadURDF(str(loaded.model.urdf_path), useFixedBase=True, flags=flags, physicsClientId=loaded.client)
    q = np.zeros(loaded.model.n_joints) if pose == "zero" else loaded.model.home
    for index, value in zip(loaded.movable, q, strict=True):
        p.resetJointState(body, index, float(value), physicsClientId=loaded.client)
    p.performCollisionDetection(physicsClientId=loaded.client)
    contacts = p.getContactPoints(body, body, physicsClientId=loaded.client)
    assert [(c[3], c[4]) for c in contacts] == []


def test_home_points_tool_down_above_work_area(loaded: Loaded) -> None:
    loaded.set_joints(loaded.model.home)
    pos, rot = loaded.tcp_pose()
    np.testing.assert_allclose(rot[:, 2], [0.0, 0.0, -1.0], atol=1e-3)
    assert 0.25 <= np.hypot(pos[0], pos[1]) <= 0.6
    if loaded.model.kind == "articulated":
        assert pos[2] >= 0.3


def test_gains_hold_home_under_gravity(loaded: Loaded) -> None:
    model = loaded.model
    p.setGravity(0, 0, -9.81, physicsClientId=loaded.client)
    loaded.set_joints(np.zeros(model.n_joints))
    p.setJointMotorControlArray(
        loaded.body,
        loaded.movable,
        p.POSITION_CONTROL,
        targetPositions=model.home.tolist(),
        positionGains=model.position_gain.tolist(),
        velocityGains=model.velocity_gain.tolist(),
        forces=model.max_force.tolist(),
        physicsClientId=loaded.client,
    )
    for _ in range(480):  # 2 s at the default 240 Hz
        p.stepSimulation(physicsClientId=loaded.client)
    states = p.getJointStates(loaded.body, loaded.movable, physicsClientId=loaded.client)
    np.testing.assert_allclose([s[0] for s in states], model.home, atol=2e-3)


def solve_ik(loaded: Loaded, target: tuple[float, float, float], orientation: tuple[float, ...]) -> np.ndarray:
    """Joint positions reaching ``target`` by pybullet IK with joint limits, refined from its own answer."""
    model = loaded.model
    loaded.set_joints(model.home)
    kwargs = {"maxNumIterations": 200, "residualThreshold": 1e-6, "physicsClientId": loaded.client}
    q = model.home
    for _ in range(20):
        q = np.array(
            p.calculateInverseKinematics(
                loaded.body,
                loaded.link_index["tcp"],
                target,
                orientation,
                lowerLimits=model.lower.tolist(),
                upperLimits=model.upper.tolist(),
                jointRanges=(model.upper - model.lower).tolist(),
                restPoses=model.home.tolist(),
                **kwargs,
            )
        )
        loaded.set_joints(q)
        # the null-space solver trades accuracy for limits: polish from where it landed
        q = np.array(p.calculateInverseKinematics(loaded.body, loaded.link_index["tcp"], target, orientation, **kwargs))
        loaded.set_joints(q)
        if np.linalg.norm(loaded.tcp_pose()[0] - target) < 1e-4:
            break
    return q


def test_reaches_cell_poses_with_tool_down(loaded: Loaded) -> None:
    model = loaded.model
    loaded.set_joints(model.home)
    state = p.getLinkState(loaded.body, loaded.link_index["tcp"], physicsClientId=loaded.client)
    tool_down = state[5]  # the home orientation points the tool straight down
    poses = SCARA_POSES if model.kind == "scara" else ARM_POSES
    for target in poses:
        q = solve_ik(loaded, target, tool_down)
        loaded.set_joints(q)
        pos, rot = loaded.tcp_pose()
        assert np.linalg.norm(pos - target) < 0.005, (model.name, target, pos)
        assert np.all(q >= model.lower - 1e-9) and np.all(q <= model.upper + 1e-9), (model.name, target, q)
        np.testing.assert_allclose(rot[:, 2], [0.0, 0.0, -1.0], atol=0.01)
