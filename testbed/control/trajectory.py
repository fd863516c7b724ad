"""Trajectory generation: jerk-limited point-to-point, Cartesian lines and arcs, joint trajectories.

Every motion answers ``sample(t_s) -> (pos, vel, acc)`` over ``[0, duration_s]`` and holds
its end afterwards, so the job runner and the trajectory controller can sample any of
them into chunks for ``ControlLoop.submit_chunk``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from ruckig import InputParameter, Result, Ruckig, Synchronization, Trajectory

from testbed.control.kinematics import KinematicChain, axis_angle_matrix, rotation_error
from testbed.errors import ControllerError


class JointMotion(Protocol):
    """A joint-space motion of known duration."""

    duration_s: float
    start: np.ndarray
    end: np.ndarray

    def sample(self, t_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position, velocity and acceleration at ``t_s`` from the motion's start (held after the end)."""
        ...


def sample_rows(motion: JointMotion, dt_s: float, t_from_s: float = 0.0) -> np.ndarray:
    """Positions of ``motion`` every ``dt_s`` from ``t_from_s`` through its end, ``(rows, n_joints)``."""
    n = max(1, math.ceil((motion.duration_s - t_from_s) / dt_s - 1e-9) + 1)
    times = t_from_s + np.arange(n) * dt_s
    many = getattr(motion, "sample_many", None)
    if many is not None:
        return many(times)
    return np.array([motion.sample(t)[0] for t in times])


END_TOLERANCE = 1e-12  # how far (relative, plus absolute) a planned motion may end from its target


