"""The built-in expert: solves the pick-and-sort task from privileged state with inverse kinematics.

It is an ordinary policy (``spec``/``reset``/``act``), so it runs in-process or
behind ``testbed serve-policy expert`` unchanged. It keeps its own headless
pybullet client holding only the robot, at the origin, for inverse kinematics:
observations arrive in the robot's base frame, so the cell layout does not matter.
"""

from __future__ import annotations

import dataclasses
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
MOVING_SPEED_M_S = 0.03  # a part seen moving faster than this is caught on the move
SAME_PART_M = 0.05  # a reported part this far from where the last one was expected is another part
CATCH_HEIGHT_M = 0.005  # the cup waits this far above the top of a moving part (suction seizes within 12 mm)
CATCH_ABOVE_M = 0.05  # ... having come down from this far above it
CATCH_DESCEND_SPEED = 0.3  # share of the normal planning speed for that last bit down
CATCH_CLEARANCE_M = 0.06  # the cup must be down before the part's centre is this far from the catch point
CATCH_SETTLE_S = 0.3  # time for the arm to settle at the catch point (and the one-step policy pipeline)
CATCH_SUCTION_M = 0.01  # the vacuum comes on when the part's centre is this far from the catch point
CATCH_MISSED_M = 0.03  # the part's centre went this far past the catch point: missed
PLAN_MIN_S = 0.25  # the shortest plan ``_plan`` makes
TABULATED_STEPS_MAX = 2000  # a plan's chunk rows are tabulated up to this many policy steps (``Segment.chunk``)
IK_SOLVED_KEPT = 512  # inverse kinematics solutions kept for repeats (``ExpertPolicy._ik_attempt``)


class Phase(enum.Enum):
    WAIT = "wait"
    APPROACH = "approach"
    DESCEND = "descend"
    GRIP = "grip"
    LIFT = "lift"
    TRANSFER = "transfer"
    INTERCEPT = "intercept"  # on the way to a point above the belt ahead of a moving part
    CATCH = "catch"  # down there, just above the part's top, for it to pass under the cup
    RELEASE = "release"
    RETREAT = "retreat"


@dataclass
class Segment:
    """A planned joint motion through waypoints, timed in policy steps."""

    waypoints: np.ndarray  # (points, joints), first row the start
    start_step: int
    duration_steps: float
    suction: bool
    suction_from: float = -math.inf  # the vacuum is on from this policy step (when ``suction``)
    # ``chunk``'s rows for the steps from ``start_step`` on (made on first use; ``dataclasses.replace`` starts afresh)
    _table: np.ndarray | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _table_count: int = dataclasses.field(default=0, init=False, repr=False, compare=False)
    _settled_offset: int = dataclasses.field(default=0, init=False, repr=False, compare=False)

    def sample(self, step: float) -> np.ndarray:
        """Joint targets at policy step ``step`` along a minimum-jerk timing law."""
        i, frac = self._timing(step)
        return self.waypoints[i] * (1 - frac) + self.waypoints[i + 1] * frac

    def sample_many(self, first: int, count: int) -> np.ndarray:
        """``sample(first + k)`` for k in 0..count-1 as rows of one array: the same scalar timing law per row and
        the same float64 products and sum per element, in one numpy expression instead of one per row."""
        rows, fracs = zip(*(self._timing(first + k) for k in range(count)), strict=True)
        frac = np.array(fracs)[:, None]
        index = np.array(rows)
        return self.waypoints[index] * (1 - frac) + self.waypoints[index + 1] * frac

    def _timing(self, step: float) -> tuple[int, float]:
        """The waypoint interval ``i`` and the fraction into it at policy step ``step`` (minimum-jerk in time)."""
        tau = min(max((step - self.start_step) / max(self.duration_steps, 1e-9), 0.0), 1.0)
        s = tau**3 * (10 - 15 * tau + 6 * tau**2)
        x = s * (len(self.waypoints) - 1)
        i = min(int(x), len(self.waypoints) - 2)
        return i, x - i

    @property
    def goal(self) -> np.ndarray:
        return self.waypoints[-1]

    def chunk(self, first: int, count: int) -> np.ndarray:
        """The chunk for policy steps ``first``..``first + count - 1``: joint targets (``sample`` as float32) and
        the vacuum flag (1 from ``suction_from`` when ``suction``), one row per step.

        Each step's row is worked out once per segment, not once per chunk it appears in: the first call
        tabulates every step from ``start_step`` up to the one after which rows no longer change (the timing
        law has ended and the vacuum has switched), plus ``count`` rows of that last one.
        """
        offset = first - self.start_step
        if self._table is None or self._table_count != count:
            self._tabulate(count)
        if offset < 0 or self._table is None:  # before the segment, or no finite end to tabulate up to
            return self._compute_chunk(first, count)
        offset = min(offset, self._settled_offset)
        return self._table[offset: offset + count].copy()

    def _tabulate(self, count: int) -> None:
        self._table, self._table_count = None, count
        if not math.isfinite(self.duration_steps):
            return
        # from this offset on, tau is 1 in ``_timing`` (a plan of no length is at its start at offset 0 only) ...
        settled = max(math.ceil(self.duration_steps), 1)
        if self.suction and math.isfinite(self.suction_from):  # ... and the vacuum has come on: every row is equal
            settled = max(settled, math.ceil(self.suction_from) - self.start_step)
        if settled > TABULATED_STEPS_MAX:
            return  # a very slow plan: its chunks are worked out each time
        self._settled_offset = settled
        self._table = self._compute_chunk(self.start_step, settled + count)

    def _compute_chunk(self, first: int, count: int) -> np.ndarray:
        rows = np.empty((count, self.waypoints.shape[1] + 1), dtype=np.float32)
        rows[:, :-1] = self.sample_many(first, count)
        rows[:, -1] = [1.0 if self.suction and first + k >= self.suction_from else 0.0 for k in range(count)]
        return rows


