"""The built-in expert: solves the pick-and-sort task from privileged state with inverse kinematics.

It is an ordinary policy (``spec``/``reset``/``act``), so it runs in-process or
behind ``testbed serve-policy expert`` unchanged. It keeps its own headless
pybullet client holding only the robot, at the origin, for inverse kinematics:
observations arrive in the robot's base frame, so the cell layout does not matter.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pybullet as p

from testbed.errors import SpecMismatch
from testbed.policies.observations import ENV_STATE_DIM
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec
from testbed.robots import RobotModel, load_robot

TCP_PATH_MARGIN = 1.2


class Phase(enum.Enum):
    WAIT = "wait"
    APPROACH = "approach"
    DESCEND = "descend"
    GRIP = "grip"
    LIFT = "lift"
    TRANSFER = "transfer"
    RELEASE = "release"
    RETREAT = "retreat"


@dataclass
class Segment:
    """A planned joint motion through waypoints, timed in policy steps."""

    waypoints: np.ndarray  # (points, joints), first row the start
    start_step: int
    duration_steps: float
    suction: bool

    def sample(self, step: float) -> np.ndarray:
        """Joint targets at policy step ``step`` along a minimum-jerk timing law."""
        tau = min(max((step - self.start_step) / max(self.duration_steps, 1e-9), 0.0), 1.0)
        s = tau**3 * (10 - 15 * tau + 6 * tau**2)
        x = s * (len(self.waypoints) - 1)
        i = min(int(x), len(self.waypoints) - 2)
        frac = x - i
        return self.waypoints[i] * (1 - frac) + self.waypoints[i + 1] * frac

    @property
    def goal(self) -> np.ndarray:
        return self.waypoints[-1]


class ExpertPolicy:
    """Privileged-state pick-and-place expert for the conveyor sort cell.

    Args:
        robot: robot model name under ``robots/``.
        control_hz: rate the run loop asks for chunks.
        chunk_size: rows per chunk.
        speed_fraction: share of the joint speed limits the plan uses.
        tcp_speed_m_s: also keep the planned TCP speed under this (e.g. a reduced-speed cell).
    """

    def __init__(self, robot: str = "gp7", control_hz: float | str = 20.0, chunk_size: int | str = 10,
                 speed_fraction: float | str = 0.5, tcp_speed_m_s: float | str | None = None) -> None:
        self.model: RobotModel = load_robot(robot)
        self.control_hz = float(control_hz)
        self.chunk_size = int(chunk_size)
        self.speed_fraction = float(speed_fraction)
        self.tcp_speed_m_s = None if tcp_speed_m_s in (None, "") else float(tcp_speed_m_s)
        self.n = self.model.n_joints
        self._client = p.connect(p.DIRECT)
        self._body = p.loadURDF(str(self.model.urdf_path), useFixedBase=True, physicsClientId=self._client)
        names = {}
        for j in range(p.getNumJoints(self._body, physicsClientId=self._client)):
            info = p.getJointInfo(self._body, j, physicsClientId=self._client)
            names[info[1].decode()] = j
            if info[12].decode() == self.model.tcp_link:
                self._tcp = j
        self._joints = [names[n] for n in self.model.joint_names]
        self._movable = [j for j in range(p.getNumJoints(self._body, physicsClientId=self._client))
                         if p.getJointInfo(self._body, j, physicsClientId=self._client)[2] != p.JOINT_FIXED]
        self._position_only = self.model.kind == "scara"
        # keep the tool orientation of the home pose (tool down, wrist untwisted) for every target
        self._set(self.model.home)
        self._tool_down = p.getLinkState(self._body, self._tcp, computeForwardKinematics=True,
                                         physicsClientId=self._client)[5]
        self.reset(0)

    def spec(self) -> PolicySpec:
        return PolicySpec(
            observation={
                "observation.state": TensorSpec("float32", (self.n + 1,)),
                "observation.environment_state": TensorSpec("float32", (ENV_STATE_DIM,)),
            },
            action_kind=ActionKind.JOINT_POSITIONS,
            action_dim=self.n + 1,
            chunk_size=self.chunk_size,
            control_hz=self.control_hz,
            model_name=f"expert-{self.model.name}",
            model_version="1",
        )

    def reset(self, episode: int) -> None:
        self._phase = Phase.WAIT
        self._segment: Segment | None = None
        self._step = 0
        self._phase_start = 0
        self._target: np.ndarray | None = None

    # ---- acting -------------------------------------------------------------------------------------------

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        state = np.asarray(obs["observation.state"], dtype=np.float64)
        env = np.asarray(obs["observation.environment_state"], dtype=np.float64)
        if state.shape != (self.n + 1,) or env.shape != (ENV_STATE_DIM,):
            raise SpecMismatch(f"expert for {self.model.name}: expected state ({self.n + 1},) and environment "
                               f"({ENV_STATE_DIM},), got {state.shape} and {env.shape}")
        q = state[: self.n]
        if self._segment is None:
            self._segment = Segment(q[None, :].repeat(2, axis=0), self._step, 1, False)
        self._advance(q, env)
        chunk = np.empty((self.chunk_size, self.n + 1), dtype=np.float32)
        for k in range(self.chunk_size):
            chunk[k, : self.n] = self._segment.sample(self._step + k)
            chunk[k, self.n] = 1.0 if self._segment.suction else 0.0
        self._step += 1
        return chunk

    def _advance(self, q: np.ndarray, env: np.ndarray) -> None:
        part = env[0:3]
        top_z = env[4]
        ready = env[6] > 0.5
        holding = env[7] > 0.5
        bin_top = env[8:11]
        seg = self._segment
        assert seg is not None
        done = self._step >= seg.start_step + seg.duration_steps and float(np.max(np.abs(q - seg.goal))) < 0.03
        in_phase = self._step - self._phase_start
        phase = self._phase
        if phase is Phase.WAIT:
            if holding:
                self._go(Phase.LIFT, q, [(*part[:2], top_z + 0.12)], suction=True)
            elif ready:
                self._go(Phase.APPROACH, q, [(*part[:2], top_z + 0.08)], suction=False)
        elif phase is Phase.APPROACH and done:
            self._go(Phase.DESCEND, q, [(*part[:2], top_z + 0.002)], suction=True, speed=0.3)
        elif phase is Phase.DESCEND and (holding or done):
            self._hold(Phase.GRIP, suction=True)
        elif phase is Phase.GRIP:
            if holding and in_phase >= 2:
                self._go(Phase.LIFT, q, [(*part[:2], top_z + 0.12)], suction=True, speed=0.5)
            elif in_phase > self.control_hz * 0.6:
                self._go(Phase.APPROACH, q, [(*part[:2], top_z + 0.08)], suction=False)  # retry the grip
        elif phase is Phase.LIFT and done:
            if not holding:
                self._go(Phase.RETREAT, q, [], suction=False, joint_goal=self.model.home)
            else:
                start = self._fk(self._segment.sample(self._step))
                goal = np.array([bin_top[0], bin_top[1], bin_top[2] + 0.10])
                via = [start + (goal - start) * f for f in (0.25, 0.5, 0.75)]
                for v in via:
                    v[2] = max(v[2], start[2], goal[2])
                self._go(Phase.TRANSFER, q, [*via, goal], suction=True)
        elif phase is Phase.TRANSFER and done:
            self._hold(Phase.RELEASE, suction=False)
        elif phase is Phase.RELEASE and in_phase >= self.control_hz * 0.3:
            self._go(Phase.RETREAT, q, [], suction=False, joint_goal=self.model.home)
        elif phase is Phase.RETREAT and (done or ready):
            self._hold(Phase.WAIT, suction=False)

    def _hold(self, phase: Phase, *, suction: bool) -> None:
        assert self._segment is not None
        # hold where the plan is now: a segment cut short must not jump to its goal
        here = self._segment.sample(self._step)
        self._segment = Segment(here[None, :].repeat(2, axis=0), self._step, 1, suction)
        self._phase, self._phase_start = phase, self._step

    def _go(self, phase: Phase, q: np.ndarray, points: list, *, suction: bool, speed: float = 1.0,
            joint_goal: np.ndarray | None = None) -> None:
        assert self._segment is not None
        start = self._segment.sample(self._step)
        waypoints = [start]
        seed = start
        for point in points:
            seed = self._ik(np.asarray(point, dtype=np.float64), seed)
            waypoints.append(seed)
        if joint_goal is not None:
            waypoints.append(np.asarray(joint_goal, dtype=np.float64))
        path = np.asarray(waypoints)
        travel = np.sum(np.abs(np.diff(path, axis=0)), axis=0)
        vmax = self.model.velocity * self.speed_fraction * speed
        # a minimum-jerk profile peaks at 1.875x the mean speed
        duration_s = max(float(np.max(1.875 * travel / vmax)), 0.25)
        if self.tcp_speed_m_s is not None:
            # joint interpolation between waypoints bows the TCP path: keep a margin over the chord length
            tcp = np.array([self._fk(q) for q in path])
            length = float(np.sum(np.linalg.norm(np.diff(tcp, axis=0), axis=1)))
            duration_s = max(duration_s, 1.875 * TCP_PATH_MARGIN * length / self.tcp_speed_m_s)
        self._segment = Segment(path, self._step, duration_s * self.control_hz, suction)
        self._phase, self._phase_start = phase, self._step

    # ---- kinematics -------------------------------------------------------------------------------------

    def _set(self, q: np.ndarray) -> None:
        for j, v in zip(self._joints, q, strict=True):
            p.resetJointState(self._body, j, float(v), physicsClientId=self._client)

    def _fk(self, q: np.ndarray) -> np.ndarray:
        self._set(q)
        state = p.getLinkState(self._body, self._tcp, computeForwardKinematics=True, physicsClientId=self._client)
        return np.asarray(state[4])

    def _ik(self, target: np.ndarray, seed: np.ndarray) -> np.ndarray:
        lower, upper = self.model.lower, self.model.upper
        q = seed.copy()
        for _ in range(4):
            self._set(q)
            kwargs = dict(lowerLimits=lower.tolist(), upperLimits=upper.tolist(),
                          jointRanges=(upper - lower).tolist(), restPoses=q.tolist(),
                          maxNumIterations=200, residualThreshold=1e-6, physicsClientId=self._client)
            if self._position_only:
                sol = p.calculateInverseKinematics(self._body, self._tcp, target.tolist(), **kwargs)
            else:
                sol = p.calculateInverseKinematics(self._body, self._tcp, target.tolist(), self._tool_down, **kwargs)
            index = {j: i for i, j in enumerate(self._movable)}
            q = np.clip(np.array([sol[index[j]] for j in self._joints]), lower, upper)
            if float(np.linalg.norm(self._fk(q) - target)) < 1e-3:
                break
        if not math.isfinite(float(np.sum(q))):
            return seed
        return q

    def close(self) -> None:
        """Disconnect the pybullet client used for kinematics (a second call does nothing)."""
        if p.isConnected(self._client):
            p.disconnect(self._client)
