"""Link frames and the TCP pose computed without a simulator agree with pybullet's for every shipped robot."""

from __future__ import annotations

import math

import numpy as np
import pybullet as p
import pytest

from testbed.robots import known_robots, load_robot, parse_urdf
from testbed.ros2.frames import LinkTransform, RobotFrames, camera_pose, compose, rotate


def _world_links(frames: RobotFrames, q: np.ndarray) -> dict[str, LinkTransform]:
    """Every link's world pose: the base, then each joint's transform down the tree."""
    poses = {frames.root: frames.base_transform}
    pending = [*frames.fixed, *frames.moving(q)]
    while pending:
        t = next(t for t in pending if t.parent in poses)
        pending.remove(t)
        poses[t.child] = compose(poses[t.parent], t)
    return poses


@pytest.mark.parametrize("model_name", known_robots())
def test_link_frames_match_pybullet(model_name: str) -> None:
    model = load_robot(model_name)
    base_xyz, base_rpy = (0.2, -0.1, 0.3), (0.0, 0.0, 35.0)
    frames = RobotFrames(parse_urdf(model.urdf_path), model.joint_names, model.tcp_link, base_xyz, base_rpy)
    client = p.connect(p.DIRECT)
    try:
        body = p.loadURDF(str(model.urdf_path), basePosition=base_xyz, useFixedBase=True,
                          baseOrientation=p.getQuaternionFromEuler([math.radians(a) for a in base_rpy]),
                          physicsClientId=client)
        index = {p.getJointInfo(body, j, physicsClientId=client)[12].decode(): j
                 for j in range(p.getNumJoints(body, physicsClientId=client))}
        joint_index = {p.getJointInfo(body, j, physicsClientId=client)[1].decode(): j for j in index.values()}
        rng = np.random.default_rng(7)
        q = model.lower + (model.upper - model.lower) * rng.uniform(0.2, 0.8, model.n_joints)
        for name, value in zip(model.joint_names, q, strict=True):
            p.resetJointState(body, joint_index[name], float(value), physicsClientId=client)
        poses = _world_links(frames, q)
        for link, j in index.items():
            state = p.getLinkState(body, j, computeForwardKinematics=True, physicsClientId=client)
            np.testing.assert_allclose(poses[link].xyz, state[4], atol=1e-6, err_msg=link)
            ours, theirs = np.array(poses[link].quat), np.array(state[5])
            assert min(np.abs(ours - theirs).max(), np.abs(ours + theirs).max()) < 1e-6, link
        tcp = frames.tcp_pose(q)
        np.testing.assert_allclose(tcp.xyz, poses[model.tcp_link].xyz, atol=1e-12)
    finally:
        p.disconnect(client)


def test_camera_optical_frame_looks_at_its_target() -> None:
    pose = camera_pose((0.12, 0.05, 1.9), (0.12, 0.05, 0.3))
    forward = rotate(pose.quat, (0.0, 0.0, 1.0))
    np.testing.assert_allclose(forward, (0.0, 0.0, -1.0), atol=1e-12)
    down = rotate(pose.quat, (0.0, 1.0, 0.0))  # image rows run against the render's up vector (+x)
    np.testing.assert_allclose(down, (-1.0, 0.0, 0.0), atol=1e-12)
