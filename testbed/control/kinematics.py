"""Forward and inverse kinematics from URDF joint origins and axes, numpy only (no simulator).

A ``KinematicChain`` is the list of joints from the base link to a tool link. Forward
kinematics composes each joint's fixed origin transform with its motion (rotation about
the axis for revolute joints, translation along it for prismatic ones). Inverse
kinematics is damped least squares on the geometric Jacobian, with joint limits
enforced at every iteration and a few deterministic restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed.errors import RobotDescriptionError
from testbed.robots.urdf import UrdfJoint, parse_urdf


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rotation matrix of URDF fixed-axis roll/pitch/yaw: ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``."""
    cr, sr = np.cos(roll), np.sin(roll)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` (rad) about the unit vector ``axis`` (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def rotation_error(r_target: np.ndarray, r_current: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, rad, base frame) taking ``r_current`` to ``r_target``."""
    r = r_target @ r_current.T
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    vec = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle < 1e-9:
        return 0.5 * vec
    if np.pi - angle < 1e-6:  # near pi the antisymmetric part vanishes: (R + I) / 2 ~ a a^T
        b = (r + np.eye(3)) / 2.0
        k = int(np.argmax(np.diag(b)))
        axis = b[:, k] / np.sqrt(max(b[k, k], 1e-300))
        if float(axis @ vec) < 0:
            axis = -axis
        return angle * axis / max(np.linalg.norm(axis), 1e-12)
    return angle * vec / (2.0 * np.sin(angle))


def _transform(xyz: tuple[float, float, float], rpy: tuple[float, float, float]) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = rpy_matrix(*rpy)
    t[:3, 3] = xyz
    return t


@dataclass(frozen=True)
class IKResult:
    """Outcome of an inverse-kinematics solve.

    Args:
        q: joint positions (the best found, within limits).
        ok: position and orientation errors within tolerance.
        position_error_m: remaining TCP position error.
        rotation_error_rad: remaining orientation error (over the constrained axes).
        iterations: iterations used, over all restarts.
    """

    q: np.ndarray
    ok: bool
    position_error_m: float
    rotation_error_rad: float
    iterations: int


class KinematicChain:
    """Serial chain from the URDF root to ``tip_link``.

    Args:
        joints: URDF joints from the root towards ``tip_link``, in order (fixed ones included).
        tip_link: the link whose pose ``forward`` returns (e.g. the model's ``tcp_link``).
    """

    def __init__(self, joints: list[UrdfJoint], tip_link: str) -> None:
        self.tip_link = tip_link
        self._origins = [_transform(j.origin_xyz, j.origin_rpy) for j in joints]
        self._kinds = [j.kind for j in joints]
        self._axes = [np.asarray(j.axis, dtype=float) / max(np.linalg.norm(j.axis), 1e-12) for j in joints]
        movable = [j for j in joints if j.movable]
        self.joint_names = tuple(j.name for j in movable)
        self.n_joints = len(movable)
        self.lower = np.array([j.lower if j.kind != "continuous" else -np.inf for j in movable])
        self.upper = np.array([j.upper if j.kind != "continuous" else np.inf for j in movable])
        self.prismatic = np.array([j.kind == "prismatic" for j in movable])

    @classmethod
    def from_urdf(cls, urdf_path: Path | str, tip_link: str) -> KinematicChain:
        """Parse ``urdf_path`` and build the chain from its root link to ``tip_link``.

        Raises:
            RobotDescriptionError: the URDF is invalid or has no link ``tip_link``.
        """
        path = Path(urdf_path)
        urdf = parse_urdf(path)
        by_child = {j.child: j for j in urdf.joints}
        if tip_link not in urdf.links:
            raise RobotDescriptionError(
                f"{path}: no link '{tip_link}' to end the kinematic chain at (links: {', '.join(urdf.links)})"
            )
        chain: list[UrdfJoint] = []
        link = tip_link
        while link in by_child:
            joint = by_child[link]
            chain.append(joint)
            link = joint.parent
            if len(chain) > len(urdf.joints):
                raise RobotDescriptionError(f"{path}: joint loop above link '{tip_link}'")
        return cls(chain[::-1], tip_link)

    def frames(self, q: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """Tip pose and, per movable joint, (origin, axis) in the base frame at positions ``q``."""
        t = np.eye(4)
        joint_frames: list[tuple[np.ndarray, np.ndarray]] = []
        i = 0
        for origin, kind, axis in zip(self._origins, self._kinds, self._axes, strict=True):
            t = t @ origin
            if kind == "fixed":
                continue
            world_axis = t[:3, :3] @ axis
            joint_frames.append((t[:3, 3].copy(), world_axis))
            motion = np.eye(4)
            if kind == "prismatic":
                motion[:3, 3] = axis * q[i]
            else:
                motion[:3, :3] = axis_angle_matrix(axis, float(q[i]))
            t = t @ motion
            i += 1
        return t, joint_frames

    def forward(self, q: np.ndarray) -> np.ndarray:
        """4x4 pose of the tip link in the base frame for joint positions ``q`` (n_joints,)."""
        return self.frames(np.asarray(q, dtype=float))[0]

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """Geometric Jacobian (6, n_joints): rows vx, vy, vz (m per unit), wx, wy, wz (rad per unit)."""
        tip, joint_frames = self.frames(np.asarray(q, dtype=float))
        jac = np.zeros((6, self.n_joints))
        for i, (origin, axis) in enumerate(joint_frames):
            if self.prismatic[i]:
                jac[:3, i] = axis
            else:
                jac[:3, i] = np.cross(axis, tip[:3, 3] - origin)
                jac[3:, i] = axis
        return jac

    def tcp_speed(self, q: np.ndarray, qd: np.ndarray) -> float:
        """Linear speed (m/s) of the tip for joint velocities ``qd`` at ``q``."""
        return float(np.linalg.norm(self.jacobian(q)[:3] @ np.asarray(qd, dtype=float)))

    def axis_reach_m(self) -> np.ndarray:
        """Per movable joint, a bound of the tip's speed per unit of that joint's speed, over every configuration.

        For a revolute joint: an upper bound of the distance from its axis to the tip (m per rad), the
        sum of the chain's offsets beyond the joint (prismatic ones at their longest stroke). While every
        revolute joint passed so far turns about an axis parallel to the joint's own, an offset keeps its
        component along that axis, so only its perpendicular part counts (a SCARA's bounds are exact).
        A prismatic joint moves the tip at its own speed: 1. So ``sum_i reach_i * |qd_i|`` bounds the tip's
        linear speed, and ``sum_i reach_i * |dq_i|`` the tip's displacement for a joint step ``dq`` inside
        the joint ranges (the bound is conservative, never below the true speed).

        Returns:
            ``(n_joints,)`` float64, >= 0.
        """
        stroke = np.maximum(np.abs(self.lower), np.abs(self.upper))
        reach = np.zeros(self.n_joints)
        movable = [k for k, kind in enumerate(self._kinds) if kind != "fixed"]
        for i, start in enumerate(movable):
            if self.prismatic[i]:
                reach[i] = 1.0
                continue
            axis = self._axes[start]
            rot = np.eye(3)  # fixed rotations since the joint's frame (motions about parallel axes left out)
            aligned = True
            total = 0.0
            m = i + 1
            for k in range(start + 1, len(self._kinds)):
                offset = rot @ self._origins[k][:3, 3]
                total += _perpendicular_norm(offset, axis) if aligned else float(np.linalg.norm(offset))
                rot = rot @ self._origins[k][:3, :3]
                if self._kinds[k] == "fixed":
                    continue
                direction = rot @ self._axes[k]
                if self._kinds[k] == "prismatic":
                    length = float(stroke[m])
                    total += length * (_perpendicular_norm(direction, axis) if aligned else 1.0)
                elif np.linalg.norm(np.cross(direction, axis)) > 1e-12:
                    aligned = False  # this joint turns later offsets out of the plane: count them whole
                m += 1
            reach[i] = total
        return reach

    def inverse(
        self,
        target: np.ndarray,
        q_seed: np.ndarray,
        *,
        orientation: str = "full",
        tol_m: float = 1e-4,
        tol_rad: float = 1e-3,
        max_iter: int = 200,
        damping: float = 0.02,
        restarts: int = 4,
    ) -> IKResult:
        """Joint positions that put the tip at pose ``target`` (4x4), starting near ``q_seed``.

        Args:
            orientation: ``"full"`` (position and orientation), ``"yaw"`` (position and rotation
                about the base z axis, for SCARA arms) or ``"none"`` (position only).
            restarts: extra attempts if the first fails, from seeds in opposite halves of the joint
                ranges (``_restart_fractions``): a solution near a limit, or with the other elbow, is
                found from some seed on its side.

        Returns:
            The best ``IKResult`` found; ``ok`` tells whether it meets the tolerances.
        """
        target = np.asarray(target, dtype=float)
        rows = {"full": [0, 1, 2, 3, 4, 5], "yaw": [0, 1, 2, 5], "none": [0, 1, 2]}.get(orientation)
        if rows is None:
            raise ValueError(f"orientation must be 'full', 'yaw' or 'none', got {orientation!r}")
        lo = np.where(np.isfinite(self.lower), self.lower, -np.pi)
        hi = np.where(np.isfinite(self.upper), self.upper, np.pi)
        seeds = [np.clip(np.asarray(q_seed, dtype=float), lo, hi)]
        seeds += [lo + (hi - lo) * frac for frac in _restart_fractions(self.n_joints, restarts)]
        best: IKResult | None = None
        used = 0
        # yaw-only targets can be reached turning either way; the short way may run into a limit
        branches = (0, 1, -1) if orientation == "yaw" else (0,)
        attempts = [(seed, k) for seed in seeds for k in branches]
        for seed, branch in attempts:
            result = self._solve(target, seed, rows, tol_m, tol_rad, max_iter, damping, branch)
            used += result.iterations
            if best is None or (result.ok, -result.position_error_m) > (best.ok, -best.position_error_m):
                best = result
            if result.ok:
                break
        assert best is not None
        return IKResult(best.q, best.ok, best.position_error_m, best.rotation_error_rad, used)

    def track(
        self,
        target: np.ndarray,
        q_prev: np.ndarray,
        *,
        orientation: str = "full",
        limit_margin: float = 0.15,
        tol_m: float = 1e-8,
        tol_rad: float = 1e-7,
        max_iter: int = 30,
    ) -> IKResult:
        """Continue a path: joint positions near ``q_prev`` (the previous path point's) reaching ``target``.

        Unlike ``inverse`` (which stops anywhere within its tolerance, so consecutive path points jitter
        by up to that much, and restarts elsewhere when stuck), this converges tightly with undamped
        Newton steps from ``q_prev`` and stays on its branch. On a redundant chain the steps are
        weighted least-norm: a joint within ``limit_margin`` (fraction of its range) of a limit moves
        less the closer it gets (weight 1/distance), so it slows to its limit gradually while the
        other joints take over, instead of stopping there abruptly (which kinks the others' motion).
        A joint that would still pass a limit is held there while the others finish.

        Returns:
            ``IKResult``; ``ok`` tells whether the tolerances were met.
        """
        target = np.asarray(target, dtype=float)
        rows = {"full": [0, 1, 2, 3, 4, 5], "yaw": [0, 1, 2, 5], "none": [0, 1, 2]}.get(orientation)
        if rows is None:
            raise ValueError(f"orientation must be 'full', 'yaw' or 'none', got {orientation!r}")
        q = np.clip(np.asarray(q_prev, dtype=float), self.lower, self.upper)
        finite = np.isfinite(self.lower) & np.isfinite(self.upper)
        margin = np.where(finite, limit_margin * (self.upper - self.lower), np.inf)
        yaw = None
        if 5 in rows and len(rows) < 6:
            pose = self.forward(q)
            yaw = _YawTrack(float(np.arctan2(target[1, 0], target[0, 0])), float(np.arctan2(pose[1, 0], pose[0, 0])), 0)
        held = np.zeros(self.n_joints, dtype=bool)
        e, pos_err, rot_err = self._error(target, q, rows, yaw)
        for it in range(1, max_iter + 1):
            if pos_err <= tol_m and rot_err <= tol_rad:
                return IKResult(q, True, pos_err, rot_err, it - 1)
            jac = self.jacobian(q)[rows]
            scale = np.ones(self.n_joints)  # square root of each joint's inverse weight
            if self.n_joints > len(rows) and limit_margin > 0:
                room = np.minimum(self.upper - q, q - self.lower) / margin
                scale = np.sqrt(np.clip(room, 1e-3, 1.0))
            free = ~held
            dq = np.zeros(self.n_joints)
            dq[free] = scale[free] * (np.linalg.pinv(jac[:, free] * scale[free], rcond=1e-6) @ e)
            step = float(np.max(np.abs(dq)))
            if step > 0.5:  # as in ``inverse``: the linearisation holds only nearby
                dq *= 0.5 / step
            nxt = q + dq
            held |= (nxt < self.lower) | (nxt > self.upper)
            q = np.clip(nxt, self.lower, self.upper)
            e, pos_err, rot_err = self._error(target, q, rows, yaw)
        ok = pos_err <= tol_m and rot_err <= tol_rad
        return IKResult(q, ok, pos_err, rot_err, max_iter)

    def _error(
        self, target: np.ndarray, q: np.ndarray, rows: list[int], yaw: _YawTrack | None
    ) -> tuple[np.ndarray, float, float]:
        pose = self.forward(q)
        err = np.zeros(6)
        err[:3] = target[:3, 3] - pose[:3, 3]
        if len(rows) == 6:
            err[3:] = rotation_error(target[:3, :3], pose[:3, :3])
        elif yaw is not None:  # yaw only: rotation of the tool x axis about base z, unwrapped
            err[5] = yaw.error(float(np.arctan2(pose[1, 0], pose[0, 0])))
        e = err[rows]
        return e, float(np.linalg.norm(err[:3])), float(np.linalg.norm(err[3:]))

    def _solve(
        self,
        target: np.ndarray,
        q: np.ndarray,
        rows: list[int],
        tol_m: float,
        tol_rad: float,
        max_iter: int,
        damping: float,
        branch: int = 0,
    ) -> IKResult:
        q = q.copy()
        yaw = None
        if 5 in rows and len(rows) < 6:
            pose = self.forward(q)
            yaw = _YawTrack(
                float(np.arctan2(target[1, 0], target[0, 0])), float(np.arctan2(pose[1, 0], pose[0, 0])), branch
            )
        e, pos_err, rot_err = self._error(target, q, rows, yaw)
        for it in range(1, max_iter + 1):
            if pos_err <= tol_m and rot_err <= tol_rad:
                return IKResult(q, True, pos_err, rot_err, it - 1)
            jac = self.jacobian(q)[rows]
            jjt = jac @ jac.T + (damping**2) * np.eye(len(rows))
            dq = jac.T @ np.linalg.solve(jjt, e)
            step = float(np.max(np.abs(dq)))
            if step > 0.5:  # keep steps local: the linearisation holds only nearby
                dq *= 0.5 / step
            q = np.clip(q + dq, self.lower, self.upper)
            e, pos_err, rot_err = self._error(target, q, rows, yaw)
        ok = pos_err <= tol_m and rot_err <= tol_rad
        return IKResult(q, ok, pos_err, rot_err, max_iter)


def _restart_fractions(n_joints: int, restarts: int) -> list[np.ndarray]:
    """Where in each joint's range the restarts start: a quarter in from either end, in opposite halves.

    Restart k puts joint i in the lower or upper half by column ``i % 3`` of a two-level orthogonal
    array, (0,0,0) (1,0,1) (0,1,1) (1,1,0), then the complements: within four restarts every joint tries
    both halves and any two of three consecutive joints every pairing of halves (a SCARA's shoulder and
    elbow: both turning directions and both elbows), within eight all eight triples. Later restarts keep
    the pattern, closer to mid-range. Deterministic: the same target gives the same answer.
    """
    out = []
    for k in range(restarts):
        a, b, flip = k & 1, (k >> 1) & 1, (k >> 2) & 1
        column = (a, b, a ^ b)
        spread = 0.25 / (1 + k // 8)
        out.append(np.array([0.5 + spread * (1 if column[i % 3] ^ flip else -1) for i in range(n_joints)]))
    return out


def _perpendicular_norm(vec: np.ndarray, axis: np.ndarray) -> float:
    """Length of the part of ``vec`` perpendicular to the unit vector ``axis``."""
    return float(np.linalg.norm(vec - (vec @ axis) * axis))


def _wrap(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


class _YawTrack:
    """Yaw error measured continuously (unwrapped) towards a goal fixed on one turning branch."""

    def __init__(self, target_yaw: float, start_yaw: float, branch: int) -> None:
        self._last = start_yaw
        self._unwrapped = start_yaw
        self._goal = start_yaw + _wrap(target_yaw - start_yaw) + 2 * np.pi * branch

    def error(self, yaw: float) -> float:
        self._unwrapped += _wrap(yaw - self._last)
        self._last = yaw
        return self._goal - self._unwrapped
