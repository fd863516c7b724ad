"""Job mode: teach-pendant style programs (MOVJ, MOVL, MOVC, PL blending, TIMER, DOUT, WAIT).

A job is YAML::

    name: scara_pick_place
    poses:                                 # teach points
      home: {joints: [0.0, 0.0, 0.0, 0.0]}  # rad (m for prismatic joints)
      above_pick: {xyz: [0.40, 0.10, 0.15], yaw: 0.0}   # TCP in the base frame, m and rad
      place: {xyz: [0.1, 0.45, 0.12], rpy: [3.14159, 0.0, 0.0]}
    program:
      - MOVJ home VJ=50 PL=0               # joint move at 50 % of max joint speed, exact stop
      - MOVL above_pick V=300 PL=3         # linear move at 300 mm/s, blend level 3 (0..8)
      - MOVC via end V=200                 # circular move through `via` to `end`
      - DOUT OT#(1) ON                     # output 1 (the gripper) on
      - WAIT IN#(1)=ON T=2.0               # wait for input 1 (e.g. part gripped), at most 2 s
      - TIMER T=0.5

``plan_job`` checks every step and pose before anything moves and refuses a bad one
with a ``JobError`` naming the file, line and step. ``JobRunner`` then feeds the plan to a
``ControlLoop`` and reports gripper outputs each tick.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from testbed.control.kinematics import KinematicChain, rpy_matrix
from testbed.control.lifecycle import LifecycleState
from testbed.control.loop import ControlLoop
from testbed.control.trajectory import (
    CartesianPath,
    JointMotion,
    PtpMotion,
    SampledMotion,
    arc_path,
    line_path,
    path_profile,
    peak_tcp_speed,
    plan_cartesian,
    sample_rows,
)
from testbed.errors import ControllerError, JobError

ROW_DT_S = 0.004  # spacing of streamed rows, like a 4 ms external-streaming interface
PATH_ACCEL_M_S2 = 2.0  # TCP acceleration of linear and circular moves
GRIPPER_CHANNEL = 1


# --------------------------------------------------------------------------- the language
@dataclass(frozen=True)
class Pose:
    """A teach point: joint positions, or a TCP pose (position + rpy or yaw) in the base frame."""

    name: str
    joints: tuple[float, ...] | None = None
    xyz: tuple[float, float, float] | None = None
    rpy: tuple[float, float, float] | None = None
    yaw: float | None = None

    def matrix(self) -> np.ndarray:
        """4x4 TCP pose (Cartesian poses only); a yaw-only pose points the tool down (z down)."""
        assert self.xyz is not None
        out = np.eye(4)
        out[:3, 3] = self.xyz
        if self.rpy is not None:
            out[:3, :3] = rpy_matrix(*self.rpy)
        else:
            out[:3, :3] = rpy_matrix(math.pi, 0.0, 0.0) @ rpy_matrix(0.0, 0.0, -(self.yaw or 0.0))
        return out


@dataclass(frozen=True)
class Step:
    """One program line.

    Args:
        op: ``MOVJ``, ``MOVL``, ``MOVC``, ``TIMER``, ``DOUT`` or ``WAIT``.
        index: position in the program (0-based).
        text: the line as written.
        where: ``file:line`` (or the source name) for messages.
        targets: pose names (MOVJ/MOVL: one; MOVC: via and end).
        speed: VJ in % for MOVJ, V in mm/s for MOVL/MOVC.
        pl: positioning level 0 (exact stop) .. 8 (widest blend).
        time_s: TIMER duration or WAIT timeout (None: wait forever).
        channel, value: DOUT/WAIT I/O channel and level.
    """

    op: str
    index: int
    text: str
    where: str
    targets: tuple[str, ...] = ()
    speed: float = 0.0
    pl: int = 0
    time_s: float | None = None
    channel: int = 0
    value: bool = False

    def fail(self, why: str) -> JobError:
        """A JobError naming this line and step."""
        return JobError(f"{self.where} program[{self.index}] '{self.text}': {why}")


@dataclass(frozen=True)
class Job:
    """A parsed job: named teach points and the program."""

    name: str
    source: str
    poses: dict[str, Pose]
    steps: tuple[Step, ...]


_MOVE = re.compile(r"^(MOVJ|MOVL|MOVC)\s+(.*)$")
_TIMER = re.compile(r"^TIMER\s+T=(\S+)$")
_DOUT = re.compile(r"^DOUT\s+OT#\((\d+)\)\s+(ON|OFF)$")
_WAIT = re.compile(r"^WAIT\s+IN#\((\d+)\)=(ON|OFF)(?:\s+T=(\S+))?$")


def _number(step_fail: Any, key: str, text: str, lo: float, hi: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise step_fail(f"{key} must be a number, got '{text}'") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise step_fail(f"{key}={text} is out of range (expected {lo:g}..{hi:g})")
    return value


def _parse_step(index: int, raw: Any, where: str, poses: Mapping[str, Pose]) -> Step:
    text = " ".join(str(raw).split()) if isinstance(raw, str) else repr(raw)
    base = Step(op="?", index=index, text=text, where=where)
    if not isinstance(raw, str):
        raise base.fail("each program line must be a string like 'MOVJ home VJ=50 PL=0'")
    original = " ".join(raw.split())
    base = Step(op="?", index=index, text=original, where=where)
    if m := _MOVE.match(" ".join(raw.split()).upper()):
        op = m.group(1)
        words = " ".join(raw.split()).split()[1:]
        names = [w for w in words if "=" not in w]
        params = {}
        for w in words:
            if "=" in w:
                k, _, v = w.partition("=")
                params[k.upper()] = v
        step = Step(op=op, index=index, text=original, where=where)
        want = 2 if op == "MOVC" else 1
        if len(names) != want:
            raise step.fail(f"{op} takes {want} pose name{'s' if want > 1 else ''}, got {names}")
        for n in names:
            if n not in poses:
                raise step.fail(f"unknown pose '{n}' (poses: {', '.join(sorted(poses)) or 'none'})")
        speed_key = "VJ" if op == "MOVJ" else "V"
        allowed = {speed_key, "PL"}
        extra = set(params) - allowed
        if extra:
            raise step.fail(f"unknown parameter(s) {sorted(extra)} for {op} (allowed: {sorted(allowed)})")
        if speed_key not in params:
            raise step.fail(f"{op} needs {speed_key}=... ({'% of max joint speed' if op == 'MOVJ' else 'mm/s'})")
        speed = (
            _number(step.fail, "VJ", params["VJ"], 0.01, 100.0)
            if op == "MOVJ"
            else _number(step.fail, "V", params["V"], 0.1, 10000.0)
        )
        pl = 0
        if "PL" in params:
            if params["PL"] not in {str(i) for i in range(9)}:
                raise step.fail(f"PL={params['PL']} is out of range (expected an integer 0..8)")
            pl = int(params["PL"])
        return Step(op=op, index=index, text=original, where=where, targets=tuple(names), speed=speed, pl=pl)
    upper = " ".join(raw.split()).upper()
    if m := _TIMER.match(upper):
        return Step(op="TIMER", index=index, text=original, where=where,
                    time_s=_number(base.fail, "T", m.group(1), 0.0, 3600.0))
    if m := _DOUT.match(upper):
        return Step(op="DOUT", index=index, text=original, where=where, channel=int(m.group(1)),
                    value=m.group(2) == "ON")
    if m := _WAIT.match(upper):
        timeout = None if m.group(3) is None else _number(base.fail, "T", m.group(3), 0.0, 3600.0)
        return Step(op="WAIT", index=index, text=original, where=where, channel=int(m.group(1)),
                    value=m.group(2) == "ON", time_s=timeout)
    raise base.fail(
        "unknown instruction (expected MOVJ <pose> VJ=%, MOVL <pose> V=mm/s, MOVC <via> <end> V=mm/s, "
        "TIMER T=s, DOUT OT#(n) ON|OFF, WAIT IN#(n)=ON|OFF [T=s])"
    )


def _parse_pose(name: str, raw: Any, where: str) -> Pose:
    def fail(why: str) -> JobError:
        return JobError(f"{where} poses.{name}: {why}")

    if not isinstance(raw, Mapping):
        raise fail("a pose is a mapping with 'joints', or 'xyz' and 'rpy' or 'yaw'")
    keys = set(raw)
    if keys - {"joints", "xyz", "rpy", "yaw"}:
        raise fail(f"unknown keys {sorted(keys - {'joints', 'xyz', 'rpy', 'yaw'})} (allowed: joints, xyz, rpy, yaw)")

    def floats(key: str, n: int | None) -> tuple[float, ...]:
        v = raw[key]
        if not isinstance(v, Sequence) or isinstance(v, str) or (n is not None and len(v) != n):
            raise fail(f"'{key}' must be a list of {n if n else 'joint'} numbers, got {v!r}")
        try:
            out = tuple(float(x) for x in v)
        except (TypeError, ValueError):
            raise fail(f"'{key}' must hold numbers, got {v!r}") from None
        if not all(math.isfinite(x) for x in out):
            raise fail(f"'{key}' must hold finite numbers, got {v!r}")
        return out

    if "joints" in raw:
        if keys != {"joints"}:
            raise fail("give either 'joints' or a Cartesian pose ('xyz' with 'rpy' or 'yaw'), not both")
        return Pose(name, joints=floats("joints", None))
    if "xyz" not in raw:
        raise fail("a Cartesian pose needs 'xyz' (m)")
    if "rpy" in raw and "yaw" in raw:
        raise fail("give 'rpy' or 'yaw', not both")
    xyz = floats("xyz", 3)
    rpy = floats("rpy", 3) if "rpy" in raw else None
    yaw = None
    if "yaw" in raw:
        try:
            yaw = float(raw["yaw"])
        except (TypeError, ValueError):
            raise fail(f"'yaw' must be a number (rad), got {raw['yaw']!r}") from None
    return Pose(name, xyz=(xyz[0], xyz[1], xyz[2]), rpy=None if rpy is None else (rpy[0], rpy[1], rpy[2]), yaw=yaw)


def parse_job(data: Mapping[str, Any], *, source: str = "<job>", lines: Sequence[int] | None = None) -> Job:
    """Check and parse a job mapping (``name``, ``poses``, ``program``).

    Args:
        data: the job as loaded from YAML.
        source: file name (or other label) used in error messages.
        lines: 1-based file line of each program entry, when known.

    Raises:
        JobError: naming ``source:line program[i]`` and what was expected.
    """
    if not isinstance(data, Mapping):
        raise JobError(f"{source}: a job is a mapping with 'name', 'poses' and 'program'")
    unknown = set(data) - {"name", "poses", "program"}
    if unknown:
        raise JobError(f"{source}: unknown job keys {sorted(unknown)} (allowed: name, poses, program)")
    poses_raw = data.get("poses") or {}
    if not isinstance(poses_raw, Mapping):
        raise JobError(f"{source}: 'poses' must be a mapping of name -> pose")
    poses = {str(k): _parse_pose(str(k), v, source) for k, v in poses_raw.items()}
    program = data.get("program")
    if not isinstance(program, list) or not program:
        raise JobError(f"{source}: 'program' must be a non-empty list of instructions")
    steps = []
    for i, raw in enumerate(program):
        where = f"{source}:{lines[i]}" if lines is not None and i < len(lines) else source
        steps.append(_parse_step(i, raw, where, poses))
    return Job(name=str(data.get("name", Path(source).stem)), source=source, poses=poses, steps=tuple(steps))


def load_job(path: Path | str, key: str | None = None) -> Job:
    """Read a job from a YAML file (the whole file, or the mapping under top-level ``key``).

    Raises:
        JobError: unreadable file or YAML, or an invalid job (naming the line).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise JobError(f"{path}: cannot read job: {exc}") from exc
    return parse_job_text(text, source=str(path), key=key)


