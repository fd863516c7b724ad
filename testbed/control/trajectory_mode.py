"""Trajectory mode: follow a joint trajectory with path and goal tolerances, new replaces old."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from testbed.control.lifecycle import LifecycleState
from testbed.control.loop import ControlLoop
from testbed.control.trajectory import BoundTrajectory, JointTrajectory, sample_rows


@dataclass(frozen=True)
class TrajectoryStatus:
    """Where the trajectory being followed stands.

    Args:
        state: ``idle``, ``executing``, ``succeeded`` or ``aborted``.
        reason: why it aborted (``path_tolerance``, ``goal_tolerance``, ``controller_stopped``), else ``""``.
    """

    state: str
    reason: str = ""


class TrajectoryController:
    """Feeds one robot of a ``ControlLoop`` from joint trajectories (ros2 joint_trajectory_controller style).

    Args:
        loop: the control loop.
        robot: robot index in the loop.
        path_tolerance: largest |measured - desired| per joint while moving (scalar or per joint);
            beyond it the trajectory aborts and the robot holds.
        goal_tolerance: largest |measured - final| per joint to call the goal reached.
        goal_time_tolerance_s: how long after the last point the goal may still be reached.
        row_dt_s: spacing of the rows the trajectory is sampled into for the loop.
    """

    def __init__(
        self,
        loop: ControlLoop,
        robot: int,
        *,
        path_tolerance: float | np.ndarray = 0.1,
        goal_tolerance: float | np.ndarray = 0.01,
        goal_time_tolerance_s: float = 0.5,
        row_dt_s: float = 0.004,
    ) -> None:
        self._loop = loop
        self._robot = robot
        self._n = int(loop.joint_mask[robot].sum())
        self._path_tol = np.broadcast_to(np.asarray(path_tolerance, float), (self._n,))
        self._goal_tol = np.broadcast_to(np.asarray(goal_tolerance, float), (self._n,))
        self._goal_time = float(goal_time_tolerance_s)
        self._row_dt = float(row_dt_s)
        self._active: BoundTrajectory | None = None
        self._t0 = 0.0
        self._status = TrajectoryStatus("idle")

    @property
    def status(self) -> TrajectoryStatus:
        """The current status."""
        return self._status

    def follow(self, traj: JointTrajectory, t_s: float) -> None:
        """Start ``traj`` at ``t_s`` from the current set-point, replacing any trajectory in progress."""
        n = self._n
        start = self._loop.setpoint[self._robot, :n].copy()
        vel = self._loop.setpoint_vel[self._robot, :n].copy()
        self._active = traj.bind(start, vel)
        self._t0 = t_s
        self._loop.submit_chunk(self._robot, sample_rows(self._active, self._row_dt), t_s, self._row_dt,
                                hold_after=True)
        self._status = TrajectoryStatus("executing")

    def tick(self, t_s: float, measured: np.ndarray) -> TrajectoryStatus:
        """Check tolerances at ``t_s`` against the robot's measured joint positions ``(n_joints,)``."""
        if self._active is None or self._status.state != "executing":
            return self._status
        if self._loop.state(self._robot) is not LifecycleState.ACTIVE:
            return self._abort("controller_stopped")
        t = t_s - self._t0
        meas = np.asarray(measured, float)[: self._n]
        if t <= self._active.duration_s:
            desired = self._active.sample(t)[0]
            if np.any(np.abs(meas - desired) > self._path_tol):
                return self._abort("path_tolerance")
            return self._status
        if np.all(np.abs(meas - self._active.end) <= self._goal_tol):
            self._status = TrajectoryStatus("succeeded")
        elif t > self._active.duration_s + self._goal_time:
            return self._abort("goal_tolerance")
        return self._status

    def _abort(self, reason: str) -> TrajectoryStatus:
        if self._loop.state(self._robot) is LifecycleState.ACTIVE:
            self._loop.hold(self._robot)
        self._status = TrajectoryStatus("aborted", reason)
        return self._status