@dataclass(frozen=True)
class Catch:
    """Where and when a moving part is to be caught."""

    xy: np.ndarray  # catch point in the base frame, m
    direction: np.ndarray  # the part's unit direction of travel
    low: np.ndarray  # cup position to wait at (xyz), m
    suction_step: float  # policy step at which the vacuum comes on


class ExpertPolicy:
    """Privileged-state pick-and-place expert for the conveyor sort cell.

    A part at rest is approached from above and picked. A part still moving (a cell without a stopper)
    is intercepted: its belt velocity is estimated from successive observations, and the cup waits,
    suction on, just above the part's top at a point ahead of it that the arm reaches in time.

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
        lower, upper = self.model.lower, self.model.upper
        # the rest-pose pull keeps the position residual above 1e-6 (median 0.66 mm), so every solve runs to the cap:
        # 100 iterations reach the median error of 200 at half the cost (~0.5 ms a solve, once per plan)
        self._ik_options = dict(lowerLimits=lower.tolist(), upperLimits=upper.tolist(),
                                jointRanges=(upper - lower).tolist(), maxNumIterations=100, residualThreshold=1e-6,
                                physicsClientId=self._client)
        self._ik_orientation = () if self._position_only else (self._tool_down,)
        movable_column = {j: i for i, j in enumerate(self._movable)}
        self._ik_columns = [movable_column[j] for j in self._joints]  # the model's joints in a solution
        self._ik_solved: dict[bytes, np.ndarray] = {}  # (target, start) bytes -> solution (``_ik_attempt``)
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
        self._seen: list[tuple[int, np.ndarray]] = []  # (policy step, part xy) of the part in view
        self._catch: Catch | None = None

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
        chunk = self._segment.chunk(self._step, self.chunk_size)
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

        def done() -> bool:  # the plan has run its time and the arm is at its goal (asked only where it decides)
            return self._step >= seg.start_step + seg.duration_steps and float(np.max(np.abs(q - seg.goal))) < 0.03

        in_phase = self._step - self._phase_start
        phase = self._phase
        velocity = self._track(part[:2], ready and not holding)
        moving = velocity is not None and float(np.linalg.norm(velocity)) > MOVING_SPEED_M_S
        if moving and phase in (Phase.WAIT, Phase.APPROACH, Phase.DESCEND, Phase.GRIP):
            assert velocity is not None
            if not self._intercept(part[:2], velocity, top_z) and phase is not Phase.WAIT:
                self._hold(Phase.WAIT, suction=False)  # out of reach in time: let it go
            return
        if phase is Phase.WAIT:
            if holding:
                self._go(Phase.LIFT, q, [(*part[:2], top_z + 0.12)], suction=True)
            elif ready:
                self._go(Phase.APPROACH, q, [(*part[:2], top_z + 0.08)], suction=False)
        elif phase in (Phase.INTERCEPT, Phase.CATCH):
            catch = self._catch
            assert catch is not None
            if holding and in_phase >= 1:
                self._go(Phase.LIFT, q, [(*part[:2], top_z + 0.12)], suction=True, speed=0.5)
            elif not holding and (not ready or float(np.dot(part[:2] - catch.xy, catch.direction)) > CATCH_MISSED_M):
                self._go(Phase.LIFT, q, [(*catch.xy, top_z + 0.08)], suction=False)  # missed: up, then again
            elif phase is Phase.INTERCEPT and done():
                self._go(Phase.CATCH, q, [catch.low], suction=True, speed=CATCH_DESCEND_SPEED)
                self._segment = dataclasses.replace(self._segment, suction_from=catch.suction_step)
        elif phase is Phase.APPROACH and done():
            self._go(Phase.DESCEND, q, [(*part[:2], top_z + 0.002)], suction=True, speed=0.3)
        elif phase is Phase.DESCEND and (holding or done()):
            self._hold(Phase.GRIP, suction=True)
        elif phase is Phase.GRIP:
            if holding and in_phase >= 2:
                self._go(Phase.LIFT, q, [(*part[:2], top_z + 0.12)], suction=True, speed=0.5)
            elif in_phase > self.control_hz * 0.6:
                self._go(Phase.APPROACH, q, [(*part[:2], top_z + 0.08)], suction=False)  # retry the grip
        elif phase is Phase.LIFT and done():
            if not holding:
                self._go(Phase.RETREAT, q, [], suction=False, joint_goal=self.model.home)
            else:
                start = self._fk(self._segment.sample(self._step))
                goal = np.array([bin_top[0], bin_top[1], bin_top[2] + 0.10])
                via = [start + (goal - start) * f for f in (0.25, 0.5, 0.75)]
                for v in via:
                    v[2] = max(v[2], start[2], goal[2])
                self._go(Phase.TRANSFER, q, [*via, goal], suction=True)
        elif phase is Phase.TRANSFER and done():
            self._hold(Phase.RELEASE, suction=False)
        elif phase is Phase.RELEASE and in_phase >= self.control_hz * 0.3:
            self._go(Phase.RETREAT, q, [], suction=False, joint_goal=self.model.home)
        elif phase is Phase.RETREAT and (done() or ready):
            self._hold(Phase.WAIT, suction=False)

    def _hold(self, phase: Phase, *, suction: bool) -> None:
        assert self._segment is not None
        # hold where the plan is now: a segment cut short must not jump to its goal
        here = self._segment.sample(self._step)
        self._segment = Segment(here[None, :].repeat(2, axis=0), self._step, 1, suction)
        self._phase, self._phase_start = phase, self._step

    def _track(self, part_xy: np.ndarray, in_view: bool) -> np.ndarray | None:
        """Record where the part in view is; its velocity (m/s, xy) once it was seen twice, else None."""
        if not in_view:
            self._seen.clear()
            return None
        if self._seen:
            last_step, last_xy = self._seen[-1]
            expected = last_xy + self._velocity() * (self._step - last_step) / self.control_hz
            if float(np.linalg.norm(part_xy - expected)) > SAME_PART_M:
                self._seen.clear()  # another part came into view
        self._seen.append((self._step, part_xy.copy()))
        return self._velocity() if len(self._seen) > 1 else None

    def _velocity(self) -> np.ndarray:
        if len(self._seen) < 2:
            return np.zeros(2)
        (s0, xy0), (s1, xy1) = self._seen[0], self._seen[-1]
        return (xy1 - xy0) * self.control_hz / (s1 - s0)

    def _intercept(self, part_xy: np.ndarray, velocity: np.ndarray, top_z: float) -> bool:
        """Plan the dash to the earliest point ahead of a moving part that the cup reaches in time.

        Returns False when no such point is reachable (the part is let go).
        """
        speed = float(np.linalg.norm(velocity))
        direction = velocity / speed
        lead_s = CATCH_CLEARANCE_M / speed
        # every plan lasts >= PLAN_MIN_S, so a point that leaves less time than this is never taken:
        # skip its two inverse kinematics (the same float sum as below, and rounding is monotonic)
        shortest = PLAN_MIN_S + PLAN_MIN_S + CATCH_SETTLE_S
        for ahead_s in np.arange(0.2, 4.0, 0.1):
            if shortest > ahead_s - lead_s:
                continue
            goal = part_xy + velocity * ahead_s
            low = np.array([*goal, top_z + CATCH_HEIGHT_M])
            path, dash_s = self._plan([(*goal, top_z + CATCH_ABOVE_M)])
            if dash_s + PLAN_MIN_S + CATCH_SETTLE_S > ahead_s - lead_s:
                continue  # too late even if the way down took the shortest plan: skip its inverse kinematics
            down, down_s = self._plan([low], speed=CATCH_DESCEND_SPEED, start=path[-1])
            if float(np.linalg.norm(self._fk(down[-1]) - low)) > 0.004:
                continue  # out of reach
            if dash_s + down_s + CATCH_SETTLE_S <= ahead_s - lead_s:
                self._segment = Segment(path, self._step, dash_s * self.control_hz, False)
                self._phase, self._phase_start = Phase.INTERCEPT, self._step
                suction_step = self._step + (ahead_s - CATCH_SUCTION_M / speed) * self.control_hz
                self._catch = Catch(goal, direction, low, suction_step)
                return True
        return False

    def _go(self, phase: Phase, q: np.ndarray, points: list, *, suction: bool, speed: float = 1.0,
            joint_goal: np.ndarray | None = None) -> None:
        path, duration_s = self._plan(points, speed=speed, joint_goal=joint_goal)
        self._segment = Segment(path, self._step, duration_s * self.control_hz, suction)
        self._phase, self._phase_start = phase, self._step

    def _plan(self, points: list, *, speed: float = 1.0, joint_goal: np.ndarray | None = None,
              start: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Joint waypoints from ``start`` (default: where the plan is now) through ``points`` (and ``joint_goal``),
        and their duration in seconds."""
        assert self._segment is not None
        if start is None:
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
        duration_s = max(float(np.max(1.875 * travel / vmax)), PLAN_MIN_S)
        if self.tcp_speed_m_s is not None:
            # joint interpolation between waypoints bows the TCP path: keep a margin over the chord length
            tcp = np.array([self._fk(q) for q in path])
            length = float(np.sum(np.linalg.norm(np.diff(tcp, axis=0), axis=1)))
            duration_s = max(duration_s, 1.875 * TCP_PATH_MARGIN * length / self.tcp_speed_m_s)
        return path, duration_s

    # ---- kinematics -------------------------------------------------------------------------------------

    def _set(self, q: np.ndarray) -> None:
        p.resetJointStatesMultiDof(self._body, self._joints, [[float(v)] for v in q], physicsClientId=self._client)

    def _fk(self, q: np.ndarray) -> np.ndarray:
        self._set(q)
        state = p.getLinkState(self._body, self._tcp, computeForwardKinematics=True, physicsClientId=self._client)
        return np.asarray(state[4])

    def _ik(self, target: np.ndarray, seed: np.ndarray) -> np.ndarray:
        q = seed.copy()
        for attempt in range(4):
            q = self._ik_attempt(target, q, arm_at_q=attempt > 0)  # later attempts start where ``_fk`` left the arm
            if float(np.linalg.norm(self._fk(q) - target)) < 1e-3:
                break
        if not math.isfinite(float(np.sum(q))):
            return seed
        return q

    def _ik_attempt(self, target: np.ndarray, q: np.ndarray, *, arm_at_q: bool) -> np.ndarray:
        """One inverse kinematics solve for ``target`` from joint positions ``q`` (also its rest pose), clipped to
        the limits. Its result depends on nothing else, so a repeat is looked up (a retry that came back to where
        it started, a part where one was before): the same bits, without the ~1 ms solve."""
        key = target.tobytes() + q.tobytes()
        solved = self._ik_solved.get(key)
        if solved is not None:
            return solved
        if not arm_at_q:
            self._set(q)
        sol = p.calculateInverseKinematics(self._body, self._tcp, target.tolist(), *self._ik_orientation,
                                           restPoses=q.tolist(), **self._ik_options)
        solved = np.clip(np.array([sol[i] for i in self._ik_columns]), self.model.lower, self.model.upper)
        solved.flags.writeable = False  # shared by every lookup
        if len(self._ik_solved) >= IK_SOLVED_KEPT:
            del self._ik_solved[next(iter(self._ik_solved))]  # the oldest
        self._ik_solved[key] = solved
        return solved

    def close(self) -> None:
        """Disconnect the pybullet client used for kinematics (a second call does nothing)."""
        if p.isConnected(self._client):
            p.disconnect(self._client)