def parse_job_text(text: str, *, source: str, key: str | None = None) -> Job:
    """Parse a job from YAML text, keeping each program line's line number for error messages.

    Raises:
        JobError: malformed YAML or an invalid job (naming ``source:line``).
    """
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JobError(f"{source}: cannot read job: {exc}") from exc
    if key is not None:
        if not isinstance(data, Mapping) or key not in data:
            raise JobError(f"{source}: no top-level '{key}' holding a job")
        data = data[key]
        node = next(v for k, v in node.value if k.value == key)  # type: ignore[union-attr]
    lines = None
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == "program" and isinstance(v, yaml.SequenceNode):
                lines = [item.start_mark.line + 1 for item in v.value]
    return parse_job(data, source=source, lines=lines)


# --------------------------------------------------------------------------- planning
@dataclass
class Segment:
    """A planned motion of one program line, starting at ``start_s`` on the job's motion clock."""

    step: Step
    motion: JointMotion
    caps: MotionCaps | None = None
    slowed: SlowedMove | None = None


@dataclass(frozen=True)
class SlowedMove:
    """A MOVL/MOVC line planned slower than its V, so that every joint keeps within its limits.

    Args:
        step: the program line.
        factor: the move takes this many times as long as it would at its V (> 1).
        speed_m_s: the TCP speed it asked for (its V, times any speed override).
        reached_m_s: the highest TCP speed of its planned rows (``ROW_DT_S`` apart).
        offset_s: when the move starts, from the start of its ``MotionBlock`` (0 until blended).
    """

    step: Step
    factor: float
    speed_m_s: float
    reached_m_s: float
    offset_s: float = 0.0

    def event_detail(self, job: str) -> dict[str, object]:
        """The fields of the ``move_slowed`` event a run or a controller records when the move starts."""
        return {"job": job, "step": self.step.index, "line": self.step.text, "where": self.step.where,
                "factor": round(self.factor, 4), "speed_m_s": round(self.speed_m_s, 4),
                "reached_m_s": round(self.reached_m_s, 4)}