class PtpMotion:
    """Jerk-limited, time-synchronized point-to-point motion of all joints (ruckig).

    Args:
        start, end: joint positions ``(n_joints,)``.
        velocity, acceleration, jerk: per-joint limits (already scaled by any speed override).
        start_vel, start_acc: initial state (default rest).

    Raises:
        ControllerError: non-finite input or limits ruckig refuses.
    """

    def __init__(
        self,
        start: np.ndarray,
        end: np.ndarray,
        velocity: np.ndarray,
        acceleration: np.ndarray,
        jerk: np.ndarray,
        start_vel: np.ndarray | None = None,
        start_acc: np.ndarray | None = None,
    ) -> None:
        self.start = np.asarray(start, dtype=float).copy()
        self.end = np.asarray(end, dtype=float).copy()
        n = self.start.size
        arrays = (self.start, self.end, velocity, acceleration, jerk)
        if not all(np.all(np.isfinite(a)) for a in arrays):
            raise ControllerError(f"PtpMotion: non-finite start/end/limits: {self.start} -> {self.end}")
        self._otg = Ruckig(n)
        inp = InputParameter(n)
        inp.current_position = self.start.tolist()
        inp.current_velocity = (np.zeros(n) if start_vel is None else np.asarray(start_vel, float)).tolist()
        inp.current_acceleration = (np.zeros(n) if start_acc is None else np.asarray(start_acc, float)).tolist()
        inp.target_position = self.end.tolist()
        inp.max_velocity = np.asarray(velocity, float).tolist()
        inp.max_acceleration = np.asarray(acceleration, float).tolist()
        inp.max_jerk = np.asarray(jerk, float).tolist()
        # ruckig accepts a profile whose end is within its absolute position precision (~1e-8) of the
        # target; on a tiny move the time-synchronized profile of a joint can stop that far short. Such
        # a plan is redone phase-synchronized (all joints on one normalized profile), then unsynchronized.
        for sync in (None, Synchronization.Phase, Synchronization.No):
            if sync is not None:
                inp.synchronization = sync
            self._traj = Trajectory(n)
            result = self._otg.calculate(inp, self._traj)
            if result not in (Result.Working, Result.Finished):
                raise ControllerError(f"PtpMotion: ruckig could not plan {self.start} -> {self.end}: {result}")
            reached = np.asarray(self._traj.at_time(self._traj.duration)[0])
            if np.all(np.abs(reached - self.end) <= END_TOLERANCE * (1.0 + np.abs(self.end))):
                break
        else:
            raise ControllerError(f"PtpMotion: ruckig's plan {self.start} -> {self.end} ends at {reached}")
        self.duration_s = float(self._traj.duration)

    def sample(self, t_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position, velocity, acceleration at ``t_s`` (clamped to ``[0, duration_s]``)."""
        pos, vel, acc = self._traj.at_time(min(max(t_s, 0.0), self.duration_s))
        if t_s >= self.duration_s:
            return np.asarray(pos), np.zeros(self.start.size), np.zeros(self.start.size)
        return np.asarray(pos), np.asarray(vel), np.asarray(acc)


class SampledMotion:
    """A motion given as joint rows on a uniform time grid, interpolated linearly."""

    def __init__(self, rows: np.ndarray, dt_s: float) -> None:
        self.rows = np.asarray(rows, dtype=float)
        self.dt_s = float(dt_s)
        self.duration_s = (len(self.rows) - 1) * self.dt_s
        self.start = self.rows[0]
        self.end = self.rows[-1]

    def sample(self, t_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position, finite-difference velocity and zero acceleration at ``t_s``."""
        if t_s >= self.duration_s or len(self.rows) == 1:
            return self.end.copy(), np.zeros_like(self.end), np.zeros_like(self.end)
        u = max(t_s, 0.0) / self.dt_s
        i = min(int(u), len(self.rows) - 2)
        f = u - i
        vel = (self.rows[i + 1] - self.rows[i]) / self.dt_s
        return self.rows[i] + f * (self.rows[i + 1] - self.rows[i]), vel, np.zeros_like(self.end)


def trapezoid_profile(length: float, speed: float, accel: float) -> tuple[float, Callable[[float], float]]:
    """Time-optimal rest-to-rest trapezoidal profile over ``length``.

    Returns:
        ``(duration_s, s(t))`` with ``s`` the distance covered at time ``t``.
    """
    if length <= 0:
        return 0.0, lambda t: 0.0
    t_acc = speed / accel
    if accel * t_acc * t_acc >= length:  # triangle: never reaches cruise speed
        t_acc = math.sqrt(length / accel)
        speed = accel * t_acc
    d_acc = 0.5 * accel * t_acc * t_acc
    t_cruise = (length - 2 * d_acc) / speed
    total = 2 * t_acc + t_cruise

    def s(t: float) -> float:
        t = min(max(t, 0.0), total)
        if t < t_acc:
            return 0.5 * accel * t * t
        if t < t_acc + t_cruise:
            return d_acc + speed * (t - t_acc)
        r = total - t
        return length - 0.5 * accel * r * r

    return total, s


@dataclass(frozen=True)
class CartesianPath:
    """A TCP path: ``pose(u)`` for ``u`` in [0, 1] and its length in metres."""

    pose: Callable[[float], np.ndarray]
    length_m: float


REORIENT_SPEED_RAD_S = 0.5  # a path that only turns the tool is timed on its angle at this speed ...
REORIENT_ACCEL_RAD_S2 = 2.0  # ... and acceleration


def path_profile(path: CartesianPath, speed_m_s: float, accel_m_s2: float,
                 slowdown: float = 1.0) -> tuple[float, Callable[[float], float], float]:
    """The trapezoid a TCP path is timed on: ``(duration_s, s(t), length)``, the path's ``u`` being ``s(t) / length``.

    Speed and acceleration are slowed uniformly by ``slowdown`` (speed / k, acceleration / k^2: the same
    motion ``k`` times longer). A path without length that turns the tool is timed on its rotation angle
    (``length`` is then that angle, rad) at ``REORIENT_SPEED_RAD_S``/``REORIENT_ACCEL_RAD_S2``, slowed alike.
    """
    duration, s_of_t = trapezoid_profile(path.length_m, speed_m_s / slowdown, accel_m_s2 / slowdown**2)
    rot_len = float(np.linalg.norm(rotation_error(path.pose(1.0)[:3, :3], path.pose(0.0)[:3, :3])))
    if duration == 0.0 and rot_len > 0:
        duration, s_of_t = trapezoid_profile(rot_len, REORIENT_SPEED_RAD_S / slowdown,
                                             REORIENT_ACCEL_RAD_S2 / slowdown**2)
        return duration, s_of_t, rot_len
    return duration, s_of_t, max(path.length_m, 1e-12)


def peak_tcp_speed(chain: KinematicChain, rows: np.ndarray, dt_s: float) -> float:
    """Highest TCP speed (m/s) between consecutive joint rows ``dt_s`` apart, by forward kinematics; 0 for one row."""
    if len(rows) < 2:
        return 0.0
    tips = np.array([chain.forward(q)[:3, 3] for q in rows])
    return float(np.max(np.linalg.norm(np.diff(tips, axis=0), axis=1))) / dt_s


def line_path(start: np.ndarray, end: np.ndarray) -> CartesianPath:
    """Straight line between two 4x4 poses, orientation turned at a constant rate (slerp)."""
    rot_vec = rotation_error(end[:3, :3], start[:3, :3])
    angle = float(np.linalg.norm(rot_vec))
    axis = rot_vec / angle if angle > 1e-12 else np.array([0.0, 0.0, 1.0])

    def pose(u: float) -> np.ndarray:
        out = np.eye(4)
        out[:3, 3] = start[:3, 3] + u * (end[:3, 3] - start[:3, 3])
        out[:3, :3] = axis_angle_matrix(axis, u * angle) @ start[:3, :3]
        return out

    return CartesianPath(pose, float(np.linalg.norm(end[:3, 3] - start[:3, 3])))


def arc_path(start: np.ndarray, via: np.ndarray, end: np.ndarray) -> CartesianPath:
    """Circular arc from ``start`` through ``via`` to ``end`` (4x4 poses; orientation slerped start->end).

    Raises:
        ControllerError: the three positions are (nearly) collinear or coincide.
    """
    p0, p1, p2 = start[:3, 3], via[:3, 3], end[:3, 3]
    a, b = p1 - p0, p2 - p0
    normal = np.cross(a, b)
    nn = float(np.dot(normal, normal))
    if nn < 1e-12:
        raise ControllerError("circular move: start, via and end points are collinear; no unique circle")
    centre = p0 + (np.dot(b, b) * np.cross(normal, a) + np.dot(a, a) * np.cross(b, normal)) / (2 * nn)
    radius = float(np.linalg.norm(p0 - centre))
    e1 = (p0 - centre) / radius
    n_hat = normal / math.sqrt(nn)
    e2 = np.cross(n_hat, e1)

    def angle_of(p: np.ndarray) -> float:
        v = p - centre
        return math.atan2(float(v @ e2), float(v @ e1)) % (2 * math.pi)

    sweep = angle_of(p2)  # the via point lies between 0 and sweep by construction of the normal
    orient = line_path(start, end)

    def pose(u: float) -> np.ndarray:
        out = orient.pose(u)
        th = u * sweep
        out[:3, 3] = centre + radius * (math.cos(th) * e1 + math.sin(th) * e2)
        return out

    return CartesianPath(pose, radius * sweep)


def plan_cartesian(
    chain: KinematicChain,
    q_start: np.ndarray,
    path: CartesianPath,
    speed_m_s: float,
    accel_m_s2: float,
    joint_velocity: np.ndarray,
    *,
    orientation: str = "full",
    dt_s: float = 0.004,
) -> SampledMotion:
    """Sample a TCP path into joint rows by IK, slowing down where joints would be too fast.

    Args:
        chain: kinematics of the robot.
        q_start: joint positions at the path's start.
        path: the TCP path (its pose(0) should be FK(q_start)).
        speed_m_s, accel_m_s2: TCP speed and acceleration along the path.
        joint_velocity: per-joint velocity limits; the timing stretches to respect them.
        orientation: IK mode, see ``KinematicChain.inverse``.
        dt_s: spacing of the joint rows.

    Raises:
        ControllerError: a point of the path has no IK solution within the joint limits
            (the message gives the fraction of the path and the remaining error).
    """
    duration, s_of_t, length = path_profile(path, speed_m_s, accel_m_s2)
    n = max(2, math.ceil(duration / dt_s) + 1)
    times = np.linspace(0.0, duration, n)
    rows = np.zeros((n, chain.n_joints))
    q = np.asarray(q_start, dtype=float)
    for k, t in enumerate(times):
        u = s_of_t(float(t)) / length if duration > 0 else 1.0
        result = chain.inverse(path.pose(u), q, orientation=orientation, restarts=0, max_iter=100)
        if not result.ok:
            raise ControllerError(
                f"path unreachable at {100 * u:.0f}% of its length: IK error {result.position_error_m * 1e3:.2f} mm, "
                f"{math.degrees(result.rotation_error_rad):.2f} deg within the joint limits"
            )
        q = result.q
        rows[k] = q
    # stretch time where joints would exceed their velocity limits (the controller slows down)
    step_dt = duration / (n - 1) if n > 1 else dt_s
    need = np.max(np.abs(np.diff(rows, axis=0)) / joint_velocity, axis=1) if n > 1 else np.zeros(0)
    scale = max(1.0, float(need.max()) / step_dt) if need.size and step_dt > 0 else 1.0
    return SampledMotion(rows, max(step_dt * scale, 1e-6))


# --------------------------------------------------------------------------- joint trajectories
@dataclass(frozen=True)
class TrajectoryPoint:
    """One point of a joint trajectory (like trajectory_msgs/JointTrajectoryPoint).

    Args:
        positions: ``(n_joints,)``.
        time_from_start_s: when to be there, from the trajectory's start.
        velocities, accelerations: optional; their presence selects cubic / quintic interpolation.
    """

    positions: Sequence[float]
    time_from_start_s: float
    velocities: Sequence[float] | None = None
    accelerations: Sequence[float] | None = None


class JointTrajectory:
    """A time-parameterized joint trajectory, interpolated as the ros2 joint_trajectory_controller does.

    Linear between points that carry only positions, cubic (Hermite) when they carry
    velocities, quintic when they also carry accelerations. The first segment starts
    from the state the trajectory is accepted in.

    Raises:
        ControllerError: empty, wrong sizes, non-finite values, times not increasing, or
            points that mix interpolation kinds (naming the point index).
    """

    def __init__(self, points: Sequence[TrajectoryPoint], n_joints: int) -> None:
        if not points:
            raise ControllerError("joint trajectory: no points")
        kinds = set()
        last_t = 0.0
        for i, p in enumerate(points):
            for field in ("positions", "velocities", "accelerations"):
                v = getattr(p, field)
                if v is None:
                    continue
                arr = np.asarray(v, dtype=float)
                if arr.shape != (n_joints,) or not np.all(np.isfinite(arr)):
                    raise ControllerError(
                        f"joint trajectory point {i}: {field} must be {n_joints} finite numbers, got {list(v)}"
                    )
            if not (math.isfinite(p.time_from_start_s) and p.time_from_start_s > last_t):
                raise ControllerError(
                    f"joint trajectory point {i}: time_from_start_s must increase (> {last_t}), "
                    f"got {p.time_from_start_s}"
                )
            last_t = p.time_from_start_s
            if p.accelerations is not None and p.velocities is None:
                raise ControllerError(f"joint trajectory point {i}: accelerations need velocities too")
            kinds.add("quintic" if p.accelerations is not None else "cubic" if p.velocities is not None else "linear")
        if len(kinds) > 1:
            raise ControllerError(
                f"joint trajectory: points mix interpolation kinds {sorted(kinds)}; give every point the same fields"
            )
        self.kind = kinds.pop()
        self.points = list(points)
        self.n_joints = n_joints
        self.duration_s = last_t
        self._t = np.array([0.0] + [p.time_from_start_s for p in points])
        self._pos = np.array([[0.0] * n_joints] + [list(p.positions) for p in points])
        zeros = [[0.0] * n_joints]
        self._vel = np.array(zeros + [list(p.velocities or [0.0] * n_joints) for p in points])
        self._acc = np.array(zeros + [list(p.accelerations or [0.0] * n_joints) for p in points])

    def bind(self, start_pos: np.ndarray, start_vel: np.ndarray | None = None) -> BoundTrajectory:
        """This trajectory starting from the given state (the state it is accepted in)."""
        return BoundTrajectory(self, np.asarray(start_pos, float), start_vel)


class BoundTrajectory:
    """A ``JointTrajectory`` with its start state: a ``JointMotion``.

    Each segment is a polynomial in the time since its first point, ``sum(c[k] * tau**k)``;
    the coefficients are worked out once here, so sampling is a lookup and a Horner pass.
    """

    def __init__(self, traj: JointTrajectory, start_pos: np.ndarray, start_vel: np.ndarray | None) -> None:
        self.traj = traj
        pos = traj._pos.copy()
        vel = traj._vel.copy()
        acc = traj._acc.copy()
        pos[0] = start_pos
        if start_vel is not None and traj.kind != "linear":
            vel[0] = start_vel
        self.duration_s = traj.duration_s
        self.start = pos[0].copy()
        self.end = pos[-1].copy()
        self._coef = _segment_coefficients(traj.kind, np.diff(traj._t), pos, vel, acc)  # (segments, 6, joints)

    def sample(self, t_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position, velocity, acceleration at ``t_s`` from the start (held after the last point)."""
        ts = self.traj._t
        if t_s >= ts[-1]:
            z = np.zeros_like(self.end)
            return self.end.copy(), z, z.copy()
        t_s = max(t_s, 0.0)
        i = int(np.searchsorted(ts, t_s, side="right")) - 1
        c = self._coef[i]
        tau = t_s - ts[i]
        powers = tau ** np.arange(6)
        pos = powers @ c
        vel = (np.arange(1, 6) * powers[:5]) @ c[1:]
        acc = (np.arange(2, 6) * np.arange(1, 5) * powers[:4]) @ c[2:]
        return pos, vel, acc

    def sample_many(self, times_s: np.ndarray) -> np.ndarray:
        """Positions at many times at once, ``(len(times_s), n_joints)`` (held after the last point)."""
        ts = self.traj._t
        t = np.clip(np.asarray(times_s, dtype=float), 0.0, ts[-1])
        seg = np.clip(np.searchsorted(ts, t, side="right") - 1, 0, len(ts) - 2)
        tau = (t - ts[seg])[:, None]
        c = self._coef[seg]  # (times, 6, joints)
        out = c[:, 5]
        for k in range(4, -1, -1):
            out = out * tau + c[:, k]
        return out


def _segment_coefficients(kind: str, h: np.ndarray, pos: np.ndarray, vel: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Polynomial coefficients per segment, ``(segments, 6, joints)``, lowest power first."""
    p0, p1, v0, v1, a0, a1 = pos[:-1], pos[1:], vel[:-1], vel[1:], acc[:-1], acc[1:]
    h = h[:, None]
    coef = np.zeros((len(h), 6, pos.shape[1]))
    coef[:, 0] = p0
    if kind == "linear":
        coef[:, 1] = (p1 - p0) / h
    elif kind == "cubic":
        coef[:, 1] = v0
        coef[:, 2] = (3 * (p1 - p0) - (2 * v0 + v1) * h) / h**2
        coef[:, 3] = (2 * (p0 - p1) + (v0 + v1) * h) / h**3
    else:  # quintic: position, velocity and acceleration met at both ends
        coef[:, 1] = v0
        coef[:, 2] = a0 / 2
        coef[:, 3] = (20 * (p1 - p0) - (8 * v1 + 12 * v0) * h - (3 * a0 - a1) * h**2) / (2 * h**3)
        coef[:, 4] = (30 * (p0 - p1) + (14 * v1 + 16 * v0) * h + (3 * a0 - 2 * a1) * h**2) / (2 * h**4)
        coef[:, 5] = (12 * (p1 - p0) - 6 * (v1 + v0) * h - (a0 - a1) * h**2) / (2 * h**5)
    return coef
