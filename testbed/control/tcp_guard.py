"""TCP speed supervision of streamed motion: the loop holds the tool to its limit, the guard checks it.

The loop holds each limited robot's set-point to a conservative bound of its TCP speed every
cycle (``ControlLoop.limit_tcp_speed``, set up by the guard); the guard checks the set-point's
exact TCP speed from each robot's kinematics every few cycles, outside the vectorized hot path,
and makes a protective stop if it is ever above the limit. Job-mode motions are planned below
the limit already.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from testbed.control.kinematics import KinematicChain
from testbed.control.lifecycle import LifecycleState
from testbed.control.loop import ControlLoop
from testbed.errors import ControllerError


class TcpSpeedGuard:
    """Holds robots to their TCP speed limit in the loop, and stops any whose TCP set-point speed still exceeds it.

    Args:
        loop: the control loop whose set-points are checked.
        models: robot models in loop order (``urdf_path``, ``tcp_link``, ``tcp_speed_m_s``,
            ``reduced_tcp_speed_m_s``).
        reduced: use each model's reduced-speed limit (collaborative / reduced-speed mode).
        limits_m_s: explicit per-robot limits overriding the models' (e.g. from a site's safety profile);
            ``inf`` for a robot that is not limited.
        every_n_ticks: check once every this many calls to ``check``.
        chains: kinematics per robot (default: built from each model's URDF).
        hold: also have the loop hold every robot's set-point to its limit each cycle
            (``ControlLoop.limit_tcp_speed``); without it the guard only monitors and stops.
    """

    def __init__(
        self,
        loop: ControlLoop,
        models: Sequence[Any],
        *,
        reduced: bool = False,
        limits_m_s: Sequence[float] | None = None,
        every_n_ticks: int = 4,
        chains: Sequence[KinematicChain] | None = None,
        hold: bool = True,
    ) -> None:
        if len(models) != loop.n_robots:
            raise ControllerError(f"TcpSpeedGuard: {len(models)} models for a loop of {loop.n_robots} robots")
        self._loop = loop
        self._chains = list(chains) if chains is not None else [
            KinematicChain.from_urdf(m.urdf_path, m.tcp_link) for m in models
        ]
        if limits_m_s is not None:
            limits = [float(x) for x in limits_m_s]
        else:
            key = "reduced_tcp_speed_m_s" if reduced else "tcp_speed_m_s"
            limits = [float(getattr(m, key)) for m in models]
        if len(limits) != loop.n_robots or not all(x > 0 for x in limits):
            raise ControllerError(f"TcpSpeedGuard: need one TCP speed limit > 0 per robot, got {limits}")
        self.limits_m_s = np.array(limits)
        self._n = [int(k) for k in loop.joint_mask.sum(axis=1)]
        self._every = max(1, int(every_n_ticks))
        self._count = 0
        self.last_speeds_m_s = np.zeros(loop.n_robots)
        self._hold = hold
        if hold:
            loop.limit_tcp_speed(self.limits_m_s, [chain.axis_reach_m() for chain in self._chains])

    def reset(self) -> None:
        """Start over as if new: at a new episode, right after ``ControlLoop.reset``.

        The next check is ``every_n_ticks`` calls away again (``ControlLoop.reset`` has already put
        the loop's TCP bound back to the whole range's), so an episode's checks and set-points do
        not depend on the episodes run before it.
        """
        self._count = 0
        self.last_speeds_m_s.fill(0.0)

    def check(self) -> list[int]:
        """Check (every ``every_n_ticks`` calls) and protective-stop too-fast robots; returns their indices.

        Call it after each tick. With ``hold``, each check also gives the loop the axis distances at the
        current set-points (``ControlLoop.narrow_tcp_reach``), which lets the loop's bound sit much closer
        to the true speed than the whole-range reach does.
        """
        self._count += 1
        if self._count % self._every:
            return []
        sp, vel = self._loop.setpoint, self._loop.setpoint_vel
        stopped = []
        for r, chain in enumerate(self._chains):
            if self._loop.state(r) is not LifecycleState.ACTIVE or not np.isfinite(self.limits_m_s[r]):
                continue
            n = self._n[r]
            linear = chain.jacobian(sp[r, :n])[:3]
            speed = float(np.linalg.norm(linear @ vel[r, :n]))
            self.last_speeds_m_s[r] = speed
            if self._hold:  # the loop's bound from the axis distances here, not the whole range's
                self._loop.narrow_tcp_reach(r, np.linalg.norm(linear, axis=0))
            if speed > self.limits_m_s[r]:
                self._loop.protective_stop(
                    r, f"tcp_speed: {speed * 1e3:.0f} mm/s exceeds the limit {self.limits_m_s[r] * 1e3:.0f} mm/s"
                )
                stopped.append(r)
        return stopped
