"""The vectorized control loop: every robot of a scenario in one numpy update per cycle.

State and commands are ``(robots, max_joints)`` float64 arrays, padded where models have
fewer joints. One ``tick`` interpolates the streamed targets, limits the set-point's
position, velocity and acceleration, and runs the safety checks for all robots at once,
without allocating and without a Python loop over robots. Rare events (stops, faults,
timeouts) leave the vectorized path through a cheap ``any()`` test.

Limiting law, per joint, with a the acceleration limit and dt the cycle: the desired
velocity points at the target with magnitude ``min(v_max, vb(|e|))`` where
``vb(d) = (sqrt(9 a^2 dt^2 + 8 a d) - 3 a dt) / 2`` is the largest velocity from which
braking at ``a`` (semi-implicit Euler, the integrator used here) still stops within
``d``. The velocity change per cycle is clipped to ``a dt``. Targets are clamped into
the joint range when they arrive, so the braking invariant keeps the set-point inside
the range without ever needing more than ``a`` of deceleration. The target's own
velocity is fed forward, so a stream that respects the limits is followed exactly (no lag).

Short path: while every joint is further from its limits than it brakes from v_max (and than
one step), the joint-limit term is v_max exactly and no step can reach a limit, so ``tick`` skips
both (13 of its 37 numpy calls); the loop counts how many ticks that holds from the joints'
distances and speeds (``_count_far_ticks``). Same set-points to the bit.

TCP speed (``limit_tcp_speed``, for reduced-speed and collaborative operation): robots given a
limit L have each cycle's set-point step held to ``sum_j reach_j |step_j| <= L dt``, with
``reach_j`` a bound of the tool's speed per unit speed of joint j over the whole range
(``KinematicChain.axis_reach_m``). That bounds both the tool's instantaneous speed and its
displacement between two set-points, whatever the pose: conservative (the true speed is
lower, most where joints move the tool in different directions), never above the limit.

Cost: at 256 robots a tick is memory-bound: its arrays start on cache lines (``_aligned``) and its ufuncs are
bound once and called with positional outputs; at 1 robot it is the ~25 ufunc calls' own overhead.

Scalar path: with few robots (``scalar_max_robots``, default 2) and neither a protective stop nor a TCP limit
active, ``tick`` runs the same law on Python floats, element by element in the very same operation order
(``_tick_scalar``). IEEE +, -, *, /, sqrt, copysign and comparisons are correctly rounded in both, and minimum and
maximum are written as numpy evaluates them (on a tie, or -0.0 against 0.0, the second operand), so the set-points
are the same to the bit (``tests/control/test_loop_scalar.py`` drives both paths through long random sequences).
The arrays stay the state: the scalar path reads and writes them (the segment look-up and the far-from-limits
count have scalar twins too); measurement faults, stream timeouts and ``submit_chunk`` are the vectorized code
(a scalar ``submit_chunk`` was tried: slower, 33 vs 21 µs a chunk).

Hold fast path (scalar path): a tick that finds the law at a fixed point (every set-point and step left bit for bit
as it was: robots at rest on targets that do not move) lets the following ticks return right after the
following-error check, as long as nothing the law reads changes (``_tick_scalar`` gives the argument): ~1.7 instead
of ~6 µs for a holding GP7. ``setpoint_vel`` is computed only when read after the steps may have changed, and
``setpoint_version`` tells a caller whether set-points or velocities may have changed since it last looked
(``tests/control/test_loop_hold_fast_path.py`` drives loops with and without the fast path side by side).

Not limited here: jerk (job and trajectory modes plan jerk-limited motions with ruckig,
streamed set-points are limited in position, velocity and acceleration only). Lowering
``speed_scale`` while a robot moves fast close to a joint limit can end in a hard clamp at
the limit; change it at rest or far from the limits.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Sequence

import numpy as np

from testbed.control.events import ControlEvent
from testbed.control.lifecycle import Component, LifecycleState
from testbed.control.model import RobotLimits, stack_limits
from testbed.errors import ControllerError

_RUNNING = (LifecycleState.ACTIVE, LifecycleState.PROTECTIVE_STOP)
_ALIVE = (
    LifecycleState.INACTIVE,
    LifecycleState.ACTIVE,
    LifecycleState.PROTECTIVE_STOP,
    LifecycleState.EMERGENCY_STOP,
)
_MAX_ROWS = 100_000
_TCP_MARGIN = 1.0 + 1e-9  # the TCP bound sits a hair below the limit, so that rounding never lets it through
_RESET_TOLERANCE = 1e-6
_ALIGN = 64  # bytes: the tick's arrays start on a cache line (unaligned SIMD loads cost ~10% of a 256-robot tick)

# the tick's ufuncs, bound once (a module attribute lookup per call adds up at ~25 calls per tick); those with the
# output passed positionally, which numpy parses faster than ``out=`` (minimum and maximum take ``out=`` only)
_add, _sub, _mul, _abs, _sqrt, _copysign = np.add, np.subtract, np.multiply, np.absolute, np.sqrt, np.copysign
_min, _max, _le, _count = np.minimum, np.maximum, np.less_equal, np.count_nonzero
_sub_op, _le_op = operator.sub, operator.le  # the scalar tick's following-error check
_INF = math.inf


class ControllerComponent(Component):
    """The lifecycle of one robot's controller inside a ``ControlLoop``.

    Its state drives the loop's vectorized masks: only ACTIVE robots follow commands,
    PROTECTIVE_STOP robots decelerate on path and hold, all other states hold still.
    """

    def __init__(self, loop: ControlLoop, robot: int, name: str) -> None:
        super().__init__(name, listener=loop._on_transition)
        self._loop = loop
        self.robot = robot

    def on_activated(self) -> None:
        """Start from rest at the current set-point, with nothing streamed."""
        self._loop._hold_robot(self.robot, stop=True)


class ControlLoop:
    """Vectorized set-point generator and safety supervisor for several robots.

    Args:
        models: robot descriptions (``testbed.robots.RobotModel`` or anything with the
            fields of ``RobotLimits``); robot ``i`` of the loop is ``models[i]``.
        dt_s: control cycle in seconds (the time between two ``tick`` calls).
        stream_timeout_s: (a scalar or one per robot) a streaming robot whose queued targets ran out this long ago
            enters PROTECTIVE_STOP (reason ``stream_timeout``).
        speed_scale: reduced-speed factor in (0, 1] applied to every robot's velocity and acceleration
            limits (settable while running, e.g. a cell switching to reduced speed).
        robot_speed_scale: per-robot factor in (0, 1] on top of ``speed_scale`` (a scalar or one per robot).
        following_error: largest allowed |measured - set-point| per joint before a protective
            stop; a scalar or ``(robots, max_joints)``; default 0.5 rad (revolute), 0.1 m (prismatic).
        chunk_capacity: rows preallocated per robot for streamed targets (grows on demand).
        scalar_max_robots: loops with at most this many robots tick on Python floats (the same set-points to the
            bit, a few µs instead of ~10 for one arm); 0 always ticks vectorized.

    Raises:
        ControllerError: bad cycle, timeout, scale or robot limits.
    """

    def __init__(
        self,
        models: Sequence[RobotLimits],
        dt_s: float,
        *,
        stream_timeout_s: float | Sequence[float] = 0.5,
        speed_scale: float = 1.0,
        robot_speed_scale: float | Sequence[float] = 1.0,
        following_error: float | np.ndarray | None = None,
        chunk_capacity: int = 64,
        scalar_max_robots: int = 2,
    ) -> None:
        if not (math.isfinite(dt_s) and dt_s > 0):
            raise ControllerError(f"ControlLoop: dt_s must be a finite number > 0, got {dt_s!r}")
        lim = stack_limits(models)
        self._lim = lim
        self.models = tuple(models)
        self.dt_s = float(dt_s)
        r, j = lim.mask.shape
        self.stream_timeout_s = _per_robot("stream_timeout_s", stream_timeout_s, r, upper=math.inf)
        self.robot_speed_scale = _per_robot("robot_speed_scale", robot_speed_scale, r, upper=1.0)
        self.n_robots = r
        self.max_joints = j
        self.joint_mask = lim.mask.copy()
        self.joint_mask.flags.writeable = False
        self._mask = lim.mask
        self._mask_f = lim.mask.astype(np.float64)
        self._lim_rows = [(lim.lower[i, :n], lim.upper[i, :n]) for i, n in enumerate(lim.n_joints.tolist())]

        if following_error is None:
            ferr = np.where(lim.prismatic, 0.1, 0.5)
        else:
            ferr = np.broadcast_to(np.asarray(following_error, dtype=np.float64), (r, j)).copy()
            if np.any(~(ferr > 0)):
                raise ControllerError(
                    f"ControlLoop: following_error must be > 0 everywhere, got {following_error}"
                )
        self._ferr = np.where(lim.mask, ferr, np.inf)
        # per state: ACTIVE robots check following error, alive robots check for invalid readings
        self._ferr_eff = _aligned((r, j), np.inf)
        self._meas_mask = _aligned((r, j), False, bool)

        # set-point state
        self._p = _aligned((r, j))
        self._step = _aligned((r, j))  # set-point change per cycle (velocity * dt_s)
        self._v = _aligned((r, j))
        self._p_view = self._p.view()
        self._p_view.flags.writeable = False
        self._v_view = self._v.view()
        self._v_view.flags.writeable = False

        # streamed targets: rows on a uniform grid t0 + k/inv_dt, one duplicate row after the last
        self._cap = max(2, int(chunk_capacity))
        self._alloc_stream(self._cap)
        self._t0 = np.zeros(r)
        self._inv_dt = np.ones(r)
        self._row_dt = np.ones(r)
        # each robot's current row segment: target = base + slope * t for t in [seg_lo, seg_hi)
        self._seg_slope = _aligned((r, j))
        self._seg_base = _aligned((r, j))
        self._seg_ff = _aligned((r, j))  # slope * dt_s: the target's step per cycle
        self._seg_t = np.zeros(r)
        self._seg_hi = np.zeros(r)
        self._ff_col = _aligned((r, 1))  # dt_s / row spacing: row slope -> step per cycle
        self._before = np.zeros(r, dtype=bool)
        self._last = np.zeros(r, dtype=bool)
        self._before_col = self._before[:, None]
        self._inv_dt_col = self._inv_dt[:, None]
        self._seg_t_col = self._seg_t[:, None]
        self._seg_from = math.inf
        self._seg_until = -math.inf
        self._last_row = np.zeros(r)
        self._row_base = np.arange(r, dtype=np.float64) * self._cap
        self._deadline = np.full(r, np.inf)
        self._first_deadline = math.inf  # min of _deadline: one float compare per tick instead of two numpy calls
        self._streaming = np.zeros(r, dtype=bool)

        # scratch buffers: the tick allocates nothing
        self._u = np.zeros(r)
        self._fl = np.zeros(r)
        self._idx0 = np.zeros(r, dtype=np.intp)
        self._row0 = _aligned((r, j))
        self._row1 = _aligned((r, j))
        self._e = _aligned((r, j))
        self._w = _aligned((r, j))
        self._w2 = _aligned((r, j))
        self._vdes = _aligned((r, j))
        self._ok = _aligned((r, j), True, bool)
        self._late = np.zeros(r, dtype=bool)
        self._ratio = np.zeros(r)
        self._ratio_col = self._ratio[:, None]

        # TCP speed limiter: k = reach / (limit * dt), 0 for unlimited robots; see ``limit_tcp_speed``
        self._tcp_limit = np.full(r, np.inf)
        self._tcp_k = _aligned((r, j))
        self._tcp_k_range = _aligned((r, j))  # k of the reach over the whole range (``limit_tcp_speed``)
        self._tcp_per_cycle = np.zeros(r)  # reach -> k
        self._n_tcp_limited = 0
        self._tcp_narrowed = False  # some k below its whole-range value (``narrow_tcp_reach``)
        self._tcp_cmd = np.zeros(r)  # the desired step's TCP bound, in units of the limit
        self._tcp_bound = np.zeros(r)  # the new step's TCP bound, in units of the limit
        self._tcp_scale = np.ones(r)
        self._tcp_scale_col = self._tcp_scale[:, None]
        self._tcp_cmd_over = False
        self._tcp_b0 = np.zeros(r)
        self._tcp_d = np.zeros(r)
        self._tcp_drop = np.zeros(r)  # share of the accelerating joints' change held back
        self._tcp_b0_col = self._tcp_b0[:, None]
        self._tcp_drop_col = self._tcp_drop[:, None]
        self._tcp_grows = _aligned((r, j), False, bool)
        self._tcp_over = np.zeros(r, dtype=bool)
        self._tcp_was_over = np.zeros(r, dtype=bool)
        self._tcp_enter = np.zeros(r, dtype=bool)
        self._tcp_any_over = False
        self._ones_j = np.ones(j)

        # lifecycle: one component per robot, mirrored into vectorized masks
        self._components = [ControllerComponent(self, i, lim.names[i]) for i in range(r)]
        self._codes = np.zeros(r, dtype=np.int8)
        self._run = _aligned((r, 1))  # 1.0 where the set-point may move
        self._pstop = np.zeros((r, 1), dtype=bool)
        self._n_pstop = 0
        self._n_frozen = r
        self._rejected_while_stopped = np.zeros(r, dtype=bool)

        # ticks for which no joint can come near a limit (``_count_far_ticks``); 0: the full limit term
        self._far_ticks = 0
        self._far_parked = False
        self._far_wait = 0  # ticks before counting again
        self._far_backoff = 1
        self._parked = _aligned((r, j), False, bool)
        self._pad = ~lim.mask

        # the scalar path (``_tick_scalar``): flat views of the state, and lists rebuilt when their source changes
        self._scalar = r <= scalar_max_robots
        self._p_flat = self._p.reshape(-1)
        self._step_flat = self._step.reshape(-1)
        self._p_bytes = memoryview(self._p_flat).cast("B")
        self._step_bytes = memoryview(self._step_flat).cast("B")
        self._scalar_pack = struct.Struct(f"={r * j}d").pack_into  # native doubles, as the arrays hold them
        self._scalar_consts: list[tuple[float, ...]] | None = None  # per speed_scale
        self._seg_lists: tuple[list[float], list[float], list[float]] | None = None  # per _select_segments
        # the segment's slope, base and feed-forward as raw doubles, one after the other (None: taken by numpy)
        self._seg_pack = struct.Struct(f"={3 * r * j}d").pack
        self._seg_packed: bytes | None = None
        n_bytes = r * j * 8
        self._seg_bytes = tuple((memoryview(a.reshape(-1)).cast("B"), slice(i * n_bytes, (i + 1) * n_bytes))
                                for i, a in enumerate((self._seg_slope, self._seg_base, self._seg_ff)))
        self._scalar_state_key = -1  # _transitions when _scalar_ferr and _scalar_run were taken
        self._scalar_ferr: list[float] = []
        self._scalar_run: list[float] = []
        # the set-points and steps as lists (what the last scalar tick wrote), None when the arrays changed since
        self._lists: tuple[list[float], list[float]] | None = None
        # the hold fast path (``_tick_scalar``): the last scalar tick was a fixed point of the law, and nothing the law
        # reads has changed since; found so with the short path (``_held_far``), without it (``_held_near``) or both
        self._held = False
        self._held_far = False
        self._held_near = False
        # changes whenever the set-points or steps may have changed (``setpoint_version``, ``setpoint_vel``)
        self._version = 0
        self._v_version = -1

        self._events: list[ControlEvent] = []
        self._transitions = 0
        self._t = 0.0
        self._t_last: float | None = None
        self.speed_scale = speed_scale

    # ------------------------------------------------------------------ configuration
    @property
    def speed_scale(self) -> float:
        """Reduced-speed factor in (0, 1] on velocity and acceleration limits."""
        return self._speed_scale

    def effective_speed_scale(self, robot: int) -> float:
        """The factor robot ``robot``'s velocity and acceleration limits are scaled by (loop x robot)."""
        return self._speed_scale * float(self.robot_speed_scale[robot])

    @speed_scale.setter
    def speed_scale(self, value: float) -> None:
        if not (math.isfinite(value) and 0 < value <= 1):
            raise ControllerError(f"ControlLoop: speed_scale must be in (0, 1], got {value!r}")
        self._speed_scale = float(value)
        lim = self._lim
        # everything in per-cycle units: steps in rad/cycle, accelerations in rad/cycle^2
        dt = self.dt_s
        scale = (value * self.robot_speed_scale)[:, None]
        self._vmax_c = _aligned_copy(lim.velocity * scale * dt)
        self._acc_c = _aligned_copy(lim.acceleration * scale * dt * dt)
        self._neg_acc_c = _aligned_copy(-self._acc_c)
        # constants of the braking step vb(d) (``_braking_step``)
        self._k3 = _aligned_copy(1.5 * self._acc_c)
        self._k9 = _aligned_copy(self._k3 * self._k3)
        self._k2a = _aligned_copy(2.0 * self._acc_c)
        self._neg_vmax_c = _aligned_copy(-self._vmax_c)
        self._lower = _aligned_copy(lim.lower)
        self._upper = _aligned_copy(lim.upper)
        self._mid_range = _aligned_copy(0.5 * (lim.lower + lim.upper))
        self._half_range = _aligned_copy(0.5 * (lim.upper - lim.lower))
        # braking distance from v_max: vb(d) >= v_max for d beyond it (a hair more, so rounding agrees)
        v = self._vmax_c
        self._far_margin = ((v + self._k3) * (v + self._k3) - self._k9) / self._k2a * (1.0 + 1e-6) + 1e-12
        self._vmax_c_pad1 = np.where(lim.mask, v, 1.0)  # padding joints never move: any speed > 0 will do
        self._vb0_exact = bool(np.all(np.sqrt(self._k9) == self._k3))  # vb(0) == 0: a joint at rest stays so
        # what every tick reads, in one tuple (one attribute load instead of one per array)
        self._hot = (self._p, self._step, self._w, self._e, self._vdes, self._ok, self._ferr_eff, self._seg_slope,
                     self._seg_base, self._seg_ff, self._k2a, self._k9, self._k3, self._acc_c, self._neg_acc_c,
                     self._vmax_c, self._neg_vmax_c)
        self._far_ticks = self._far_wait = 0
        self._far_backoff = 1
        self._scalar_consts = None
        self._held = False

    @property
    def setpoint(self) -> np.ndarray:
        """Read-only ``(robots, max_joints)`` view of the current joint position set-points."""
        return self._p_view

    @property
    def setpoint_vel(self) -> np.ndarray:
        """Read-only ``(robots, max_joints)`` set-point velocities (rad/s or m/s) of the last tick.

        Computed when read after the steps may have changed (``setpoint_version``), else the same array as before.
        """
        if self._v_version != self._version:
            self._v_version = self._version
            _mul(self._step, 1.0 / self.dt_s, self._v)
        return self._v_view

    @property
    def setpoint_version(self) -> int:
        """A count that changes whenever ``setpoint`` or ``setpoint_vel`` may have changed (a tick that moved a
        set-point or changed a step, ``reset``, a stop): while it stays the same, both are bit for bit what they were
        (a holding robot's ticks leave it alone), so their last use, e.g. commands sent to motors, still holds."""
        return self._version

    @property
    def limits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Padded ``(lower, upper, velocity, acceleration)`` hard limits, ``(robots, max_joints)`` each."""
        lim = self._lim
        return lim.lower, lim.upper, lim.velocity, lim.acceleration

    @property
    def tcp_speed_limits_m_s(self) -> np.ndarray:
        """Read-only ``(robots,)`` TCP speed limits the set-points are held to (inf: none)."""
        view = self._tcp_limit.view()
        view.flags.writeable = False
        return view

    def limit_tcp_speed(self, limits_m_s: float | Sequence[float], reach_m: np.ndarray | Sequence[Sequence[float]]
                        ) -> None:
        """Hold each robot's TCP set-point speed to its limit from the next tick on (reduced speed).

        A robot whose commanded step would exceed the bound has the joints that speed up held back
        (those that slow down keep their full change), so every joint still respects its acceleration
        limit; each time a robot starts being held, a ``tcp_speed_limited`` event records the limit and
        the bound of what was commanded. Set limits at rest: a robot already faster than a new, lower
        limit is scaled down to it at once, beyond its acceleration limits (the speed limit wins).

        Args:
            limits_m_s: one limit in m/s per robot (or one for all), > 0; ``inf`` leaves a robot unlimited.
            reach_m: ``(robots, max_joints)`` (or one row per robot, of its own joints): per joint a bound
                of the TCP's speed per unit joint speed over the whole range (``KinematicChain.axis_reach_m``;
                m/rad for revolute joints, 1 for prismatic ones).

        Raises:
            ControllerError: a limit that is not > 0, or reach rows of the wrong length or not finite and >= 0.
        """
        r, j = self._p.shape
        limits = np.asarray(limits_m_s, dtype=np.float64)
        if limits.ndim > 1 or (limits.ndim == 1 and limits.shape[0] != r):
            raise ControllerError(f"ControlLoop.limit_tcp_speed: need a limit or {r} limits, got {limits_m_s!r}")
        limits = np.broadcast_to(limits, (r,)).copy()
        if not np.all(limits > 0):  # NaN fails this too
            raise ControllerError(f"ControlLoop.limit_tcp_speed: limits must be > 0 (inf: none), got {limits_m_s!r}")
        reach = np.zeros((r, j))
        if len(reach_m) != r:
            raise ControllerError(f"ControlLoop.limit_tcp_speed: need reach rows for {r} robots, got {len(reach_m)}")
        for i, row in enumerate(reach_m):
            arr = np.asarray(row, dtype=np.float64).ravel()
            n = int(self._lim.n_joints[i])
            if arr.shape[0] not in (n, j) or not np.all(np.isfinite(arr) & (arr >= 0)):
                raise ControllerError(
                    f"ControlLoop.limit_tcp_speed: robot {i} ({self._lim.names[i]}): reach must be {n} finite "
                    f"numbers >= 0, got {row!r}"
                )
            reach[i, :n] = arr[:n]
        self._tcp_limit[:] = limits
        # k: reach in units of the limit per cycle
        with np.errstate(divide="ignore"):
            np.copyto(self._tcp_per_cycle, np.where(np.isfinite(limits), _TCP_MARGIN / (limits * self.dt_s), 0.0))
        np.multiply(reach, self._tcp_per_cycle[:, None], out=self._tcp_k_range)
        np.copyto(self._tcp_k, self._tcp_k_range)
        self._tcp_narrowed = False
        self._n_tcp_limited = int(np.isfinite(limits).sum())
        self._tcp_was_over.fill(False)
        self._tcp_any_over = False

    def narrow_tcp_reach(self, robot: int, reach_m: np.ndarray | Sequence[float]) -> None:
        """Bound ``robot``'s TCP speed with its axis distances at the current set-point instead of the whole range's.

        ``limit_tcp_speed``'s reach holds over the whole range and is far above a folded arm's. The distance
        from a joint's axis to the TCP changes only as fast as the TCP moves relative to that joint, at most
        ``limit * dt`` a tick, so the loop grows the narrowed reach by that much every tick (back up to the
        whole range's within a few seconds): the bound holds whether or not anyone narrows it again.

        Args:
            robot: robot index (one without a TCP limit is left alone).
            reach_m: that robot's ``n_joints`` axis-to-TCP distances at ``setpoint`` (the column norms of the
                linear Jacobian there: m/rad, 1 for a prismatic joint), or upper bounds of them.

        Raises:
            ControllerError: a bad robot index, or reach that is not ``n_joints`` finite numbers >= 0.
        """
        r = self._check_robot(robot)
        n = int(self._lim.n_joints[r])
        reach = np.asarray(reach_m, dtype=np.float64).ravel()
        if reach.shape != (n,) or not np.all(np.isfinite(reach) & (reach >= 0)):
            raise ControllerError(f"ControlLoop.narrow_tcp_reach: robot {r} ({self._lim.names[r]}): reach must be "
                                  f"{n} finite numbers >= 0, got {reach_m!r}")
        if not math.isfinite(float(self._tcp_limit[r])):
            return
        # both bounds hold: keep the lower (narrowing only ever loosens the limiter)
        np.minimum(self._tcp_k[r, :n], reach * self._tcp_per_cycle[r], out=self._tcp_k[r, :n])
        self._tcp_narrowed = True

    def component(self, robot: int) -> ControllerComponent:
        """The lifecycle component of robot ``robot`` (initialize/activate/deactivate/reset/finalize)."""
        return self._components[self._check_robot(robot)]

    def state(self, robot: int) -> LifecycleState:
        """Lifecycle state of robot ``robot``."""
        return self._components[self._check_robot(robot)].state

    @property
    def transition_count(self) -> int:
        """Lifecycle transitions of all robots so far: a cheap test of whether any state or ``last_error`` changed."""
        return self._transitions

    def drain_events(self) -> list[ControlEvent]:
        """Events recorded since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------------ commands
    def reset(self, joint_pos: np.ndarray) -> None:
        """Start (or restart) every robot at rest at ``joint_pos``, ACTIVE and holding.

        Initializes and activates controllers as needed, clears faults and stops (an
        explicit reset) and drops streamed targets.

        Args:
            joint_pos: ``(robots, max_joints)`` float64; padding entries are ignored.

        Raises:
            ControllerError: wrong shape, non-finite or out-of-range positions, or a finalized controller.
        """
        pos = np.asarray(joint_pos, dtype=np.float64)
        if pos.shape != self._p.shape:
            raise ControllerError(
                f"ControlLoop.reset: joint_pos must have shape {self._p.shape} (robots, max_joints), "
                f"got {pos.shape}"
            )
        pos = np.where(self._mask, pos, 0.0)
        if not np.all(np.isfinite(pos)):
            bad = np.argwhere(~np.isfinite(pos)).tolist()
            raise ControllerError(
                f"ControlLoop.reset: joint_pos has non-finite values at (robot, joint) {bad}"
            )
        lo, hi = self._lim.lower, self._lim.upper
        outside = (pos < lo - _RESET_TOLERANCE) | (pos > hi + _RESET_TOLERANCE)
        if outside.any():
            r, jt = (int(x) for x in np.argwhere(outside)[0])
            raise ControllerError(
                f"ControlLoop.reset: robot {r} ({self._lim.names[r]}) joint {jt} position {pos[r, jt]:.6g} "
                f"is outside its range [{lo[r, jt]:.6g}, {hi[r, jt]:.6g}]"
            )
        for comp in self._components:
            if comp.state is LifecycleState.FINALIZED:
                raise ControllerError(
                    f"ControlLoop.reset: controller {comp.name!r} is FINALIZED and cannot restart"
                )
        np.clip(pos, lo, hi, out=self._p)
        self._step.fill(0.0)
        self._changed()
        self._far_ticks = self._far_wait = 0
        self._far_backoff = 1
        for i, comp in enumerate(self._components):
            if comp.state is LifecycleState.CREATED:
                comp.initialize()
            elif comp.state in (
                LifecycleState.ERROR,
                LifecycleState.PROTECTIVE_STOP,
                LifecycleState.EMERGENCY_STOP,
            ):
                comp.reset()
            elif comp.state is LifecycleState.ACTIVE:
                self._hold_robot(i, stop=True)
            if comp.state is LifecycleState.INACTIVE:
                comp.activate()
        self._rejected_while_stopped.fill(False)
        self._tcp_was_over.fill(False)
        self._tcp_any_over = False
        if self._tcp_narrowed:  # the set-points jumped: narrowed reach no longer holds
            np.copyto(self._tcp_k, self._tcp_k_range)
            self._tcp_narrowed = False
        self._t_last = None

    def submit_chunk(
        self, robot: int, targets: np.ndarray, t0_s: float, dt_s: float, *, hold_after: bool = False
    ) -> None:
        """Queue joint targets for ``robot``: row k applies at ``t0_s + k * dt_s``.

        Replaces whatever was queued from ``t0_s`` on (earlier queued rows that are still
        ahead of the loop's time are kept). A chunk with NaN/inf is refused (event
        ``command_rejected``); values outside the joint range are clamped into it (event
        ``limit_clamped``). A robot that is not ACTIVE ignores chunks until an explicit reset.

        Args:
            robot: robot index.
            targets: ``(steps, n_joints)`` of that robot (no padding).
            t0_s: time of row 0, on the clock given to ``tick``.
            dt_s: time between rows, > 0.
            hold_after: the stream ends with this chunk: hold the last row instead of raising
                a ``stream_timeout`` protective stop when it runs out.

        Raises:
            ControllerError: unknown robot, wrong shape, empty chunk, bad ``t0_s``/``dt_s``.
        """
        r = self._check_robot(robot)
        n_j = int(self._lim.n_joints[r])
        arr = np.asarray(targets, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != n_j or arr.shape[0] < 1:
            raise ControllerError(
                f"ControlLoop.submit_chunk: robot {r} ({self._lim.names[r]}) targets must have shape "
                f"(steps >= 1, {n_j}), got {arr.shape}"
            )
        if not (math.isfinite(t0_s) and math.isfinite(dt_s) and dt_s > 0):
            raise ControllerError(
                f"ControlLoop.submit_chunk: t0_s must be finite and dt_s finite > 0, "
                f"got t0_s={t0_s!r} dt_s={dt_s!r}"
            )
        comp = self._components[r]
        if comp.state is not LifecycleState.ACTIVE:
            if not self._rejected_while_stopped[r]:
                self._rejected_while_stopped[r] = True
                self._emit(r, "command_rejected", reason="not_active", state=comp.state.name)
            return
        lo, hi = self._lim_rows[r]
        if not ((arr >= lo) & (arr <= hi)).all():  # else every value is finite and inside the range
            finite = np.isfinite(arr)
            if not finite.all():
                rows = np.flatnonzero(~finite.all(axis=1)).tolist()
                self._emit(r, "command_rejected", reason="non_finite", rows=rows[:20])
                return
            over = (arr < lo) | (arr > hi)
            if over.any():
                excess = float(np.max(np.maximum(lo - arr, arr - hi)))
                self._emit(
                    r, "limit_clamped", joints=np.flatnonzero(over.any(axis=0)).tolist(), max_excess=excess
                )
                arr = np.clip(arr, lo, hi)

        # keep the part of the current queue between now and t0_s, resampled on the new grid
        n_prefix = 0
        if self._t_last is not None and t0_s > self._t_last:
            n_prefix = math.ceil((t0_s - self._t_last) / dt_s - 1e-9)
        steps = arr.shape[0]
        n_rows = n_prefix + steps
        if n_rows > _MAX_ROWS:
            raise ControllerError(
                f"ControlLoop.submit_chunk: robot {r}: chunk starts {t0_s - (self._t_last or 0):.3g} s ahead "
                f"of the loop at dt_s={dt_s}: {n_rows} rows exceed {_MAX_ROWS}; "
                "send chunks that start near the current time"
            )
        if n_prefix or n_j != self.max_joints:
            rows = np.zeros((n_rows, self.max_joints))
            for k in range(n_prefix):
                rows[k] = self._sample_stream(r, t0_s - (n_prefix - k) * dt_s)
            rows[n_prefix:, :n_j] = arr
        else:
            rows = arr
        if n_rows + 1 > self._cap:
            self._alloc_stream(max(n_rows + 1, 2 * self._cap))
        self._buf[r, :n_rows] = rows
        self._buf[r, n_rows] = rows[-1]
        _sub(rows[1:], rows[:-1], self._slope[r, : n_rows - 1])  # np.diff's arithmetic, without its overhead
        self._slope[r, n_rows - 1 : n_rows + 1] = 0.0
        self._t0[r] = t0_s - n_prefix * dt_s
        self._inv_dt[r] = 1.0 / dt_s
        self._row_dt[r] = dt_s
        self._ff_col[r, 0] = self.dt_s / dt_s
        self._seg_until = -math.inf  # look the segments up again
        self._last_row[r] = n_rows - 1
        self._streaming[r] = not hold_after
        end_t = t0_s + (steps - 1) * dt_s
        self._deadline[r] = np.inf if hold_after else end_t + self.stream_timeout_s[r]
        self._first_deadline = min(self._deadline.tolist()) if self._scalar else float(self._deadline.min())

    def hold(self, robot: int) -> None:
        """Drop ``robot``'s queued targets and hold its current set-point (no stream timeout)."""
        self._hold_robot(self._check_robot(robot), stop=False)

    def protective_stop(self, robot: int, reason: str) -> None:
        """Category-2 stop: decelerate on path within acceleration limits, then hold until reset."""
        self._components[self._check_robot(robot)].protective_stop(reason)

    def emergency_stop(self, robot: int, reason: str) -> None:
        """Hold the current set-point immediately until an explicit reset."""
        self._components[self._check_robot(robot)].emergency_stop(reason)

    def fault(self, robot: int, reason: str) -> None:
        """Send ``robot``'s controller to ERROR; it holds still until reset."""
        self._components[self._check_robot(robot)].fault(reason)

    # ------------------------------------------------------------------ the cycle
    def tick(self, t_s: float, measured_pos: np.ndarray | None = None) -> np.ndarray:
        """One control cycle for all robots.

        Args:
            t_s: time of this cycle on the clock used by ``submit_chunk``.
            measured_pos: ``(robots, max_joints)`` measured joint positions, checked against
                the previous set-point; padding entries should be finite (0 is fine).
                ``None`` skips the following-error and measurement checks.

        Returns:
            Read-only ``(robots, max_joints)`` view of the new set-points (padding 0); it is
            overwritten by the next tick, copy it to keep it.
        """
        self._t = self._t_last = t_s
        if self._scalar and not (self._n_pstop or self._n_tcp_limited):
            return self._tick_scalar(t_s, measured_pos)
        self._lists = None  # ``_changed``, inline
        self._held = False
        self._version += 1
        p, step, w, e, vdes, ok, ferr, slope, base, ff, k2a, k9, k3, acc, neg_acc, vmax, neg_vmax = self._hot
        if measured_pos is not None:
            _sub(measured_pos, p, w)
            _abs(w, w)
            _le(w, ferr, ok)
            if _count(ok) != ok.size:  # count_nonzero: a third of ``ok.all()``'s cost
                self._check_measurement(measured_pos)
        if t_s > self._first_deadline:
            self._stream_timeouts(t_s)

        # the streamed targets at t_s, linear in t on each robot's current row segment; the
        # segments are looked up again only when t_s leaves one of them (rows are several cycles apart)
        if not self._seg_from <= t_s < self._seg_until:
            self._select_segments(t_s)
        _mul(slope, t_s, e)
        _add(e, base, e)
        _sub(e, p, e)  # e: target - set-point
        _sub(e, ff, e)  # what is left to correct after the target's own step (velocity feed-forward)

        # desired step (rad per cycle): the target's step plus a correction towards it that
        # still brakes in time, exactly onto it when one cycle suffices (no creeping);
        # w = vb(|e|) inline (``_braking_step``: a call costs as much as one of these)
        _abs(e, vdes)
        _mul(vdes, k2a, w)
        _add(w, k9, w)
        _sqrt(w, w)
        _sub(w, k3, w)
        _min(vdes, acc, out=vdes)
        _max(w, vdes, out=w)
        _copysign(w, e, w)
        _add(w, ff, w)
        # ... but never faster than v_max, nor than what still stops before the joint limit ahead; while
        # every joint is further from its limits than it brakes from v_max, that is v_max alone
        far = self._far_ticks > 0
        if far:
            self._far_ticks -= 1
            _min(w, vmax, out=vdes)
            _max(vdes, neg_vmax, out=vdes)
        else:
            self._near_limits_step(w, vdes)
            if self._far_wait:
                self._far_wait -= 1
            else:
                self._count_far_ticks()
        if self._n_pstop:
            self._stopping_step()
        tcp = self._n_tcp_limited
        if tcp:
            if self._tcp_narrowed:
                # narrowed reach grows by what the TCP may move this tick (limit * dt: 1 in k's units)
                self._tcp_k += _TCP_MARGIN
                np.minimum(self._tcp_k, self._tcp_k_range, out=self._tcp_k)
            self._scale_to_tcp_limit(vdes)

        # acceleration limit on the step change, then integrate; stopped robots hold
        _sub(vdes, step, e)
        _min(e, acc, out=e)
        _max(e, neg_acc, out=e)
        _add(step, e, step)
        if self._n_frozen:
            _mul(step, self._run, step)
        if tcp:
            self._limit_tcp_step(e)
        _add(p, step, p)
        if not far:  # far from the limits no step reaches them
            _min(p, self._upper, out=p)
            _max(p, self._lower, out=p)
        return self._p_view

    def _tick_scalar(self, t_s: float, measured_pos: np.ndarray | None) -> np.ndarray:
        """``tick``'s law on Python floats, element by element in the same operation order (see the module docstring).

        ``min(a, b)`` is ``a if a < b else b`` and ``max(a, b)`` ``a if a > b else b``: numpy's minimum and maximum,
        which return the second operand on a tie. For loops without a protective stop or a TCP limit. The new
        set-point and step are written into the state arrays as raw doubles (``struct``: every bit kept).

        Hold fast path: a tick whose law left every set-point and step bit for bit as it found them (a fixed point:
        robots at rest on targets that do not move), at a time t_s > 0 with every segment slope zero, marks the
        loop ``_held``. The law is a function of the set-points, steps, segments (slope, base, feed-forward), the
        constants, the run factors, whether the short path is taken (``far``) and t_s, and it reads t_s only as
        ``slope * t_s``: with zero slopes and finite t_s > 0 that is the same zero (same sign) at every such t_s. So
        while none of those inputs changes, the next tick with the same ``far`` computes the very same bits: it returns
        at once, doing only the bookkeeping of the far-from-limits count (a count that is due is made, from the same
        inputs, when the fixed point was found without the short path). Whatever changes an input clears
        ``_held``: new segments that differ in a bit (``_select_segments_scalar``), a transition (run factors),
        ``speed_scale`` (constants), set-points or steps written elsewhere (``_changed``: reset, hold with a stop,
        a vectorized tick). A robot at rest (step +0) exactly on a target with zero slope and feed-forward is such a
        fixed point: e is +0, and ``sqrt(0 * k2a + k9) - k3`` is +0 as ``sqrt(k9) == k3`` (k9 = k3 * k3, and the
        square root of a correctly rounded square is exact), so the step stays +0 and the set-point with it (but
        for signed-zero corners, which the bitwise comparison leaves to the full tick).
        """
        consts = self._scalar_consts
        if consts is None:
            consts = self._scalar_consts = self._scalar_constants()
        if self._scalar_state_key != self._transitions:
            self._scalar_state()
        lists = self._lists
        if lists is None:
            lists = self._lists = (self._p_flat.tolist(), self._step_flat.tolist())
        p, step = lists
        if measured_pos is not None:
            ok = type(measured_pos) is np.ndarray and measured_pos.shape == self._p.shape
            if ok:  # all |m - q| <= f, in C loops (NaN fails as in ``tick``)
                ok = all(map(_le_op, map(abs, map(_sub_op, measured_pos.ravel().tolist(), p)), self._scalar_ferr))
            if not ok:  # as ``tick`` finds it (and raises what it raises for a bad shape)
                _sub(measured_pos, self._p, self._w)
                _abs(self._w, self._w)
                _le(self._w, self._ferr_eff, self._ok)
                if _count(self._ok) != self._ok.size:
                    self._check_measurement(measured_pos)
        if t_s > self._first_deadline:
            self._stream_timeouts(t_s)
        if self._n_pstop:  # a stop just began: the vectorized tick (its checks have nothing left to find)
            return self.tick(t_s)
        if self._scalar_state_key != self._transitions:  # a fault just froze a robot
            self._scalar_state()
        if not self._seg_from <= t_s < self._seg_until:
            self._select_segments_scalar(t_s)
        seg = self._seg_lists
        if seg is None:
            seg = self._seg_lists = (self._seg_slope.reshape(-1).tolist(), self._seg_base.reshape(-1).tolist(),
                                     self._seg_ff.reshape(-1).tolist())
        if self._held and 0.0 < t_s < _INF:  # the last tick's fixed point, again (see above; inf * 0 is NaN)
            if self._far_ticks > 0:
                if self._held_far:
                    self._far_ticks -= 1
                    return self._p_view
            elif self._held_near:
                if self._far_wait:
                    self._far_wait -= 1
                else:  # the count the full tick would make, from the same set-points, steps and segments
                    self._count_far_ticks_scalar(p, step, seg)
                return self._p_view
        sqrt, copysign = math.sqrt, math.copysign
        far = self._far_ticks > 0
        if far:
            self._far_ticks -= 1
        elif self._far_wait:
            self._far_wait -= 1
        else:
            self._count_far_ticks_scalar(p, step, seg)  # before this tick's change, as ``tick``
        run = self._scalar_run if self._n_frozen else None
        new_p, new_step = [], []
        for (k2a, k9, k3, a, na, vm, nvm, up, lo, mid, half), sl, b, f, q, s, r in zip(
                consts, *seg, p, step, run or p, strict=True):
            e = sl * t_s + b - q - f
            v = abs(e)
            w = sqrt(v * k2a + k9) - k3
            v = v if v < a else a
            w = copysign(w if w > v else v, e) + f
            if far:
                v = w if w < vm else vm
                v = v if v > nvm else nvm
            else:  # ``_near_limits_step``
                d = abs(copysign(half, w) + mid - q)
                lim = sqrt(d * k2a + k9) - k3
                d = d if d < a else a
                lim = lim if lim > d else d
                lim = lim if lim < vm else vm
                v = abs(w)
                v = copysign(v if v < lim else lim, w)
            # acceleration limit on the step change, then integrate; stopped robots hold
            c = v - s
            c = c if c < a else a
            c = c if c > na else na
            s = s + c
            if run is not None:
                s = s * r
            new_step.append(s)
            q = q + s
            if not far:
                q = q if q < up else up
                q = q if q > lo else lo
            new_p.append(q)
        pack = self._scalar_pack
        if new_p == p and new_step == step and t_s > 0.0 and not any(seg[0]):  # equal, maybe but for a zero's sign
            old = self._p_bytes.tobytes(), self._step_bytes.tobytes()
            pack(self._step_bytes, 0, *new_step)
            pack(self._p_bytes, 0, *new_p)
            held = old == (self._p_bytes.tobytes(), self._step_bytes.tobytes())
        else:
            pack(self._step_bytes, 0, *new_step)
            pack(self._p_bytes, 0, *new_p)
            held = False
        if held and self._held:  # a fixed point again, found the other way (with or without the short path)
            if far:
                self._held_far = True
            else:
                self._held_near = True
        else:
            self._held = held
            self._held_far = held and far
            self._held_near = held and not far
        if not held:
            self._lists = (new_p, new_step)
            self._version += 1
        return self._p_view

    def _select_segments_scalar(self, t_s: float) -> None:
        """``_select_segments`` on Python floats, robot by robot in its operation order (same bits)."""
        j = self.max_joints
        inv_dt, row_dt, row_base = self._inv_dt.tolist(), self._row_dt.tolist(), self._row_base.tolist()
        ff_col, last_rows = self._ff_col[:, 0].tolist(), self._last_row.tolist()
        slopes: list[float] = []
        bases: list[float] = []
        ffs: list[float] = []
        until = math.inf
        for r, t0 in enumerate(self._t0.tolist()):
            u = (t_s - t0) * inv_dt[r]
            before = u < 0.0
            u = u if u > 0.0 else 0.0
            last_row = last_rows[r]
            u = u if u < last_row else last_row
            fl = float(math.floor(u))
            row_t = fl * row_dt[r] + t0  # time of the segment's first row
            index = int(fl + row_base[r])  # integral floats: exact indices
            row_slope = self._slope2d[index].tolist()
            base = self._buf2d[index].tolist()
            if before:  # before its first row a robot holds row 0: no slope, and no feed-forward
                slope = ff = [0.0] * j
            else:
                k, inv = ff_col[r], inv_dt[r]
                ff = [x * k for x in row_slope]
                slope = [x * inv for x in row_slope]
            base = [b - x * row_t for b, x in zip(base, slope, strict=True)]
            hi = t0 if before else (math.inf if fl >= last_row else row_t + row_dt[r])
            until = hi if hi < until else until
            slopes += slope
            bases += base
            ffs += ff
        packed = self._seg_pack(*slopes, *bases, *ffs)
        if packed != self._seg_packed:  # the hold's fixed point (``_tick_scalar``) was found with other segments
            self._held = False
            whole = memoryview(packed)
            for dest, part in self._seg_bytes:
                dest[:] = whole[part]
        self._seg_packed = packed
        self._seg_lists = (slopes, bases, ffs)
        self._seg_from = t_s
        self._seg_until = _early(until)
        if self._far_parked:  # the count relied on joints holding still at their targets
            self._far_ticks = 0

    def _count_far_ticks_scalar(self, p: list[float], step: list[float],
                                seg: tuple[list[float], list[float], list[float]]) -> None:
        """``_count_far_ticks`` on Python floats, element by element in its operation order (same count)."""
        ticks = math.inf
        parked_ticks = math.inf  # the same minimum leaving out joints parked on a target that does not move
        for (v1, mid, half, fm, pad), q, s, sl, b in zip(self._scalar_far, p, step, seg[0], seg[1], strict=True):
            if pad:
                continue
            speed = abs(s)
            speed = speed if speed > v1 else v1
            d = half - abs(q - mid)
            d = (d - (fm if fm > speed else speed)) / speed
            ticks = d if d < ticks else ticks
            if not (s == 0.0 and sl == 0.0 and b == q):
                parked_ticks = d if d < parked_ticks else parked_ticks
        self._far_parked = False
        if ticks < 1.0 and self._vb0_exact:
            ticks = parked_ticks
            self._far_parked = ticks >= 1.0
        self._start_far_ticks(ticks)

    def _start_far_ticks(self, ticks: float) -> None:
        """Skip the near-limit law for ``ticks`` cycles; when none are safe, count again later (backing off)."""
        if ticks >= 1.0:
            self._far_ticks = int(min(ticks, 1e6))
            self._far_backoff = 1
        else:
            self._far_wait = self._far_backoff
            self._far_backoff = min(2 * self._far_backoff, 64)

    def _scalar_constants(self) -> list[tuple[float, ...]]:
        """Per element, the constants ``_tick_scalar`` reads (taken again when speed_scale changes)."""
        arrays = (self._k2a, self._k9, self._k3, self._acc_c, self._neg_acc_c, self._vmax_c, self._neg_vmax_c,
                  self._upper, self._lower, self._mid_range, self._half_range)
        far = (self._vmax_c_pad1, self._mid_range, self._half_range, self._far_margin, self._pad)
        self._scalar_far = list(zip(*(a.reshape(-1).tolist() for a in far), strict=True))  # _count_far_ticks_scalar
        return list(zip(*(a.reshape(-1).tolist() for a in arrays), strict=True))

    def _scalar_state(self) -> None:
        """The following-error bounds and run factors ``_tick_scalar`` reads (taken again on a transition)."""
        self._scalar_state_key = self._transitions
        self._held = False  # the run factors may have changed
        self._scalar_ferr = self._ferr_eff.reshape(-1).tolist()
        self._scalar_run = np.repeat(self._run[:, 0], self.max_joints).tolist()

    # ------------------------------------------------------------------ slow paths (rare)
    def _near_limits_step(self, w: np.ndarray, vdes: np.ndarray) -> None:
        """``vdes``: ``w`` limited to v_max and to what still stops before the joint limit ahead."""
        lim = self._row0
        np.copysign(self._half_range, w, out=vdes)
        vdes += self._mid_range
        vdes -= self._p
        np.abs(vdes, out=vdes)
        self._braking_step(vdes, lim)
        np.minimum(vdes, self._acc_c, out=vdes)
        np.maximum(lim, vdes, out=lim)
        np.minimum(lim, self._vmax_c, out=lim)
        np.abs(w, out=vdes)
        np.minimum(vdes, lim, out=vdes)
        np.copysign(vdes, w, out=vdes)

    def _count_far_ticks(self) -> None:
        """The ticks for which every joint stays further from its limits than it brakes from v_max (``_far_ticks``).

        There the joint-limit term is v_max exactly and no step reaches a limit, so ``tick`` takes the short
        path. A step never exceeds ``s = max(v_max, |step|)`` of the moment (it only changes towards a desired
        step within v_max, or shrinks), so a joint whose distance to the limit ahead exceeds ``max(braking
        distance, s)`` by ``slack`` keeps that for ``slack / s`` ticks. A joint at rest on a target that does
        not move (a stroke parked at its end) keeps a zero step wherever it is, until the segments change. When
        no tick is sure, the count waits 1, 2, 4 ... 64 ticks before trying again (a robot working near a limit
        pays for it rarely).
        """
        speed, far, margin = self._w2, self._row1, self._row0
        np.abs(self._step, out=speed)
        np.maximum(speed, self._vmax_c_pad1, out=speed)
        np.subtract(self._p, self._mid_range, out=far)
        np.abs(far, out=far)
        np.subtract(self._half_range, far, out=far)
        np.maximum(self._far_margin, speed, out=margin)
        far -= margin
        far /= speed
        np.copyto(far, np.inf, where=self._pad)
        ticks = float(far.min())
        self._far_parked = False
        if ticks < 1.0 and self._vb0_exact:
            parked, same = self._parked, self._ok
            np.equal(self._step, 0.0, out=parked)
            np.equal(self._seg_slope, 0.0, out=same)
            parked &= same
            np.equal(self._seg_base, self._p, out=same)
            parked &= same
            np.copyto(far, np.inf, where=parked)
            ticks = float(far.min())
            self._far_parked = ticks >= 1.0
        self._start_far_ticks(ticks)

    def _check_measurement(self, measured_pos: np.ndarray) -> None:
        meas = np.asarray(measured_pos, dtype=np.float64)
        bad_meas = ~np.isfinite(meas) & self._meas_mask
        over = ~self._ok & self._meas_mask
        for r in np.flatnonzero(bad_meas.any(axis=1) | over.any(axis=1)).tolist():
            comp = self._components[r]
            if bad_meas[r].any():
                joints = np.flatnonzero(bad_meas[r]).tolist()
                comp.fault(f"measurement_invalid: non-finite measured position at joints {joints}")
            elif comp.state is LifecycleState.ACTIVE:
                joints = np.flatnonzero(over[r]).tolist()
                worst = float(np.max(np.abs(meas[r, joints] - self._p[r, joints])))
                comp.protective_stop(f"following_error: joints {joints} off by up to {worst:.4g}")

    def _stream_timeouts(self, t_s: float) -> None:
        np.greater(t_s, self._deadline, out=self._late)
        for r in np.flatnonzero(self._late).tolist():
            self._deadline[r] = np.inf
            if self._components[r].state is LifecycleState.ACTIVE:
                self._components[r].protective_stop("stream_timeout")
        self._first_deadline = float(self._deadline.min())

    def _stopping_step(self) -> None:
        """Step for PROTECTIVE_STOP robots: shrink all joint velocities together (stop on path)."""
        w2, ratio = self._w2, self._ratio
        np.abs(self._step, out=w2)
        w2 /= self._acc_c
        np.max(w2, axis=1, out=ratio)
        np.maximum(ratio, 1.0, out=ratio)
        np.reciprocal(ratio, out=ratio)
        np.subtract(1.0, ratio, out=ratio)
        np.multiply(self._step, self._ratio_col, out=w2)
        # never brake later than the joint range allows (keeps the braking invariant)
        up, lo = self._row0, self._row1
        np.subtract(self._upper, self._p, out=up)
        np.subtract(self._p, self._lower, out=lo)
        for d in (up, lo):
            np.maximum(d, 0.0, out=d)
            self._braking_step(d, d)
        np.negative(lo, out=lo)
        np.minimum(w2, up, out=w2)
        np.maximum(w2, lo, out=w2)
        np.copyto(self._vdes, w2, where=self._pstop)

    def _scale_to_tcp_limit(self, vdes: np.ndarray) -> None:
        """Scale the desired step of robots whose TCP bound it exceeds down to the bound (keeps its direction).

        Robots without a limit have k = 0: their bound is 0 and they are never touched.
        """
        w, bound = self._w, self._tcp_cmd
        np.abs(vdes, out=w)
        w *= self._tcp_k
        np.matmul(w, self._ones_j, out=bound)  # row sums: a matrix-vector product is ~5x cheaper than sum(axis=1)
        self._tcp_cmd_over = bool(bound.max() > 1.0)
        if self._tcp_cmd_over:
            np.maximum(bound, 1.0, out=self._tcp_scale)
            vdes /= self._tcp_scale_col

    def _limit_tcp_step(self, change: np.ndarray) -> None:
        """Hold the new step to the TCP bound ``sum_j k_j |step_j| <= 1`` and record robots starting to be held.

        The desired step is within the bound already (``_scale_to_tcp_limit``); the step can still exceed it
        while it turns towards the desired one under the acceleration limits. ``change`` is this cycle's step
        change (the step was ``step - change``).
        """
        step, w, bound = self._step, self._w, self._tcp_bound
        np.abs(step, out=w)
        w *= self._tcp_k
        np.matmul(w, self._ones_j, out=bound)
        over = bool(bound.max() > 1.0)
        if over:
            self._hold_tcp_speed(change)
        if over or self._tcp_cmd_over or self._tcp_any_over:
            self._tcp_events()

    def _hold_tcp_speed(self, change: np.ndarray) -> None:
        """Robots over their TCP bound keep the change of joints that slow down and as much of the speeding-up
        joints' change as fits: the bound is convex, so with ``|s_old|`` for the joints that speed up and
        ``|s_new|`` for the others it is at most ``b0``, and growing the former by the share ``f`` of their change
        adds at most ``f * d``; ``f = (1 - b0) / d``. Every joint stays within its acceleration limit. A robot
        already over with ``f = 0`` (``b0 > 1``: its limit was lowered while it moved) is scaled down by ``b0``.
        """
        step, k, bound = self._step, self._tcp_k, self._tcp_bound
        new, old, part = self._w, self._vdes, self._row0
        b0, d, drop, grows, over = self._tcp_b0, self._tcp_d, self._tcp_drop, self._tcp_grows, self._tcp_over
        np.greater(bound, 1.0, out=over)
        np.abs(step, out=new)
        np.subtract(step, change, out=old)
        np.abs(old, out=old)
        np.greater(new, old, out=grows)
        np.minimum(new, old, out=part)
        part *= k
        np.matmul(part, self._ones_j, out=b0)
        np.subtract(new, old, out=part)
        np.maximum(part, 0.0, out=part)
        part *= k
        np.matmul(part, self._ones_j, out=d)
        # share of the speeding-up change to drop: 1 - (1 - b0) / d, only for robots over the bound
        np.add(b0, d, out=drop)
        drop -= 1.0
        np.maximum(d, 1e-200, out=d)  # d == 0 only when b0 > 1 already: the share is then clipped to 1
        np.divide(drop, d, out=drop)
        np.clip(drop, 0.0, 1.0, out=drop)
        drop *= over
        np.multiply(change, self._tcp_drop_col, out=part)
        part *= grows
        step -= part
        if b0.max() > 1.0:  # b0 <= bound: only robots over it
            np.maximum(b0, 1.0, out=b0)
            step /= self._tcp_b0_col

    def _tcp_events(self) -> None:
        """A ``tcp_speed_limited`` event for each robot that starts being held (it commands or steps over its bound)."""
        cmd, over, was, enter = self._tcp_cmd, self._tcp_over, self._tcp_was_over, self._tcp_enter
        np.maximum(cmd, self._tcp_bound, out=cmd)
        np.greater(cmd, 1.0, out=over)
        np.greater(over, was, out=enter)
        if enter.any():
            for r in np.flatnonzero(enter).tolist():
                limit = float(self._tcp_limit[r])
                self._emit(r, "tcp_speed_limited", limit_m_s=limit,
                           commanded_bound_m_s=round(float(cmd[r]) * limit / _TCP_MARGIN, 6))
        np.copyto(was, over)
        self._tcp_any_over = bool(over.any())

    # ------------------------------------------------------------------ internals
    def _select_segments(self, t_s: float) -> None:
        """Per robot, the streamed row segment holding ``t_s``: target = base + slope * t there.

        Before its first row a robot holds row 0, after its last row the last row (slope 0).
        ``[_seg_from, _seg_until)`` is a time span in which every robot stays in its segment.
        """
        u, fl, row_t, before, last = self._u, self._fl, self._seg_t, self._before, self._last
        t0, last_row = self._t0, self._last_row
        _sub(t_s, t0, u)
        _mul(u, self._inv_dt, u)
        np.less(u, 0.0, before)
        _max(u, 0.0, out=u)
        _min(u, last_row, out=u)
        np.floor(u, fl)
        np.greater_equal(fl, last_row, last)
        _mul(fl, self._row_dt, row_t)
        _add(row_t, t0, row_t)  # time of the segment's first row
        _add(fl, self._row_base, self._idx0, casting="unsafe")  # integral floats: exact indices
        slope, base, row_slope, ff = self._seg_slope, self._seg_base, self._row1, self._seg_ff
        np.take(self._slope2d, self._idx0, axis=0, out=row_slope)
        np.take(self._buf2d, self._idx0, axis=0, out=base)
        _mul(row_slope, self._ff_col, ff)  # the row's step per cycle (feed-forward)
        _mul(row_slope, self._inv_dt_col, slope)  # per row -> per second
        # before its first row a robot holds row 0: no slope, and no feed-forward (which would hold it off the row)
        any_before = _count(before)
        if any_before:
            np.copyto(slope, 0.0, where=self._before_col)
            np.copyto(ff, 0.0, where=self._before_col)
        _mul(slope, self._seg_t_col, self._row0)
        _sub(base, self._row0, base)
        # valid from now (an earlier t_s looks them up again) until the first robot reaches its next row
        # (t0 before t0, never after the last row); a little early, so that rounding never makes this
        # later than where floor(u) above moves on
        _add(row_t, self._row_dt, self._seg_hi)
        if _count(last):
            np.copyto(self._seg_hi, math.inf, where=last)
        if any_before:
            np.copyto(self._seg_hi, t0, where=before)
        until = float(self._seg_hi.min())
        self._seg_from = t_s
        self._seg_until = _early(until)
        self._seg_lists = self._seg_packed = None
        if self._far_parked:  # the count relied on joints holding still at their targets
            self._far_ticks = 0

    def _braking_step(self, dist: np.ndarray, out: np.ndarray) -> None:
        """``out = vb(dist)``: the largest step (per cycle) that still stops within ``dist`` (``out`` may be ``dist``).

        ``vb(d) = sqrt(9 A^2 / 4 + 2 A d) - 3 A / 2`` with A the acceleration per cycle^2 (see the module docstring).
        """
        np.multiply(dist, self._k2a, out=out)
        out += self._k9
        np.sqrt(out, out=out)
        out -= self._k3

    def _alloc_stream(self, capacity: int) -> None:
        r, j = self._mask.shape
        new = np.zeros((r, capacity + 1, j))
        old = getattr(self, "_buf", None)
        if old is not None:
            new[:, : old.shape[1]] = old
        self._cap = capacity + 1
        self._buf = new
        self._buf2d = new.reshape(r * (capacity + 1), j)
        slope = np.zeros_like(new)
        if old is not None:
            slope[:, : old.shape[1]] = self._slope
        self._slope = slope
        self._slope2d = slope.reshape(r * (capacity + 1), j)
        if hasattr(self, "_row_base"):
            self._row_base[:] = np.arange(r) * (capacity + 1)

    def _sample_stream(self, r: int, t_s: float) -> np.ndarray:
        u = min(max((t_s - self._t0[r]) * self._inv_dt[r], 0.0), self._last_row[r])
        i = math.floor(u)
        f = u - i
        return self._buf[r, i] * (1.0 - f) + self._buf[r, i + 1] * f

    def _hold_robot(self, r: int, *, stop: bool) -> None:
        if stop:
            self._step[r] = 0.0
            self._changed()
        self._buf[r, 0] = self._p[r]
        self._buf[r, 1] = self._p[r]
        self._slope[r, :2] = 0.0
        self._t0[r] = 0.0
        self._inv_dt[r] = 1.0
        self._row_dt[r] = 1.0
        self._last_row[r] = 0.0
        self._seg_until = -math.inf
        self._deadline[r] = np.inf
        self._first_deadline = float(self._deadline.min())
        self._streaming[r] = False

    def _changed(self) -> None:
        """The set-points or steps were written outside ``_tick_scalar``: its lists and hold no longer hold."""
        self._lists = None
        self._held = False
        self._version += 1

    def _check_robot(self, robot: int) -> int:
        if not (isinstance(robot, int | np.integer) and 0 <= robot < self.n_robots):
            raise ControllerError(
                f"ControlLoop: robot index must be in 0..{self.n_robots - 1}, got {robot!r}"
            )
        return int(robot)

    def _on_transition(
        self, comp: Component, old: LifecycleState, new: LifecycleState, transition: str, reason: str
    ) -> None:
        r = comp.robot if isinstance(comp, ControllerComponent) else -1
        self._transitions += 1
        self._codes[r] = int(new)
        self._run[r, 0] = 1.0 if new in _RUNNING else 0.0
        self._pstop[r, 0] = new is LifecycleState.PROTECTIVE_STOP
        self._n_pstop = int(self._pstop.sum())
        self._n_frozen = int((self._run == 0.0).sum())
        if new is not LifecycleState.ACTIVE:
            self._deadline[r] = np.inf
            self._first_deadline = float(self._deadline.min())
        self._ferr_eff[r] = self._ferr[r] if new is LifecycleState.ACTIVE else np.inf
        self._meas_mask[r] = self._mask[r] & (new in _ALIVE)
        kind = transition if transition in ("protective_stop", "emergency_stop", "fault") else "state_change"
        detail: dict[str, object] = {"transition": transition, "from": old.name, "to": new.name}
        if reason:
            detail["reason"] = reason
        self._emit(r, kind, **detail)

    def record_event(self, robot: int, kind: str, **detail: object) -> None:
        """Record an event for ``robot`` at the current control time (for modes built on the loop)."""
        self._emit(self._check_robot(robot), kind, **detail)

    def _emit(self, r: int, kind: str, **detail: object) -> None:
        self._events.append(ControlEvent(t_s=self._t, robot=r, kind=kind, detail=dict(detail)))


def _early(until: float) -> float:
    """``until`` a little early (so that rounding never makes it later than where a segment ends); inf stays inf
    (every robot after its last row: the segments hold for good, where ``inf - inf`` would look them up every tick)."""
    return until - 1e-12 * (1.0 + abs(until)) if until < math.inf else until


def _aligned(shape: int | tuple[int, ...], fill: object = 0, dtype: type = np.float64) -> np.ndarray:
    """A new array filled with ``fill`` whose data starts on a ``_ALIGN``-byte boundary."""
    dt = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = math.prod(shape) * dt.itemsize
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % _ALIGN
    out = raw[start : start + nbytes].view(dt).reshape(shape)
    out.fill(fill)
    return out


def _aligned_copy(arr: np.ndarray) -> np.ndarray:
    """``arr`` (float64) copied into a new ``_ALIGN``-byte aligned array."""
    out = _aligned(np.shape(arr))
    np.copyto(out, arr)
    return out


def _per_robot(name: str, value: float | Sequence[float], robots: int, *, upper: float) -> np.ndarray:
    """A scalar or one value per robot, as a read-only ``(robots,)`` array with every value in (0, upper]."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != robots):
        raise ControllerError(f"ControlLoop: {name} must be a number or {robots} numbers, got {value!r}")
    arr = np.broadcast_to(arr, (robots,)).copy()
    if not np.all(np.isfinite(arr) & (arr > 0) & (arr <= upper)):
        raise ControllerError(f"ControlLoop: {name} must be finite and in (0, {upper:g}], got {value!r}")
    arr.flags.writeable = False
    return arr
