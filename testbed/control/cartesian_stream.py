"""Streaming of Cartesian TCP offsets: converted to joint targets by IK, then streamed like joint chunks."""

from __future__ import annotations

import numpy as np

from testbed.control.kinematics import KinematicChain, axis_angle_matrix
from testbed.errors import ControllerError


def offsets_to_joint_rows(
    chain: KinematicChain, q_now: np.ndarray, offsets: np.ndarray, *, orientation: str = "full"
) -> np.ndarray:
    """Joint rows that move the TCP by ``offsets`` from its pose at ``q_now``.

    Args:
        chain: the robot's kinematics.
        q_now: current joint positions ``(n_joints,)``.
        offsets: ``(steps, 3)`` translations (m) or ``(steps, 6)`` translations plus rotation
            vectors (rad), both in the base frame, each relative to the pose at ``q_now``.
        orientation: IK mode (``"full"``, ``"yaw"`` for SCARA arms, ``"none"``).

    Raises:
        ControllerError: bad shape, non-finite offsets, or a row with no IK solution within
            the joint limits (naming the row).
    """
    arr = np.asarray(offsets, dtype=float)
    if arr.ndim != 2 or arr.shape[1] not in (3, 6) or arr.shape[0] < 1:
        raise ControllerError(f"Cartesian chunk must have shape (steps >= 1, 3 or 6), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ControllerError(f"Cartesian chunk rows {np.flatnonzero(~np.isfinite(arr).all(axis=1)).tolist()} "
                              "are not finite")
    base = chain.forward(np.asarray(q_now, float))
    q = np.asarray(q_now, float).copy()
    rows = np.zeros((arr.shape[0], chain.n_joints))
    for k, off in enumerate(arr):
        target = base.copy()
        target[:3, 3] += off[:3]
        if arr.shape[1] == 6:
            angle = float(np.linalg.norm(off[3:]))
            if angle > 0:
                target[:3, :3] = axis_angle_matrix(off[3:] / angle, angle) @ base[:3, :3]
        result = chain.inverse(target, q, orientation=orientation, restarts=0, max_iter=50)
        if not result.ok:
            raise ControllerError(
                f"Cartesian chunk row {k}: offset {np.round(off, 4).tolist()} is unreachable "
                f"(IK error {result.position_error_m * 1e3:.2f} mm)"
            )
        q = result.q
        rows[k] = q
    return rows

