"""The conveyor pick-and-sort cell in pybullet: robots on pedestals, an infeed conveyor, bins, parts.

The world is built once; episodes start by ``restoreState`` (~1 µs) instead of
rebuilding (~36 ms). Parts come from a pool created at build time and parked
far from the cell, so every episode has the same bodies.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter

import numpy as np
import pybullet as p

from testbed.policies.observations import ENV_STATE_NAMES
from testbed.robots import RobotModel, load_robot
from testbed.scenario.randomize import DEFAULT_LIGHT_AMBIENT, EpisodeDraw
from testbed.scenario.schema import CellConfig, RobotConfig
from testbed.scenario.workload import PART_TYPES, PartArrival
from testbed.sim.parts import PART_CATALOGUE, PART_FRICTION, PartType, create_part_body

BELT_WIDTH_M = 0.12
BELT_X_M = 0.45  # belt centre line, relative to the first robot's base
STOPPER_Y_M = 0.035  # front face of the stopper at the pick station
BIN_INNER_M = 0.18
BIN_WALL_HEIGHT_M = 0.10
BIN_HEAP_M = 0.06
SUCTION_REACH_M = 0.012  # cup tip to part top for the vacuum to seize it
SUCTION_LATERAL_M = 0.02
PARK_Z_M = 5.0
SETTLE_SPEED_M_S = 0.03
SETTLE_TIMEOUT_S = 2.0
SETTLE_MIN_S = 0.3
PICK_ZONE_M = 0.55  # without a stopper: a moving part is in reach over the belt's last PICK_ZONE_M
STOPPER_AWAY_Z_M = -2.0  # a stopper taken away for an episode waits under the floor
STOP_SHORT_M = 0.002  # the belt stops a part this far short of the stopper's face
# the belt's top is frictionless and parts have no linear damping: a part glides at the velocity it was given.
# At each ``update_parts`` check, a part on the belt whose velocity is off the belt's by more than this (m/s,
# rad/s about z) -- pushed, blocked, braked by a rail -- is given the belt's velocity again
BELT_SPEED_TOL_M_S = 1e-3
BELT_SPIN_TOL_RAD_S = 0.01
NEVER = 1 << 62  # a physics step that never comes
# 50 cost ~20 % more physics per step for the same successes (default, randomized, two-robot, order and SCARA cells)
SOLVER_ITERATIONS = 20
FLOOR_HALF_M = 25.0  # the collision floor's half width, centred under the origin
FLOOR_THICKNESS_M = 0.1
# pybullet's TinyRenderer light when none is given; a light once given sticks to the client, so this puts it back
DEFAULT_LIGHT = {"lightDirection": (-50.0, 30.0, 100.0), "lightColor": (1.0, 1.0, 1.0),
                 "lightAmbientCoeff": DEFAULT_LIGHT_AMBIENT}

# the per-step calls, looked up once (module attribute lookups add up at 240 Hz)
_get_joint_states = p.getJointStates
_set_motors = p.setJointMotorControlArray
_POSITION_CONTROL = p.POSITION_CONTROL
_get_pose = p.getBasePositionAndOrientation
_get_velocity = p.getBaseVelocity
_reset_velocity = p.resetBaseVelocity
_step_simulation = p.stepSimulation


@dataclass
class PartSlot:
    """One pooled part body and what it is doing this episode."""

    body: int
    kind: PartType
    park_xyz: tuple[float, float, float]
    status: str = "parked"  # parked, conveying, ready, held, released, placed, dropped
    order_id: str = ""
    target_bin: str = ""
    ready_t: float = 0.0
    released_t: float = 0.0
    station: int = 0
    half_len_y_m: float = 0.0  # extent along the belt from the centre (with the part's yaw)
    in_reach: bool = False  # without a stopper: moving through the pick zone
    mass_kg: float = 0.0
    friction: float = PART_FRICTION
    stop_step: int = NEVER  # conveying: the physics step (``Cell.physics_steps``) at which its front reaches the stop


@dataclass(frozen=True)
class PartEvent:
    """Something that happened to a part, for the event stream."""

    kind: str  # pick, place, drop
    robot: int | None
    part_type: str
    order_id: str
    detail: dict = field(default_factory=dict)


@dataclass
class Station:
    """One robot's work station: its conveyor (running along +y to a stopper) and its bins.

    The launch file's conveyor and bins describe the first robot's station; every
    other robot gets the same station shifted by the offset of its base in x and y.
    """

    index: int
    belt_x: float
    belt_y_start: float
    belt_y_end: float
    top_z: float
    bins: dict[str, tuple[float, float, float]]  # bin name -> floor centre, world frame
    bin_for_type: dict[str, str]
    stopper_body: int = -1
    stopper_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class RobotHandle:
    """A robot body in the world and the indices the loop needs."""

    config: RobotConfig
    model: RobotModel
    body: int
    joint_indices: list[int]
    tcp_link: int
    base_pos: tuple[float, float, float]
    base_orn: tuple[float, float, float, float]
    suction_on: bool = False
    constraint: int | None = None
    held: PartSlot | None = None


class Cell:
    """A built conveyor pick-and-sort cell.

    Use ``build_cell``; then ``reset_episode`` before each episode and ``step``
    once per physics step.
    """

    def __init__(self, config: CellConfig, physics_hz: float, arrivals_per_type: dict[str, int]) -> None:
        self.config = config
        self.dt_s = 1.0 / physics_hz
        self.client = p.connect(p.DIRECT)
        p.setGravity(0, 0, -9.81, physicsClientId=self.client)
        p.setPhysicsEngineParameter(fixedTimeStep=self.dt_s, numSolverIterations=SOLVER_ITERATIONS,
                                    deterministicOverlappingPairs=1, physicsClientId=self.client)
        self.robots: list[RobotHandle] = []
        self.stations: list[Station] = []
        self.bins: dict[str, tuple[float, float, float]] = {}
        self.static_bodies: dict[int, str] = {}
        self.parts: list[PartSlot] = []
        self._build_floor()
        for robot_cfg in config.robots:
            self._build_robot(robot_cfg)
        for index in range(len(self.robots)):
            self._build_station(index)
        self._build_part_pool(arrivals_per_type)
        self.max_joints = max(r.model.n_joints for r in self.robots)
        self._joint_pos = np.zeros((len(self.robots), self.max_joints))
        # per robot, what the per-step calls need, looked up once: (body, joint indices, n, row of _joint_pos,
        # motor forces, position gains, velocity gains) as the lists pybullet takes
        self._per_step = [(r.body, r.joint_indices, r.model.n_joints, self._joint_pos[i, : r.model.n_joints],
                           r.model.max_force.tolist(), r.model.position_gain.tolist(),
                           r.model.velocity_gain.tolist()) for i, r in enumerate(self.robots)]
        self._initial_state = p.saveState(physicsClientId=self.client)
        self.t_s = 0.0
        # wall time spent in stepSimulation and the steps it took, since the cell was built (always on: two
        # perf_counter calls a step); the physics floor of a run is physics_s / physics_steps per step
        self.physics_s = 0.0
        self.physics_steps = 0
        self.draw: EpisodeDraw | None = None
        self.conveyor_speed = config.conveyor.speed  # m/s this episode (a draw may scale it)
        self.stopper = True  # this episode's stoppers stand (else parts are caught moving)
        # the belt drives a part while its front is short of this y (per station; no stopper: always)
        self._stop_front_y = [st.belt_y_end - STOP_SHORT_M for st in self.stations]
        self._next_stop = NEVER  # the earliest ``stop_step`` of the conveying parts: ``step`` compares only this
        self._spawned = 0  # arrivals spawned this episode: a part's index into the draw
        self._light_changed = False  # a drawn light was rendered with: nominal renders restore the default

    # ---- building -------------------------------------------------------------------------------------

    def _static_box(self, name: str, half: Sequence[float], pos: Sequence[float],
                    rgba: Sequence[float]) -> int:
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=self.client)
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=rgba, physicsClientId=self.client)
        body = p.createMultiBody(0, col, vis, basePosition=pos, physicsClientId=self.client)
        self.static_bodies[body] = name
        return body

    def _build_floor(self) -> None:
        # cameras see an infinite plane, things collide with a box whose top face is that plane: the plane's
        # bounds are infinite, so every step the broadphase paired it with every robot link and the narrowphase
        # tested them all (~6 us of a working step); the box's bounds end at z = 0. The box is drawn
        # transparent and the plane collides with nothing, so images and contacts stay what they were.
        col = p.createCollisionShape(p.GEOM_PLANE, physicsClientId=self.client)
        plane = p.createMultiBody(0, col, physicsClientId=self.client)
        p.setCollisionFilterGroupMask(plane, -1, 0, 0, physicsClientId=self.client)
        half = (FLOOR_HALF_M, FLOOR_HALF_M, FLOOR_THICKNESS_M / 2)
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=self.client)
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=(1, 1, 1, 0), physicsClientId=self.client)
        body = p.createMultiBody(0, col, vis, basePosition=(0, 0, -half[2]), physicsClientId=self.client)
        self.static_bodies[body] = "floor"

    def _build_robot(self, cfg: RobotConfig) -> None:
        model = load_robot(cfg.model)
        base_orn = p.getQuaternionFromEuler([math.radians(a) for a in cfg.base.rpy_deg])
        base_pos = tuple(cfg.base.xyz)
        if base_pos[2] > 0.01:
            self._static_box(f"pedestal_{cfg.name}", (0.14, 0.14, base_pos[2] / 2),
                             (base_pos[0], base_pos[1], base_pos[2] / 2), (0.35, 0.35, 0.38, 1))
        body = p.loadURDF(str(model.urdf_path), basePosition=base_pos, baseOrientation=base_orn,
                          useFixedBase=True, flags=p.URDF_USE_INERTIA_FROM_FILE, physicsClientId=self.client)
        by_name: dict[str, int] = {}
        link_by_name: dict[str, int] = {}
        for j in range(p.getNumJoints(body, physicsClientId=self.client)):
            info = p.getJointInfo(body, j, physicsClientId=self.client)
            by_name[info[1].decode()] = j
            link_by_name[info[12].decode()] = j
        joint_indices = [by_name[name] for name in model.joint_names]
        for j, q in zip(joint_indices, model.home, strict=True):
            p.resetJointState(body, j, float(q), physicsClientId=self.client)
        # the motors are driven explicitly each step; disable the default velocity motors first
        p.setJointMotorControlArray(body, joint_indices, p.VELOCITY_CONTROL, forces=[0.0] * len(joint_indices),
                                    physicsClientId=self.client)
        self.robots.append(RobotHandle(cfg, model, body, joint_indices, link_by_name[model.tcp_link],
                                       base_pos, tuple(base_orn)))

    def _build_station(self, index: int) -> None:
        config = self.config
        first, base = self.robots[0].base_pos, self.robots[index].base_pos
        dx, dy = base[0] - first[0], base[1] - first[1]
        length = config.conveyor.length
        top_z = config.conveyor.top_z
        belt_x = base[0] + BELT_X_M
        belt_y_end = base[1] + STOPPER_Y_M
        prefix = "" if index == 0 else f"{self.robots[index].config.name}/"
        station = Station(index, belt_x, belt_y_end - length, belt_y_end, top_z, {}, {})
        centre_y = (station.belt_y_start + belt_y_end) / 2
        belt = self._static_box(f"{prefix}conveyor", (BELT_WIDTH_M / 2, length / 2, top_z / 2),
                                (belt_x, centre_y, top_z / 2), (0.15, 0.15, 0.15, 1))
        # the belt moves parts by their velocity (see ``step``), not by friction: its top is frictionless
        p.changeDynamics(belt, -1, lateralFriction=0.0, physicsClientId=self.client)
        for side in (-1, 1):
            self._static_box(f"{prefix}conveyor_rail", (0.005, length / 2, 0.015),
                             (belt_x + side * (BELT_WIDTH_M / 2 + 0.005), centre_y, top_z + 0.015), (0.7, 0.7, 0.7, 1))
        station.stopper_xyz = (belt_x, belt_y_end + 0.01, top_z + 0.02)
        station.stopper_body = self._static_box(f"{prefix}stopper", (BELT_WIDTH_M / 2 + 0.01, 0.01, 0.02),
                                                station.stopper_xyz, (0.8, 0.1, 0.1, 1))
        for b in config.bins:
            name = f"{prefix}{b.name}"
            xyz = (b.xyz[0] + dx, b.xyz[1] + dy, b.xyz[2])
            station.bins[name] = xyz
            station.bin_for_type.setdefault(b.part_type, name)
            self.bins[name] = xyz
            self._build_bin(name, b.part_type, xyz)
        self.stations.append(station)

    def _build_bin(self, name: str, part_type: str, xyz: tuple[float, float, float]) -> None:
        x, y, z = xyz
        half = BIN_INNER_M / 2
        wall = 0.005
        colour = (*PART_CATALOGUE[part_type].rgba[:3], 1.0)
        self._static_box(name, (half + wall, half + wall, wall), (x, y, z - wall), (0.6, 0.6, 0.6, 1))
        h = BIN_WALL_HEIGHT_M / 2
        for dx, dy, hx, hy in ((half + wall, 0, wall, half + wall), (-half - wall, 0, wall, half + wall),
                               (0, half + wall, half + wall, wall), (0, -half - wall, half + wall, wall)):
            self._static_box(name, (hx, hy, h), (x + dx, y + dy, z + h), colour)
        if z - 2 * wall > 0.01:
            self._static_box(f"{name}_stand", (0.03, 0.03, (z - 2 * wall) / 2), (x, y, (z - 2 * wall) / 2),
                             (0.3, 0.3, 0.3, 1))

    def _build_part_pool(self, arrivals_per_type: dict[str, int]) -> None:
        for t_index, name in enumerate(PART_TYPES):
            kind = PART_CATALOGUE[name]
            for i in range(max(1, arrivals_per_type.get(name, 0))):
                park = (20.0 + 0.2 * i, 20.0 + 0.2 * t_index, PARK_Z_M)
                body = create_part_body(self.client, kind, park)
                self.parts.append(PartSlot(body, kind, park, half_len_y_m=kind.size_m[1] / 2, mass_kg=kind.mass_kg))
        for slot in self.parts:
            self._park(slot)

    def _park(self, slot: PartSlot) -> None:
        # a parked part collides with nothing: it costs the solver nothing. Sleeping is disabled again (the
        # default of a body; a part resolved last episode had it enabled, see ``_finish``), so that every
        # episode starts from the same world whatever ran before it
        p.resetBasePositionAndOrientation(slot.body, slot.park_xyz, (0, 0, 0, 1), physicsClientId=self.client)
        p.resetBaseVelocity(slot.body, (0, 0, 0), (0, 0, 0), physicsClientId=self.client)
        p.setCollisionFilterGroupMask(slot.body, -1, 0, 0, physicsClientId=self.client)
        p.changeDynamics(slot.body, -1, activationState=p.ACTIVATION_STATE_DISABLE_SLEEPING | p.ACTIVATION_STATE_SLEEP,
                         physicsClientId=self.client)
        slot.status = "parked"
        slot.stop_step = NEVER

    # ---- episodes ---------------------------------------------------------------------------------------

    def reset_episode(self, draw: EpisodeDraw | None = None) -> None:
        """Return the world to its built state: robots at home, parts parked, vacuum off.

        Args:
            draw: the episode's randomization (``testbed.scenario.randomize.draw_episode``): conveyor speed,
                stoppers standing or taken away, camera pose and light for ``render``, and per-part pose,
                mass and friction applied by ``spawn``. None: the nominal cell.
        """
        for robot in self.robots:
            if robot.constraint is not None:
                p.removeConstraint(robot.constraint, physicsClientId=self.client)
            robot.constraint = None
            robot.held = None
            robot.suction_on = False
        p.restoreState(self._initial_state, physicsClientId=self.client)
        for slot in self.parts:
            self._park(slot)
        self.t_s = 0.0
        self.draw = draw
        self._spawned = 0
        self.conveyor_speed = self.config.conveyor.speed * (draw.conveyor_speed_scale if draw is not None else 1.0)
        stopper = draw.stopper if draw is not None else True
        for st in self.stations if not stopper else ():  # restoreState has put every stopper back
            xyz = (st.stopper_xyz[0], st.stopper_xyz[1], STOPPER_AWAY_Z_M)
            p.resetBasePositionAndOrientation(st.stopper_body, xyz, (0, 0, 0, 1), physicsClientId=self.client)
        self.stopper = stopper
        self._stop_front_y = [st.belt_y_end - STOP_SHORT_M if stopper else math.inf for st in self.stations]
        self._next_stop = NEVER

    def spawn(self, arrival: PartArrival, station: int = 0) -> bool:
        """Put a part of the arrival's type on a station's infeed; False if none is free."""
        for slot in self.parts:
            if slot.kind.name == arrival.part_type and slot.status == "parked":
                break
        else:
            return False
        st = self.stations[station]
        index, self._spawned = self._spawned, self._spawned + 1
        part = self.draw.part(index) if self.draw is not None else None
        kind = slot.kind
        lateral, yaw = (part.lateral_m, part.yaw_rad) if part is not None else (0.0, 0.0)
        pos = (st.belt_x + lateral, st.belt_y_start + 0.04, st.top_z + kind.half_height_m + 0.001)
        orn = p.getQuaternionFromEuler((0.0, 0.0, yaw)) if yaw else (0, 0, 0, 1)
        slot.half_len_y_m = (kind.size_m[1] / 2 if kind.shape == "cylinder" or not yaw else
                             (abs(kind.size_m[0] * math.sin(yaw)) + abs(kind.size_m[1] * math.cos(yaw))) / 2)
        mass = kind.mass_kg * (part.mass_scale if part is not None else 1.0)
        friction = part.friction if part is not None and part.friction is not None else PART_FRICTION
        if mass != slot.mass_kg or friction != slot.friction:  # pooled bodies keep what the last episode set
            p.changeDynamics(slot.body, -1, mass=mass, lateralFriction=friction, physicsClientId=self.client)
            slot.mass_kg, slot.friction = mass, friction
        slot.in_reach = False
        # it lands on the running belt: it leaves with the belt's velocity and glides on it
        p.resetBasePositionAndOrientation(slot.body, pos, orn, physicsClientId=self.client)
        p.resetBaseVelocity(slot.body, (0, self.conveyor_speed, 0), (0, 0, 0), physicsClientId=self.client)
        p.setCollisionFilterGroupMask(slot.body, -1, 1, -1, physicsClientId=self.client)
        p.changeDynamics(slot.body, -1, activationState=p.ACTIVATION_STATE_WAKE_UP, physicsClientId=self.client)
        slot.status = "conveying"
        slot.order_id = arrival.order_id
        slot.target_bin = arrival.bin or st.bin_for_type[arrival.part_type]
        slot.station = station
        self._predict_stop(slot, pos[1] + slot.half_len_y_m, self.conveyor_speed)
        return True

    # ---- per-step ----------------------------------------------------------------------------------------

    _sent_commands: list[tuple[bytes, bytes | None] | None] | None = None  # per robot, the last motor command sent
    _joint_rows: list | None = None  # read_joint_positions' per-robot rows

    def read_joint_positions(self) -> np.ndarray:
        """Measured joint positions, ``(robots, max_joints)``, padding 0 (a view reused across calls)."""
        client = self.client
        rows = self._joint_rows
        if rows is None:  # each robot's row as raw bytes, and a packer of its doubles (cheaper than row[:] = list)
            rows = self._joint_rows = [(body, joints, memoryview(row).cast("B"), struct.Struct(f"={n}d").pack_into)
                                       for body, joints, n, row, _, _, _ in self._per_step]
        for body, joints, row, pack in rows:  # each joint's state opens with its position: the first of zip(*states)
            pack(row, 0, *next(zip(*_get_joint_states(body, joints, physicsClientId=client), strict=True)))
        return self._joint_pos

    def apply_joint_commands(self, setpoint: np.ndarray, setpoint_vel: np.ndarray | None = None) -> None:
        """Send position set-points ``(robots, max_joints)`` to the joint motors.

        pybullet's motors keep their last command, so a robot whose set-point and velocity are bit for bit those
        it was last sent (an arm holding still) is not sent them again. The first command of an episode (``t_s``
        0, after ``reset_episode``'s ``restoreState``) is always sent.
        """
        client = self.client
        sent = self._sent_commands
        if sent is None or self.t_s == 0.0:
            sent = self._sent_commands = [None] * len(self._per_step)
        key = (setpoint.tobytes(), None if setpoint_vel is None else setpoint_vel.tobytes())
        if key == sent[0] and len(sent) == 1:  # one robot (the common cell), holding still
            return
        targets, velocities = setpoint.tolist(), setpoint_vel.tolist() if setpoint_vel is not None else None
        for i, (body, joints, n, _, forces, kp, kd) in enumerate(self._per_step):
            if len(sent) > 1:
                key = (setpoint[i].tobytes(), None if setpoint_vel is None else setpoint_vel[i].tobytes())
            if key == sent[i]:
                continue
            sent[i] = key
            if velocities is None:
                _set_motors(body, joints, _POSITION_CONTROL, targetPositions=targets[i][:n], forces=forces,
                            positionGains=kp, velocityGains=kd, physicsClientId=client)
            else:
                _set_motors(body, joints, _POSITION_CONTROL, targetPositions=targets[i][:n],
                            targetVelocities=velocities[i][:n], forces=forces, positionGains=kp, velocityGains=kd,
                            physicsClientId=client)

    def set_suction(self, robot_index: int, on: bool) -> None:
        """Switch a robot's vacuum; releasing drops whatever it holds."""
        robot = self.robots[robot_index]
        robot.suction_on = on
        if not on and robot.constraint is not None:
            p.removeConstraint(robot.constraint, physicsClientId=self.client)
            robot.constraint = None
            slot = robot.held
            robot.held = None
            if slot is not None:
                slot.status = "released"
                slot.released_t = self.t_s

    def step(self) -> None:
        """Advance physics by one step (stopping a part that reaches its stop this step); the physics call's wall
        time adds to ``physics_s``.

        The belt's parts glide on its frictionless top at the velocity they were given (``spawn``, and
        ``update_parts`` when one is off the belt's): a step touches no part, except the one step at which a
        conveying part's front reaches its stop, predicted from its pose and velocity.
        """
        if self.physics_steps >= self._next_stop:
            self._stop_due()
        client = self.client
        started = perf_counter()
        _step_simulation(physicsClientId=client)
        self.physics_s += perf_counter() - started
        self.physics_steps += 1
        self.t_s += self.dt_s

    def _predict_stop(self, slot: PartSlot, front: float, vy: float) -> None:
        """Set when a conveying part gliding at ``vy`` with its front at ``front`` (now, before the next step)
        reaches its stop: the first step before which its front is at or past it."""
        gap = self._stop_front_y[slot.station] - front
        if gap <= 0.0:
            slot.stop_step = self.physics_steps
        elif vy > 0.0 and gap != math.inf:
            slot.stop_step = self.physics_steps + math.ceil(gap / (vy * self.dt_s))
        else:
            slot.stop_step = NEVER
        if slot.stop_step < self._next_stop:
            self._next_stop = slot.stop_step

    def _stop_due(self) -> None:
        """The parts whose stop is due: stopped if their front is there (else, slowed on the way, predicted anew)."""
        client, now = self.client, self.physics_steps
        self._next_stop = NEVER
        for slot in self.parts:
            if slot.status != "conveying" or slot.stop_step == NEVER:
                continue
            if slot.stop_step <= now:
                pos, _ = _get_pose(slot.body, physicsClientId=client)
                vel, ang = _get_velocity(slot.body, physicsClientId=client)
                front = pos[1] + slot.half_len_y_m
                if front >= self._stop_front_y[slot.station]:
                    _reset_velocity(slot.body, (0.0, 0.0, vel[2]), ang, physicsClientId=client)
                    slot.stop_step = NEVER
                    continue
                self._predict_stop(slot, front, vel[1])
            elif slot.stop_step < self._next_stop:
                self._next_stop = slot.stop_step

    def _belt_velocity(self, slot: PartSlot, pos: Sequence[float], vel: Sequence[float], ang: Sequence[float],
                       hold: bool = False) -> None:
        """At a check: give a part on the belt the belt's velocity again if it is off it (pushed, blocked, braked
        by a rail, spun), and predict when a conveying one reaches its stop. ``hold``: a part waiting at the stop,
        kept still (as the belt's friction under it would)."""
        front = pos[1] + slot.half_len_y_m
        target = 0.0 if hold or front >= self._stop_front_y[slot.station] else self.conveyor_speed
        vy = vel[1]
        if (abs(vy - target) > BELT_SPEED_TOL_M_S or abs(vel[0]) > BELT_SPEED_TOL_M_S
                or abs(ang[2]) > BELT_SPIN_TOL_RAD_S):
            _reset_velocity(slot.body, (0.0, target, vel[2]), (ang[0], ang[1], 0.0), physicsClientId=self.client)
            vy = target
        if target > 0.0:
            self._predict_stop(slot, front, vy)
        else:
            slot.stop_step = NEVER

    def update_parts(self) -> list[PartEvent]:
        """Advance part bookkeeping (arrival, suction grip, placement, drops); call at the control rate."""
        events: list[PartEvent] = []
        for slot in self.parts:
            if slot.status in ("parked", "placed", "dropped", "held"):
                continue
            pos, _ = p.getBasePositionAndOrientation(slot.body, physicsClientId=self.client)
            station = self.stations[slot.station]
            if pos[2] < station.top_z - 0.08 and slot.status in ("conveying", "ready"):
                events.append(self._finish(slot, "dropped", None, {"reason": "fell off the conveyor"}))
            elif slot.status == "conveying":
                vel, ang = p.getBaseVelocity(slot.body, physicsClientId=self.client)
                if not self.stopper and not slot.in_reach and pos[1] >= station.belt_y_end - PICK_ZONE_M:
                    slot.in_reach = True  # the photo-eye sees it: catch it on the move
                    slot.ready_t = self.t_s
                at_stop = pos[1] + slot.half_len_y_m >= station.belt_y_end - 0.004
                if self.stopper and at_stop and abs(vel[1]) < 0.01:
                    slot.status = "ready"
                    slot.ready_t = self.t_s
                    slot.stop_step = NEVER
                else:
                    self._belt_velocity(slot, pos, vel, ang)
            elif slot.status == "ready":  # held still at the stop by the belt (a frictionless top would let it slide)
                vel, ang = p.getBaseVelocity(slot.body, physicsClientId=self.client)
                self._belt_velocity(slot, pos, vel, ang, hold=True)
            elif slot.status == "released":
                vel, _ = p.getBaseVelocity(slot.body, physicsClientId=self.client)
                # a part is still at rest the instant it is let go: judge it only once it had time to fall
                since = self.t_s - slot.released_t
                settled = since > SETTLE_MIN_S and math.sqrt(vel[0] ** 2 + vel[1] ** 2 + vel[2] ** 2) < SETTLE_SPEED_M_S
                if settled or since > SETTLE_TIMEOUT_S:
                    events.append(self._classify_release(slot, pos))
        for i, robot in enumerate(self.robots):
            if robot.suction_on and robot.constraint is None:
                event = self._try_grip(i, robot)
                if event is not None:
                    events.append(event)
        return events

    def _classify_release(self, slot: PartSlot, pos: Sequence[float]) -> PartEvent:
        for name, (x, y, z) in self.bins.items():
            inside = abs(pos[0] - x) < BIN_INNER_M / 2 and abs(pos[1] - y) < BIN_INNER_M / 2
            # a part resting on the heap in a busy bin may stand above the rim: still in the bin
            if inside and z - 0.01 < pos[2] < z + BIN_WALL_HEIGHT_M + BIN_HEAP_M:
                correct = name == slot.target_bin
                return self._finish(slot, "placed", None, {"bin": name, "correct": correct,
                                                           "cycle_time_s": round(self.t_s - slot.ready_t, 6)})
        return self._finish(slot, "dropped", None, {"reason": "released outside any bin",
                                                    "xyz": [round(float(v), 4) for v in pos]})

    def _finish(self, slot: PartSlot, status: str, robot: int | None, detail: dict) -> PartEvent:
        slot.status = status
        # resolved (in a bin or dropped): the part may sleep once it has come to rest, and wakes when something
        # hits it. Bodies never sleep by default, and each part at rest in a bin cost the solver ~35 µs a step
        p.changeDynamics(slot.body, -1, activationState=p.ACTIVATION_STATE_ENABLE_SLEEPING, physicsClientId=self.client)
        kind = "place" if status == "placed" else "drop"
        return PartEvent(kind, slot.station if robot is None else robot, slot.kind.name, slot.order_id, detail)

    def _try_grip(self, index: int, robot: RobotHandle) -> PartEvent | None:
        tcp = p.getLinkState(robot.body, robot.tcp_link, computeForwardKinematics=True, physicsClientId=self.client)
        tcp_pos, tcp_orn = tcp[4], tcp[5]
        for slot in self.parts:
            if slot.status not in ("ready", "conveying", "released"):
                continue
            pos, orn = p.getBasePositionAndOrientation(slot.body, physicsClientId=self.client)
            top = pos[2] + slot.kind.half_height_m
            lateral = math.hypot(tcp_pos[0] - pos[0], tcp_pos[1] - pos[1])
            if lateral < SUCTION_LATERAL_M and -0.004 < tcp_pos[2] - top < SUCTION_REACH_M:
                inv_pos, inv_orn = p.invertTransform(tcp_pos, tcp_orn)
                rel_pos, rel_orn = p.multiplyTransforms(inv_pos, inv_orn, pos, orn)
                robot.constraint = p.createConstraint(
                    robot.body, robot.tcp_link, slot.body, -1, p.JOINT_FIXED, (0, 0, 0), rel_pos, (0, 0, 0),
                    parentFrameOrientation=rel_orn, physicsClientId=self.client)
                p.changeConstraint(robot.constraint, maxForce=60.0, physicsClientId=self.client)
                robot.held = slot
                slot.status = "held"
                return PartEvent("pick", index, slot.kind.name, slot.order_id,
                                 {"wait_s": round(self.t_s - slot.ready_t, 6) if slot.ready_t else None})
        return None

    # ---- observations ------------------------------------------------------------------------------------

    def robot_contacts(self, robot_index: int) -> set[str]:
        """Names of things the robot touches other than its pedestal and the part it holds."""
        robot = self.robots[robot_index]
        touching: set[str] = set()
        held_body = robot.held.body if robot.held is not None else None
        for contact in p.getContactPoints(bodyA=robot.body, physicsClientId=self.client):
            other = contact[2]
            if other == held_body or contact[3] == -1:
                continue
            name = self.static_bodies.get(other)
            if name is None:
                if other == robot.body:
                    continue
                slot = next((s for s in self.parts if s.body == other), None)
                name = f"part:{slot.kind.name}" if slot else f"robot:{other}"
            if name.startswith("pedestal_"):
                continue
            touching.add(name)
        return touching

    def part_ready(self, station: int) -> bool:
        """Whether a part is in reach at a station (its photo-eye): stopped at the stopper, or moving through the
        pick zone of an episode without a stopper."""
        return any(self._in_reach(s) and s.station == station for s in self.parts)

    @staticmethod
    def _in_reach(slot: PartSlot) -> bool:
        return slot.status == "ready" or (slot.status == "conveying" and slot.in_reach)

    def environment_state(self, robot_index: int) -> np.ndarray:
        """Privileged state in the robot's base frame, laid out as ``ENV_STATE_NAMES``."""
        robot = self.robots[robot_index]
        out = np.zeros(len(ENV_STATE_NAMES), dtype=np.float32)
        slot = robot.held
        if slot is None:
            ready = [s for s in self.parts if self._in_reach(s) and s.station == robot_index]
            slot = min(ready, key=lambda s: (s.ready_t, s.body)) if ready else None
        if slot is None:
            return out
        inv_pos, inv_orn = p.invertTransform(robot.base_pos, robot.base_orn)
        pos, orn = p.getBasePositionAndOrientation(slot.body, physicsClientId=self.client)
        local_pos, local_orn = p.multiplyTransforms(inv_pos, inv_orn, pos, orn)
        yaw = p.getEulerFromQuaternion(local_orn)[2]
        x, y, z = self.bins[slot.target_bin]
        bin_world = (x, y, z + BIN_WALL_HEIGHT_M)
        bin_local, _ = p.multiplyTransforms(inv_pos, inv_orn, bin_world, (0, 0, 0, 1))
        out[:] = (*local_pos, yaw, local_pos[2] + slot.kind.half_height_m, slot.kind.index, 1.0,
                  1.0 if robot.held is slot else 0.0, *bin_local)
        return out

    def render(self, camera_index: int) -> np.ndarray:
        """Render a camera as uint8 ``(height, width, 3)``; call at the policy rate only (~12 ms at 320×240)."""
        cam = self.config.cameras[camera_index]
        eye, target = cam.eye, cam.target
        light = DEFAULT_LIGHT if self._light_changed else {}
        draw = self.draw
        if draw is not None:
            eye = tuple(a + b for a, b in zip(eye, draw.camera_eye_offset_m, strict=True))
            target = tuple(a + b for a, b in zip(target, draw.camera_target_offset_m, strict=True))
            if draw.light is not None:
                light = {"lightDirection": draw.light.direction, "lightColor": draw.light.colour,
                         "lightAmbientCoeff": draw.light.ambient}
                self._light_changed = True
        view = p.computeViewMatrix(eye, target, (1, 0, 0) if eye[:2] == target[:2] else (0, 0, 1),
                                   physicsClientId=self.client)
        proj = p.computeProjectionMatrixFOV(cam.fov_deg, cam.width / cam.height, 0.05, 5.0,
                                            physicsClientId=self.client)
        _, _, rgba, _, _ = p.getCameraImage(cam.width, cam.height, view, proj, renderer=p.ER_TINY_RENDERER,
                                            physicsClientId=self.client, **light)
        return np.asarray(rgba, dtype=np.uint8).reshape(cam.height, cam.width, 4)[:, :, :3].copy()

    def close(self) -> None:
        """Disconnect from the physics server."""
        if self.client >= 0 and p.isConnected(self.client):
            p.disconnect(self.client)
        self.client = -1




def build_cell(config: CellConfig, physics_hz: float, arrivals: Sequence[Sequence[PartArrival]]) -> Cell:
    """Build the cell once, with a part pool large enough for the busiest episode of ``arrivals``."""
    most: Counter[str] = Counter()
    for episode in arrivals:
        for name, count in Counter(a.part_type for a in episode).items():
            most[name] = max(most[name], count)
    return Cell(config, physics_hz, dict(most))