@dataclass(frozen=True)
class MotionCaps:
    """What a program line is programmed to: a blend with its neighbour keeps within the higher of theirs.

    Args:
        joint_velocity, joint_acceleration: per-joint bounds ``(n_joints,)`` (MOVJ: its VJ share of the limits).
        tcp_speed_m_s: TCP speed bound (MOVL/MOVC: its V; MOVJ: the TCP speed limit).
    """

    joint_velocity: np.ndarray
    joint_acceleration: np.ndarray
    tcp_speed_m_s: float


@dataclass(frozen=True)
class MotionBlock:
    """Consecutive motion lines of a job, blended into rows ``ROW_DT_S`` apart for ``ControlLoop.submit_chunk``.

    Args:
        steps: the motion lines, in program order.
        rows: ``(rows, n_joints)`` joint positions.
        slowed: its lines planned slower than their V, in program order (``offset_s`` from the block's start).
    """

    steps: tuple[Step, ...]
    rows: np.ndarray
    slowed: tuple[SlowedMove, ...] = ()


@dataclass(frozen=True)
class JobProgram:
    """What a ``JobRunner`` executes: motion blocks and non-motion steps in program order.

    Plain data (picklable), so a job can be planned in another process or thread and run here.

    Args:
        job: the parsed job.
        q_start: joint positions the plan starts from.
        blocks: ``MotionBlock`` for each motion group, the ``Step`` itself for TIMER, DOUT and WAIT.
    """

    job: Job
    q_start: np.ndarray
    blocks: tuple[MotionBlock | Step, ...]

    @property
    def slowed(self) -> tuple[SlowedMove, ...]:
        """Every MOVL/MOVC line planned slower than its V, in program order."""
        return tuple(move for block in self.blocks if isinstance(block, MotionBlock) for move in block.slowed)


