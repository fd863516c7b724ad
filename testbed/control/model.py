"""What the control loop needs from a robot description, and its padded (robots, joints) arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from testbed.errors import ControllerError


class RobotLimits(Protocol):
    """The part of ``testbed.robots.RobotModel`` the control loop reads.

    Arrays are float64 ``(n_joints,)`` in rad, rad/s, rad/s^2, rad/s^3 (m... for prismatic joints).
    """

    name: str
    n_joints: int
    joint_types: Sequence[str]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray


@dataclass(frozen=True)
class PaddedLimits:
    """Joint limits of several robots stacked into ``(robots, max_joints)`` arrays.

    Padding entries (joints a robot does not have) have zero range and zero velocity,
    and acceleration/jerk 1 so that ratios stay finite.
    """

    names: tuple[str, ...]
    n_joints: np.ndarray  # (robots,) int
    mask: np.ndarray  # (robots, max_joints) bool
    prismatic: np.ndarray  # (robots, max_joints) bool
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray


def stack_limits(models: Sequence[RobotLimits]) -> PaddedLimits:
    """Stack robot limits into padded arrays, checking each model's arrays.

    Raises:
        ControllerError: no models, or a model whose limit arrays are missing, mis-shaped,
            non-finite, non-positive (velocity/acceleration/jerk) or with lower > upper.
    """
    if len(models) == 0:
        raise ControllerError("ControlLoop: at least one robot model is required (got none)")
    n = np.array([int(m.n_joints) for m in models], dtype=np.int64)
    n_max = int(n.max())
    r = len(models)
    out = {k: np.zeros((r, n_max)) for k in ("lower", "upper", "velocity")}
    out["acceleration"] = np.ones((r, n_max))
    out["jerk"] = np.ones((r, n_max))
    mask = np.zeros((r, n_max), dtype=bool)
    prismatic = np.zeros((r, n_max), dtype=bool)
    for i, m in enumerate(models):
        k = int(m.n_joints)
        if k < 1:
            raise ControllerError(f"robot model {m.name!r}: n_joints must be >= 1, got {k}")
        for field in ("lower", "upper", "velocity", "acceleration", "jerk"):
            arr = np.asarray(getattr(m, field), dtype=np.float64)
            if arr.shape != (k,):
                raise ControllerError(
                    f"robot model {m.name!r}: field '{field}' must have shape ({k},), got {arr.shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise ControllerError(f"robot model {m.name!r}: field '{field}' has non-finite values {arr}")
            if field in ("velocity", "acceleration", "jerk") and np.any(arr <= 0):
                raise ControllerError(f"robot model {m.name!r}: field '{field}' must be > 0, got {arr}")
            out[field][i, :k] = arr
        if np.any(out["lower"][i, :k] > out["upper"][i, :k]):
            raise ControllerError(
                f"robot model {m.name!r}: lower > upper for joints "
                f"{np.flatnonzero(out['lower'][i, :k] > out['upper'][i, :k]).tolist()}"
            )
        mask[i, :k] = True
        types = list(getattr(m, "joint_types", ["revolute"] * k))
        prismatic[i, :k] = [t == "prismatic" for t in types[:k]]
    return PaddedLimits(
        names=tuple(m.name for m in models),
        n_joints=n,
        mask=mask,
        prismatic=prismatic,
        **out,
    )