@dataclass
class JobPlan:
    """Every motion of a job planned from a start configuration, grouped between non-motion lines.

    ``blocks`` alternates motion groups (lists of ``Segment``) with single non-motion steps,
    in program order; ``program`` is the same plan with every group blended into rows.
    """

    job: Job
    q_start: np.ndarray
    blocks: list[list[Segment] | Step]
    program: JobProgram


def _joint_target(step: Step, pose: Pose, chain: KinematicChain, model: Any, q_prev: np.ndarray) -> np.ndarray:
    n = int(model.n_joints)
    if pose.joints is not None:
        q = np.asarray(pose.joints, float)
        if q.shape != (n,):
            raise step.fail(f"pose '{pose.name}' has {q.size} joints, the robot has {n}")
    else:
        mode = "yaw" if (pose.yaw is not None or n < 6) else "full"
        result = chain.inverse(pose.matrix(), q_prev, orientation=mode)
        if not result.ok:
            raise step.fail(
                f"pose '{pose.name}' is unreachable: closest TCP is {result.position_error_m * 1e3:.1f} mm / "
                f"{math.degrees(result.rotation_error_rad):.1f} deg away within the joint limits"
            )
        q = result.q
    lo, hi = np.asarray(model.lower), np.asarray(model.upper)
    if np.any(q < lo - 1e-9) or np.any(q > hi + 1e-9):
        bad = np.flatnonzero((q < lo - 1e-9) | (q > hi + 1e-9)).tolist()
        raise step.fail(f"pose '{pose.name}' puts joints {bad} outside their limits")
    return np.clip(q, lo, hi)


def _limit_tcp_speed(motion: JointMotion, chain: KinematicChain, limit_m_s: float) -> JointMotion:
    """Stretch a joint motion in time where its TCP would move faster than ``limit_m_s``."""
    rows = sample_rows(motion, ROW_DT_S)
    if len(rows) < 2:
        return motion
    speed = peak_tcp_speed(chain, rows, ROW_DT_S)
    if speed <= limit_m_s:
        return motion
    return SampledMotion(rows, ROW_DT_S * speed / limit_m_s)


MAX_SLOWDOWN = 20.0  # a linear/circular move is slowed at most this much to fit the joint limits
_RETIMES = 12  # at most this many passes of path IK to find the slowdown (two when the first estimate fits)
# the slowdown is aimed this far inside the limits: a slower pass's rows scale only nearly as 1/k (velocity)
# and 1/k^2 (acceleration); the sia10f's lines came within 0.2-0.5 % of the estimate
_SLOWDOWN_AIM = 0.99


def _row_peaks(rows: np.ndarray, model: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per joint, peak finite-difference velocity and acceleration over ``ROW_DT_S`` rows (from and
    to rest: the rows are padded with their ends), as fractions of the model's limits."""
    padded = np.vstack([rows[:1], rows, rows[-1:]])
    vel = np.max(np.abs(np.diff(padded, axis=0)), axis=0) / ROW_DT_S / np.asarray(model.velocity, float)
    acc = np.max(np.abs(np.diff(padded, 2, axis=0)), axis=0) / ROW_DT_S**2 / np.asarray(model.acceleration, float)
    return vel, acc


def _follow_path(step: Step, chain: KinematicChain, q_start: np.ndarray, path: CartesianPath, speed_m_s: float,
                 accel_m_s2: float, orientation: str, slowdown: float = 1.0) -> SampledMotion:
    """Rows ``ROW_DT_S`` apart along ``path`` on a trapezoid of ``speed_m_s``/``accel_m_s2``, both slowed
    uniformly (speed / ``slowdown``, acceleration / ``slowdown``^2), each row's IK
    continued from the one before (``KinematicChain.track``: tight, no jitter, limits avoided in the null space).

    The motion lasts the profile's duration (the last row, the path's end, is held from then on), as
    ``plan_cartesian``'s does: lines blend and follow each other at the same times."""
    duration, s_of_t, length = path_profile(path, speed_m_s, accel_m_s2, slowdown)
    n = max(2, math.ceil(duration / ROW_DT_S - 1e-9) + 1)
    rows = np.zeros((n, chain.n_joints))
    q = np.asarray(q_start, float).copy()
    for k in range(n):
        s = s_of_t(min(k * ROW_DT_S, duration)) if duration > 0 else length
        result = chain.track(path.pose(s / length), q, orientation=orientation)
        if not result.ok:
            raise step.fail(f"path unreachable at {100 * s / length:.0f}% of its length: IK error "
                            f"{result.position_error_m * 1e3:.2f} mm, {math.degrees(result.rotation_error_rad):.2f} "
                            "deg within the joint limits")
        q = result.q
        rows[k] = q
    motion = SampledMotion(rows, ROW_DT_S)
    motion.duration_s = min(motion.duration_s, duration) if duration > 0 else motion.duration_s
    return motion


def _plan_path(step: Step, chain: KinematicChain, q: np.ndarray, path: CartesianPath, speed_m_s: float,
               accel_m_s2: float, model: Any, orientation: str) -> JointMotion:
    """A MOVL/MOVC motion whose rows keep within every joint's velocity and acceleration limits.

    ``plan_cartesian``'s motion is kept as it is when its rows fit. Otherwise (or when its IK fails)
    the path is followed again row by row (``_follow_path``) and, if that is still too fast at V, slowed down uniformly
    (speed / k, acceleration / k^2) until the rows fit. Slowed so, joint velocities scale ~1/k and accelerations
    ~1/k^2: the first pass's peak ratio ``max(vel, sqrt(acc))`` gives k (aimed ``_SLOWDOWN_AIM`` inside), which a
    second pass checks; only if it does not fit is k raised again from that pass's ratio.

    Raises:
        JobError: no slowdown up to ``MAX_SLOWDOWN`` fits (a jump between rows: an IK branch change or
            a singularity on the path), naming the line and the joint.
    """
    try:
        motion = plan_cartesian(chain, q, path, speed_m_s, accel_m_s2, model.velocity, orientation=orientation,
                                dt_s=ROW_DT_S)
    except ControllerError:
        pass  # its IK stalls where a joint sits at a limit; the path is followed again below
    else:
        vel, acc = _row_peaks(sample_rows(motion, ROW_DT_S), model)
        if np.all(vel <= 1.0) and np.all(acc <= 1.0):
            return motion
    k = 1.0
    for _ in range(_RETIMES):
        motion = _follow_path(step, chain, q, path, speed_m_s, accel_m_s2, orientation, k)
        vel, acc = _row_peaks(sample_rows(motion, ROW_DT_S), model)
        need = max(float(vel.max()), math.sqrt(float(acc.max())))
        if need <= 1.0:
            return motion
        if k >= MAX_SLOWDOWN:
            break
        k = min(MAX_SLOWDOWN, k * max(need / _SLOWDOWN_AIM, 1.01))
    ratio = np.maximum(vel, acc)
    j = int(np.argmax(ratio))
    name = chain.joint_names[j] if j < len(chain.joint_names) else f"joint {j}"
    what = "velocity" if vel[j] >= acc[j] else "acceleration"
    raise step.fail(
        f"joint {name} cannot follow the path within its {what} limit: {ratio[j]:.1f}x the limit even "
        f"slowed to 1/{k:g} of V (a jump between rows: the path crosses a singularity or the arm changes "
        "configuration)"
    )


def plan_job(
    job: Job,
    model: Any,
    q_start: np.ndarray,
    *,
    chain: KinematicChain | None = None,
    speed_scale: float = 1.0,
) -> JobPlan:
    """Plan every motion of ``job`` for ``model`` starting at ``q_start``, before anything moves.

    Args:
        job: the parsed job.
        model: ``testbed.robots.RobotModel`` (limits, ``urdf_path``, ``tcp_link``, ``tcp_speed_m_s``).
        q_start: joint positions the robot is at when the job starts.
        chain: kinematics (default: built from the model's URDF and TCP link).
        speed_scale: reduced-speed factor applied to every speed.

    Raises:
        JobError: a pose is unreachable or out of limits, a parameter is bad, or a path leaves
            the workspace, naming the line and step.
    """
    chain = chain or KinematicChain.from_urdf(model.urdf_path, model.tcp_link)
    n = int(model.n_joints)
    q = np.asarray(q_start, float)[:n].copy()
    tcp_limit = float(model.tcp_speed_m_s) * speed_scale
    orient = "yaw" if n < 6 else "full"
    q_start = q.copy()
    blocks: list[list[Segment] | Step] = []
    group: list[Segment] = []
    for step in job.steps:
        if step.op in ("TIMER", "DOUT", "WAIT"):
            if group:
                blocks.append(group)
                group = []
            blocks.append(step)
            continue
        try:
            motion: JointMotion
            if step.op == "MOVJ":
                target = _joint_target(step, job.poses[step.targets[0]], chain, model, q)
                frac = step.speed / 100.0 * speed_scale
                motion = PtpMotion(q, target, model.velocity * frac, model.acceleration * frac,
                                   model.jerk * frac)
                motion = _limit_tcp_speed(motion, chain, tcp_limit)
                caps = MotionCaps(np.asarray(model.velocity, float) * frac,
                                  np.asarray(model.acceleration, float) * frac, tcp_limit)
                slowed = None  # a MOVJ is timed by its VJ, and stretched only to the TCP speed limit
            else:
                speed = step.speed / 1000.0 * speed_scale
                if speed > tcp_limit + 1e-12:
                    raise step.fail(
                        f"V={step.speed:g} mm/s exceeds the TCP speed limit {tcp_limit * 1e3:g} mm/s"
                    )
                start_pose = chain.forward(q)
                poses = [job.poses[name] for name in step.targets]
                ends = []
                for pose in poses:  # every teach point must be reachable before its path is tried
                    q_pose = _joint_target(step, pose, chain, model, q)
                    ends.append(chain.forward(q_pose) if pose.joints is not None else pose.matrix())
                path = line_path(start_pose, ends[0]) if step.op == "MOVL" else arc_path(start_pose, *ends)
                motion = _plan_path(step, chain, q, path, speed, PATH_ACCEL_M_S2 * speed_scale, model, orient)
                caps = MotionCaps(np.asarray(model.velocity, float), np.asarray(model.acceleration, float), speed)
                slowed = _slowed_move(step, motion, path, speed, PATH_ACCEL_M_S2 * speed_scale, chain)
        except ControllerError as exc:
            raise step.fail(str(exc)) from exc
        group.append(Segment(step, motion, caps, slowed))
        q = np.asarray(motion.end, float).copy()
    if group:
        blocks.append(group)
    # blended here, with the planning: blending a group takes ~1-3 ms, too long for a 1 ms control cycle
    program = JobProgram(job, q_start, tuple(_motion_block(b, chain) if isinstance(b, list) else b for b in blocks))
    return JobPlan(job, q_start, blocks, program)


def _slowed_move(step: Step, motion: JointMotion, path: CartesianPath, speed_m_s: float, accel_m_s2: float,
                 chain: KinematicChain) -> SlowedMove | None:
    """What a MOVL/MOVC's planned motion gave up of its V (None if it moves at it): its duration over the profile's."""
    nominal_s = path_profile(path, speed_m_s, accel_m_s2)[0]
    if nominal_s <= 0.0 or motion.duration_s <= nominal_s * (1.0 + 1e-6):
        return None
    reached = peak_tcp_speed(chain, sample_rows(motion, ROW_DT_S), ROW_DT_S)
    return SlowedMove(step, motion.duration_s / nominal_s, speed_m_s, reached)


def _motion_block(group: Sequence[Segment], chain: KinematicChain) -> MotionBlock:
    """A motion group blended into rows, with its slowed lines placed at their starts within the rows."""
    rows, starts = _blend(group, ROW_DT_S, chain)
    slowed = tuple(replace(seg.slowed, offset_s=start) for seg, start in zip(group, starts, strict=True)
                   if seg.slowed is not None)
    return MotionBlock(tuple(seg.step for seg in group), rows, slowed)


def blend_group(group: Sequence[Segment], dt_s: float = ROW_DT_S, *,
                chain: KinematicChain | None = None) -> np.ndarray:
    """Rows of a motion group, overlapping consecutive segments by their PL level.

    Segment i+1 starts ``PL/8 * min(d_i, d_{i+1}) / 2`` before segment i ends and its
    motion is added to the tail of segment i (superposition blending); PL=0 is an exact stop.

    Superposed motions add their speeds. With ``chain`` and both segments' ``caps``, a blend
    whose rows would be faster than both lines are programmed to (joint velocity, joint
    acceleration, TCP speed; each bound the higher of the two lines' or of what either motion
    alone does there) is made longer: its overlap shrinks (bisection, ``BLEND_BISECTIONS``
    steps; overlap 0 is an exact stop) until every row of the blend is within them. Blends
    within bounds, and groups without blends, are rows as superposed.
    """
    return _blend(group, dt_s, chain)[0]


def _blend(group: Sequence[Segment], dt_s: float, chain: KinematicChain | None) -> tuple[np.ndarray, list[float]]:
    """``blend_group``'s rows, and when each segment starts in them (s from the first row)."""
    overlaps = [prev.step.pl / 8.0 * 0.5 * min(prev.motion.duration_s, nxt.motion.duration_s)
                for prev, nxt in itertools.pairwise(group)]
    rows, starts = _superpose(group, overlaps, dt_s)
    if chain is None:
        return rows, starts
    # left to right: a blend's rows depend on the overlaps before it only (blends do not overlap each other)
    for k, (prev, nxt) in enumerate(itertools.pairwise(group)):
        if overlaps[k] <= 0 or prev.caps is None or nxt.caps is None:
            continue
        if _blend_within_caps(rows, starts, k, group, chain, dt_s):
            continue
        programmed, ok, too_fast = overlaps[k], 0.0, 1.0
        for _ in range(BLEND_BISECTIONS):
            mid = 0.5 * (ok + too_fast)
            overlaps[k] = programmed * mid
            rows, starts = _superpose(group, overlaps, dt_s)
            if _blend_within_caps(rows, starts, k, group, chain, dt_s):
                ok = mid
            else:
                too_fast = mid
        overlaps[k] = programmed * ok
        rows, starts = _superpose(group, overlaps, dt_s)
    return rows, starts


BLEND_BISECTIONS = 10  # a too-fast blend's overlap is found within 1/1024 of its programmed length


def _superpose(group: Sequence[Segment], overlaps: Sequence[float], dt_s: float) -> tuple[np.ndarray, list[float]]:
    """Rows of the group with segment i+1 starting ``overlaps[i]`` before segment i ends; and the start times."""
    starts = [0.0]
    for prev, overlap in zip(group, overlaps, strict=False):
        starts.append(starts[-1] + prev.motion.duration_s - overlap)
    total = max(s + seg.motion.duration_s for s, seg in zip(starts, group, strict=True))
    n_rows = max(1, math.ceil(total / dt_s - 1e-9) + 1)
    rows = np.tile(np.asarray(group[0].motion.start, float), (n_rows, 1))
    times = np.arange(n_rows) * dt_s
    for s, seg in zip(starts, group, strict=True):
        start = np.asarray(seg.motion.start, float)
        for k, t in enumerate(times):
            if t >= s:
                rows[k] += seg.motion.sample(float(t - s))[0] - start
    return rows, starts


def _blend_within_caps(rows: np.ndarray, starts: Sequence[float], k: int, group: Sequence[Segment],
                       chain: KinematicChain, dt_s: float) -> bool:
    """Whether the rows of the blend of segments k and k+1 keep within the two lines' bounds.

    Rows are compared by finite differences ``dt_s`` apart, as the loop streams them, from one
    row before the blend starts to one after it ends. Each bound is the higher of the two lines'
    programmed one and of what each motion alone does over the same rows (a blend may be as
    fast as the moves it joins, never faster).
    """
    a, b = group[k], group[k + 1]
    assert a.caps is not None and b.caps is not None
    t0, t1 = starts[k + 1], starts[k] + a.motion.duration_s
    k0 = max(0, math.floor(t0 / dt_s) - 1)
    k1 = min(len(rows) - 1, math.ceil(t1 / dt_s) + 1)
    if k1 - k0 < 2:
        return True
    times = np.arange(k0, k1 + 1) * dt_s
    blended = rows[k0:k1 + 1]
    alone = [np.array([seg.motion.sample(max(float(t - s), 0.0))[0] for t in times])
             for s, seg in ((starts[k], a), (starts[k + 1], b))]
    tol = 1.0 + 1e-9

    def peak(x: np.ndarray, order: int) -> np.ndarray:
        return np.max(np.abs(np.diff(x, order, axis=0)), axis=0) / dt_s**order

    for order, cap in ((1, np.maximum(a.caps.joint_velocity, b.caps.joint_velocity)),
                       (2, np.maximum(a.caps.joint_acceleration, b.caps.joint_acceleration))):
        bound = np.maximum(cap, np.maximum(peak(alone[0], order), peak(alone[1], order)))
        if np.any(peak(blended, order) > bound * tol):
            return False

    bound = max(a.caps.tcp_speed_m_s, b.caps.tcp_speed_m_s, peak_tcp_speed(chain, alone[0], dt_s),
                peak_tcp_speed(chain, alone[1], dt_s))
    return peak_tcp_speed(chain, blended, dt_s) <= bound * tol


# --------------------------------------------------------------------------- running
@dataclass(frozen=True)
class JobOutputs:
    """What a job asks of the cell this tick.

    Args:
        gripper: new gripper command (True close / False open) when a DOUT on channel 1 ran this tick, else None.
        done: the program has finished.
        step: index of the program line being executed (len(program) when done).
        failed: why the job stopped early (WAIT timeout, controller stop), else None.
        outputs: every DOUT channel set this tick (channel -> level).
        slowed: the lines planned slower than their V that started this tick.
    """

    gripper: bool | None
    done: bool
    step: int
    failed: str | None = None
    outputs: dict[int, bool] = field(default_factory=dict)
    slowed: tuple[SlowedMove, ...] = ()


class JobRunner:
    """Runs a planned job on one robot of a ``ControlLoop``.

    Call ``start(t_s)`` once (it plans from the robot's current set-point and refuses bad
    jobs before any motion), or ``start_program(t_s, program)`` with a program planned
    elsewhere (another thread or process), then ``tick(t_s)`` every control cycle (before or
    after ``ControlLoop.tick``) and apply the returned gripper command. Inputs for ``WAIT``
    come from ``set_input``.

    Args:
        job: the parsed job.
        model: the robot model of ``robot``.
        loop: the control loop that moves the robot.
        robot: the robot's index in the loop.
        speed_scale: reduced-speed factor for every move.
    """

    def __init__(self, job: Job, model: Any, loop: ControlLoop, robot: int, *, speed_scale: float = 1.0,
                 plan_cache: dict[tuple[float, ...], JobPlan] | None = None) -> None:
        self.job = job
        # planning takes tens of ms (IK along every path); a program restarted from the same pose reuses its plan
        self._plan_cache = plan_cache
        self._model = model
        self._loop = loop
        self._robot = robot
        self._speed_scale = speed_scale
        self._chain: KinematicChain | None = None  # built on the first local plan
        self._inputs: dict[int, bool] = {}
        self.plan: JobPlan | None = None
        self._program: JobProgram | None = None
        self._block = 0
        self._block_start = 0.0
        self._block_end: float | None = None
        self._slowed_ahead: tuple[SlowedMove, ...] = ()  # slowed lines of the motion block not yet started
        self._done = False
        self._failed: str | None = None

    def set_input(self, channel: int, value: bool) -> None:
        """Set digital input ``channel`` (what ``WAIT IN#(channel)`` waits for)."""
        self._inputs[channel] = bool(value)

    def start(self, t_s: float) -> JobPlan:
        """Plan the whole job from the robot's current set-point and start it at ``t_s``.

        Raises:
            JobError: the job cannot run (naming the line); nothing has moved.
        """
        n = int(self._model.n_joints)
        q0 = self._loop.setpoint[self._robot, :n].copy()
        key = tuple(np.round(q0, 9).tolist())
        cached = self._plan_cache.get(key) if self._plan_cache is not None else None
        if cached is None:
            if self._chain is None:
                self._chain = KinematicChain.from_urdf(self._model.urdf_path, self._model.tcp_link)
            cached = plan_job(self.job, self._model, q0, chain=self._chain, speed_scale=self._speed_scale)
            if self._plan_cache is not None:
                self._plan_cache[key] = cached
        self.plan = cached
        self.start_program(t_s, cached.program)
        return cached

    def start_program(self, t_s: float, program: JobProgram) -> None:
        """Start a program planned elsewhere (e.g. by ``plan_job`` in another process) at ``t_s``.

        Cheap enough for a control cycle: it only queues the first motion block's rows.

        Raises:
            JobError: the program is for another job or another joint count.
        """
        n = int(self._model.n_joints)
        if program.job is not self.job and program.job != self.job:
            raise JobError(f"{self.job.source}: the program was planned for job {program.job.name!r}, "
                           f"not {self.job.name!r}")
        for block in program.blocks:
            if isinstance(block, MotionBlock) and block.rows.shape[1] != n:
                raise JobError(f"{self.job.source}: the program moves {block.rows.shape[1]} joints, "
                               f"robot {self._robot} has {n}")
        self._program = program
        self._block = 0
        self._done = False
        self._failed = None
        self._enter(t_s)

    def tick(self, t_s: float) -> JobOutputs:
        """Advance the program to ``t_s``; returns I/O requests and progress."""
        program = self._program
        if program is None:
            raise JobError(f"{self.job.source}: JobRunner.tick called before start()")
        outputs: dict[int, bool] = {}
        slowed: tuple[SlowedMove, ...] = ()
        if not self._done and self._loop.state(self._robot) is not LifecycleState.ACTIVE:
            self._stop(f"controller is {self._loop.state(self._robot).name}")
        while not self._done:
            block = program.blocks[self._block]
            if isinstance(block, MotionBlock):
                assert self._block_end is not None
                if self._slowed_ahead:
                    slowed += self._started_slowed(t_s)
                if t_s < self._block_end:
                    break
            elif block.op == "DOUT":
                outputs[block.channel] = block.value
            elif block.op == "TIMER":
                assert block.time_s is not None
                if t_s < self._block_start + block.time_s:
                    break
            elif block.op == "WAIT" and self._inputs.get(block.channel, False) != block.value:
                if block.time_s is not None and t_s >= self._block_start + block.time_s:
                    self._stop(
                        f"{block.where} program[{block.index}] '{block.text}': timed out after {block.time_s:g} s"
                    )
                break
            self._block += 1
            if self._block >= len(program.blocks):
                self._done = True
                break
            self._enter(t_s)
        return JobOutputs(
            gripper=outputs.get(GRIPPER_CHANNEL),
            done=self._done,
            step=self._current_step(),
            failed=self._failed,
            outputs=outputs,
            slowed=slowed,
        )

    def _started_slowed(self, t_s: float) -> tuple[SlowedMove, ...]:
        """The slowed lines of the current motion block that have started by ``t_s`` and were not reported yet."""
        ahead = self._slowed_ahead
        n = 0
        while n < len(ahead) and t_s >= self._block_start + ahead[n].offset_s - 1e-9:
            n += 1
        self._slowed_ahead = ahead[n:]
        return ahead[:n]

    def _enter(self, t_s: float) -> None:
        assert self._program is not None
        self._block_start = t_s
        self._block_end = None
        block = self._program.blocks[self._block]
        self._slowed_ahead = ()
        if isinstance(block, MotionBlock):
            self._loop.submit_chunk(self._robot, block.rows, t_s, ROW_DT_S, hold_after=True)
            self._block_end = t_s + (len(block.rows) - 1) * ROW_DT_S
            self._slowed_ahead = block.slowed

    def _stop(self, why: str) -> None:
        self._failed = why
        self._done = True
        if self._loop.state(self._robot) is LifecycleState.ACTIVE:
            self._loop.hold(self._robot)

    def _current_step(self) -> int:
        assert self._program is not None
        if self._done and self._failed is None:
            return len(self.job.steps)
        blocks = self._program.blocks
        block = blocks[min(self._block, len(blocks) - 1)]
        return block.steps[0].index if isinstance(block, MotionBlock) else block.index
