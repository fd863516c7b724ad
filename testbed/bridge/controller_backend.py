"""What the controller service drives: the ``ControllerBackend`` seam and its ``ControlLoop`` implementation.

The gRPC servicer (``controller_service.py``) runs on its own thread; the control loop
ticks on another (the run loop, or a ``TickerThread``). ``ControlLoopBackend`` keeps
them apart: commands are checked on the caller's thread, queued, and applied by the
ticking thread at the start of its next cycle (``apply_pending``); after the cycle the
loop's state is copied into preallocated buffers (``publish``) that readers turn into
snapshots under a lock; a snapshot holds nothing but what one ``publish`` copied, so its
lifecycle state, job and set-points all come from the same cycle. Callers get a
``concurrent.futures.Future`` that resolves once their command took effect and was published.
Streamed set-points go through ``ControlLoop.submit_chunk``, so every position, velocity and
acceleration limit of the loop applies to them.
Jobs are planned off the ticking thread: the cycle that takes a job up holds the robot and
hands its set-point to a planning thread; a later cycle picks the finished plan up and starts
it (the job language's parsing and planning run in a ``JobPlanningProcess``, out of reach of
the GIL). No cycle waits for a plan.
Joint trajectories (``follow_trajectory``) are checked on the caller's thread, started on the
ticking thread with a ``TrajectoryController`` and checked against their tolerances every
cycle; their feedback reaches the caller through a bounded, drop-oldest queue
(``TrajectoryHandle``), so a slow caller never holds the loop back.

A run loop attaches a backend in one line::

    setpoint = backend.tick(t_s, measured)   # instead of control.tick(t_s, measured)

or, keeping its own call, ``backend.apply_pending(t_s)`` before ``control.tick`` and
``backend.publish(t_s, measured)`` after it.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import yaml

from testbed.bridge.trajectory_goals import (
    TrajectoryFeedback,
    TrajectoryGoal,
    TrajectoryHandle,
    TrajectoryResult,
    TrajectoryResultCode,
    check_trajectory_goal,
    feedback,
)
from testbed.control import (
    ControlLoop,
    LifecycleState,
    TrajectoryController,
    TrajectoryPoint,
    TrajectoryStatus,
)
from testbed.control import job as job_mode
from testbed.control.job_process import JobPlanningProcess
from testbed.control.pacing import Pacer, PacingStats, current_scheduler, request_realtime_priority
from testbed.errors import ControllerError, FeatureUnavailable, InvalidCommand, JobError

_log = logging.getLogger(__name__)

MAX_CHUNK_ROWS = 10_000
# a trajectory is sampled into at most this many rows for the loop (the loop interpolates
# linearly between them): sampling runs on the ticking thread, ~20 us a row for a cubic
_MAX_TRAJECTORY_ROWS = 1000
_MIN_TRAJECTORY_ROW_S = 0.004


class Transition(enum.Enum):
    """Lifecycle changes an outside caller may request."""

    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    RESET = "reset"
    PROTECTIVE_STOP = "protective_stop"
    EMERGENCY_STOP = "emergency_stop"


# stops are never cancelled nor skipped: however late the loop's next cycle, it applies them
_STOPS = frozenset((Transition.PROTECTIVE_STOP.value, Transition.EMERGENCY_STOP.value))


class LoopDied(ControllerError):
    """The thread ticking the control loop died: no command can take effect any more."""


@dataclass(frozen=True)
class RobotDescription:
    """A robot as outside callers see it; arrays are read-only float64 ``(joints,)``.

    Args:
        name: name callers address the robot by (unique in the backend).
        model: robot model (``robots/<model>/``).
        joint_names, joint_types: per joint, ``revolute`` or ``prismatic``.
        lower, upper: joint range (rad or m).
        velocity_max, acceleration_max: hard limits before the speed scale (rad/s, rad/s^2 or m/...).
        cycle_s: the control loop's cycle.
    """

    name: str
    model: str
    joint_names: tuple[str, ...]
    joint_types: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity_max: np.ndarray
    acceleration_max: np.ndarray
    cycle_s: float

    @property
    def n_joints(self) -> int:
        """Number of joints."""
        return len(self.joint_names)


@dataclass(frozen=True)
class RobotSnapshot:
    """One robot's state copied after a control cycle; arrays are float64 ``(joints,)``.

    Args:
        robot: robot name.
        lifecycle_state: ``LifecycleState`` name (``ACTIVE``, ``PROTECTIVE_STOP``, ...).
        t_s: controller time of the cycle.
        cycle: cycles published so far.
        joint_pos_rad: measured positions when the cell reported them, else the set-point.
        setpoint_rad: commanded set-point after the cycle.
        setpoint_vel_rad_s: set-point velocity of the cycle.
        gripper_on: gripper output (last request from a stream or job; False if none).
        speed_scale: reduced-speed factor in (0, 1].
        job: running job name, empty if none.
        last_error: why the controller faulted, empty if it did not.
    """

    robot: str
    lifecycle_state: str
    t_s: float
    cycle: int
    joint_pos_rad: np.ndarray
    setpoint_rad: np.ndarray
    setpoint_vel_rad_s: np.ndarray
    gripper_on: bool
    speed_scale: float
    job: str
    last_error: str

    @property
    def protective_stop(self) -> bool:
        """True while the robot is in PROTECTIVE_STOP."""
        return self.lifecycle_state == LifecycleState.PROTECTIVE_STOP.name


class JobOutputs(Protocol):
    """What a running job reports each cycle (``testbed.control.job.JobOutputs`` fits)."""

    gripper: bool | None  # a gripper output to set this cycle, or None
    done: bool
    failed: str | None  # why the job stopped early, or None


class Job(Protocol):
    """A parsed teach-pendant job bound to one robot; it feeds the loop itself.

    ``plan`` runs on the backend's planning thread and must not touch the loop; ``start`` and
    ``tick`` run on the ticking thread, before the loop's tick, and must be cheap.
    """

    name: str

    def plan(self, q_start: np.ndarray) -> object:
        """Plan from joint positions ``q_start`` ``(joints,)``; raise ``JobError`` (naming the line) if it can't run."""
        ...

    def start(self, t_s: float, plan: object) -> None:
        """Start the plan ``plan`` returned at ``t_s``."""
        ...

    def tick(self, t_s: float) -> JobOutputs:
        """Advance the job to ``t_s``."""
        ...


#: ``loader(robot_index, job_yaml) -> Job``, called on the caller's thread; raises ``JobError``
#: naming the line of a bad job.
JobLoader = Callable[[int, str], Job]


class _RunnerJob:
    """A job of ``testbed.control.job``, planned in a ``JobPlanningProcess``, run by a ``JobRunner``."""

    def __init__(self, job: job_mode.Job, model: Any, loop: ControlLoop, robot: int, speed_scale: float,
                 process: JobPlanningProcess) -> None:
        self.name = job.name
        self._job = job
        self._model = model
        self._loop = loop
        self._robot = robot
        self._speed_scale = speed_scale
        self._process = process
        self._runner: job_mode.JobRunner | None = None

    def plan(self, q_start: np.ndarray) -> object:
        return self._process.plan(self._job, self._model, q_start, speed_scale=self._speed_scale)

    def start(self, t_s: float, plan: object) -> None:
        assert isinstance(plan, job_mode.JobProgram)
        self._runner = job_mode.JobRunner(self._job, self._model, self._loop, self._robot,
                                          speed_scale=self._speed_scale)
        self._runner.start_program(t_s, plan)

    def tick(self, t_s: float) -> JobOutputs:
        assert self._runner is not None
        out = self._runner.tick(t_s)
        for move in out.slowed:  # into the loop's events: a run serving this controller records them
            self._loop.record_event(self._robot, "move_slowed", **move.event_detail(self.name))
        return out


class ControlJobLoader:
    """The ``JobLoader`` of the job language of ``testbed.control.job``: parses and plans in a child process.

    The loop's models must be ``testbed.robots.RobotModel`` (jobs need the URDF for kinematics).
    The child process (a ``JobPlanningProcess``) starts with the first job; ``close`` ends it.
    """

    def __init__(self, loop: ControlLoop) -> None:
        self._loop = loop
        self.process = JobPlanningProcess()

    def __call__(self, robot: int, job_yaml: str) -> Job:
        """Parse ``job_yaml`` (in the child) into a job for robot index ``robot``.

        Raises:
            JobError: not valid YAML, or an invalid job (naming ``job_yaml:line``).
            ControllerError: the planning process died.
        """
        job = self.process.parse(job_yaml, source="job_yaml")
        loop = self._loop
        return _RunnerJob(job, loop.models[robot], loop, robot, loop.effective_speed_scale(robot), self.process)

    def close(self) -> None:
        """End the planning process (if it started)."""
        self.process.close()


def control_job_loader(loop: ControlLoop) -> ControlJobLoader:
    """A ``JobLoader`` over the job language of ``testbed.control.job`` (see ``ControlJobLoader``)."""
    return ControlJobLoader(loop)


class ControllerBackend(Protocol):
    """The controllers a ``ControllerService`` exposes. Every method is safe to call from any thread.

    Methods that change the robot return a future resolved once the change took effect in
    the control loop (or failed with a ``ControllerError``); they raise ``InvalidCommand``
    at once for malformed requests (unknown robot, wrong joint count, NaN/inf).
    """

    def robots(self) -> tuple[RobotDescription, ...]:
        """All robots, in loop order."""
        ...

    def snapshot(self, robot: str) -> RobotSnapshot:
        """The robot's state after the last published cycle."""
        ...

    def change_state(self, robot: str, transition: Transition) -> Future[str]:
        """Request a lifecycle change; the future gives the state name after it.

        A stop (PROTECTIVE_STOP, EMERGENCY_STOP) cannot be cancelled: it applies at the loop's
        next cycle however late that is; other changes cancelled before then never apply.
        """
        ...

    def send_job(self, robot: str, job_yaml: str) -> Future[str]:
        """Check, plan and start a job (YAML text); the future gives its name once it runs."""
        ...

    def stream_setpoints(
        self, robot: str, joint_pos_rad: np.ndarray, *, dt_s: float | None = None, gripper_on: bool = False
    ) -> Future[RobotSnapshot]:
        """Queue joint targets, ``(joints,)`` or ``(steps, joints)`` rows ``dt_s`` apart from the next cycle.

        The future gives the robot's state after the cycle that applied them.
        """
        ...

    def end_stream(self, robot: str) -> None:
        """The stream ended normally: reach the last target and hold, without a stream timeout."""
        ...

    def follow_trajectory(
        self,
        robot: str,
        points: Sequence[TrajectoryPoint],
        *,
        joint_names: Sequence[str] | None = None,
        path_tolerance: Sequence[float] | None = None,
        goal_tolerance: Sequence[float] | None = None,
        goal_time_tolerance_s: float | None = None,
    ) -> TrajectoryHandle:
        """Check a joint trajectory and queue it; the handle gives its feedback, then its result.

        Raises ``InvalidCommand`` naming the field and point index of an invalid goal.
        """
        ...


@dataclass
class _TrajectoryRun:
    goal: TrajectoryGoal
    handle: TrajectoryHandle
    controller: TrajectoryController
    bound: Any  # testbed.control.trajectory.BoundTrajectory: the desired motion
    t0_s: float
    checks: int = 0


@dataclass
class _Command:
    robot: int
    kind: str  # transition value, "job", "setpoints" or "end_stream"
    future: Future | None
    targets: np.ndarray | None = None
    dt_s: float = 0.0
    gripper_on: bool = False
    job: Job | None = None
    trajectory: tuple[TrajectoryGoal, TrajectoryHandle] | None = None


@dataclass
class _LastChunk:
    targets: np.ndarray
    t0_s: float
    dt_s: float


@dataclass
class _Planning:
    """A job taken up by the ticking thread, waiting for its plan."""

    job: Job
    future: Future
    token: int


@dataclass
class _PlanRequest:
    robot: int
    token: int
    job: Job
    q_start: np.ndarray


@dataclass
class _PlanDone:
    robot: int
    token: int
    plan: object = None
    error: BaseException | None = None


class _PlanningThread:
    """Plans jobs one at a time off the ticking thread; finished plans wait in ``done`` for a cycle to take them.

    The ticking thread only appends to a queue and pops from a deque, so it never waits for a plan
    nor for a lock held while planning. A plan that fails becomes that job's error; an unexpected
    exception in a job's ``plan`` is handed to that job as it is; if the thread itself dies, ``error``
    says why and every job still waiting fails with it.
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[_PlanRequest | None] = queue.SimpleQueue()
        self.done: deque[_PlanDone] = deque()
        self.error: ControllerError | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def ensure_started(self) -> None:
        """Start the thread if it is not running (call from a caller's thread, never the ticking one).

        Raises:
            ControllerError: the thread died earlier (the message says why).
        """
        if self.error is not None:
            raise self.error
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="controller-planner", daemon=True)
                self._thread.start()

    def submit(self, request: _PlanRequest) -> None:
        """Queue a plan (never blocks).

        Raises:
            ControllerError: the thread is not running (died, or never started).
        """
        if self.error is not None:
            raise self.error
        if self._thread is None:
            raise ControllerError("job planning thread is not running (ensure_started was not called)")
        self._requests.put(request)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread after the plan in progress and wait for it.

        Raises:
            ControllerError: the thread did not end within ``timeout_s``.
        """
        with self._start_lock:
            thread = self._thread
        if thread is None:
            return
        self._requests.put(None)
        thread.join(timeout_s)
        if thread.is_alive():
            raise ControllerError(
                f"job planning thread did not end within {timeout_s:g} s (a job's plan is still running)"
            )

    def _run(self) -> None:
        try:
            while True:
                request = self._requests.get()
                if request is None:
                    return
                try:
                    plan = request.job.plan(request.q_start)
                except Exception as exc:  # JobError, ControllerError, or a bug: that job fails with it
                    self.done.append(_PlanDone(request.robot, request.token, error=exc))
                else:
                    self.done.append(_PlanDone(request.robot, request.token, plan=plan))
        except BaseException as exc:  # the thread itself dies: jobs waiting for it fail with this
            error = ControllerError(
                f"job planning thread died ({type(exc).__name__}: {exc}); jobs cannot be planned until the "
                "controller restarts"
            )
            error.__cause__ = exc
            self.error = error


class ControlLoopBackend:
    """``ControllerBackend`` over a ``testbed.control.ControlLoop`` ticked by another thread.

    Args:
        loop: the control loop; only the ticking thread may call its methods while this
            backend is in use (through ``tick`` or ``apply_pending``/``publish``).
        names: robot names callers use, one per loop robot; default the model names.
        job_loader: turns job YAML into a runnable ``Job`` on the caller's thread; default
            ``control_job_loader(loop)`` (the job language, parsed and planned in a child process).
            Pass ``False`` to refuse jobs with ``FeatureUnavailable``.
        feedback_every: a running trajectory publishes feedback every this many cycles.
        feedback_queue: feedback items kept per trajectory for a slow caller (oldest dropped).

    Raises:
        ControllerError: ``names`` has the wrong length or duplicates.
    """

    def __init__(
        self,
        loop: ControlLoop,
        *,
        names: Sequence[str] | None = None,
        job_loader: JobLoader | bool | None = None,
        feedback_every: int = 10,
        feedback_queue: int = 64,
    ) -> None:
        models = loop.models
        if names is None:
            names = [str(m.name) for m in models]
        names = [str(n) for n in names]
        if len(names) != loop.n_robots:
            raise ControllerError(
                f"ControlLoopBackend: names must give one name per robot ({loop.n_robots}), got {len(names)}"
            )
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ControllerError(
                f"ControlLoopBackend: robot names must be unique, {dupes} repeat; pass names=[...] "
                "(e.g. the cell's robot names)"
            )
        if feedback_every < 1 or feedback_queue < 1:
            raise ControllerError(
                f"ControlLoopBackend: feedback_every and feedback_queue must be >= 1, got {feedback_every}, "
                f"{feedback_queue}"
            )
        self._feedback_every = int(feedback_every)
        self._feedback_queue = int(feedback_queue)
        self._loop = loop
        self._job_loader: JobLoader | None = None
        self._job_missing = "job_loader=False was given"
        if callable(job_loader):
            self._job_loader = job_loader
        elif job_loader is None:
            self._job_loader = control_job_loader(loop)
        self._planner = _PlanningThread()
        self._index = {n: i for i, n in enumerate(names)}
        lower, upper, vel, acc = loop.limits
        descs = []
        for i, (name, model) in enumerate(zip(names, models, strict=True)):
            n_j = int(model.n_joints)
            joint_names = tuple(getattr(model, "joint_names", None) or (f"joint_{k + 1}" for k in range(n_j)))
            joint_types = tuple(getattr(model, "joint_types", None) or ("revolute",) * n_j)
            descs.append(
                RobotDescription(
                    name=name,
                    model=str(model.name),
                    joint_names=joint_names,
                    joint_types=joint_types,
                    lower=_frozen(lower[i, :n_j]),
                    upper=_frozen(upper[i, :n_j]),
                    velocity_max=_frozen(vel[i, :n_j]),
                    acceleration_max=_frozen(acc[i, :n_j]),
                    cycle_s=loop.dt_s,
                )
            )
        self._robots = tuple(descs)

        self._lock = threading.Lock()
        self._pending: list[_Command] = []
        self._awaiting: list[tuple[int, Future]] = []  # set-point futures resolved after the next publish
        shape = (loop.n_robots, loop.max_joints)
        # until the first publish, report the loop's state as it is now (not zeros)
        self._pub_setpoint = np.array(loop.setpoint, dtype=np.float64)
        self._pub_vel = np.zeros(shape)
        self._pub_measured = np.zeros(shape)
        self._has_measured = False
        self._t_s = 0.0
        self._cycle = 0
        self._gripper: list[bool | None] = [None] * loop.n_robots
        self._jobs: dict[int, Job] = {}
        self._job_failed: dict[int, str] = {}
        self._planning: dict[int, _Planning] = {}
        self._plan_token = 0
        self._last_chunk: dict[int, _LastChunk] = {}
        self._trajectories: dict[int, _TrajectoryRun] = {}
        self._cycle_cv = threading.Condition(self._lock)
        # results of commands applied this cycle, given to their futures once the cycle is published
        self._resolved: list[tuple[Future, object]] = []
        # what snapshots show besides the arrays, copied by publish (per robot)
        n = loop.n_robots
        self._pub_state = [""] * n
        self._pub_error = [""] * n
        self._pub_job = [""] * n
        self._pub_gripper = [False] * n
        self._pub_speed_scale = loop.speed_scale
        self._pub_transitions = -1
        self._changed = True  # jobs, gripper or job errors changed since the last publish
        self._publish_flags()
        self.loop_error: BaseException | None = None  # what killed the ticking thread (see loop_died)
        self._died = ""  # "control loop died: ..." once it did

    @property
    def loop(self) -> ControlLoop:
        """The control loop this backend drives (call its methods only from the ticking thread)."""
        return self._loop

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the job planning thread and the job loader's planning process (if they started).

        Raises:
            ControllerError: one of them did not end within ``timeout_s``.
        """
        self._planner.close(timeout_s)
        closer = getattr(self._job_loader, "close", None)
        if callable(closer):
            closer()

    def __enter__(self) -> ControlLoopBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def loop_died(self, exc: BaseException) -> None:
        """The thread ticking the loop died of ``exc``: say so everywhere, for good.

        Logs the error, keeps it (``loop_error``), reports every robot ERROR with
        ``last_error`` "control loop died: ..." in snapshots, fails queued commands, jobs being
        planned and running trajectories with it, and refuses new commands with ``LoopDied``.
        Later ``tick``/``publish`` calls change nothing of that. Only the first error is kept.
        """
        with self._lock:
            if self.loop_error is not None:
                return
            self.loop_error = exc
            self._died = why = f"control loop died: {type(exc).__name__}: {exc}"
            _log.error("controller: %s (thread %s); every robot now reports ERROR and commands are refused",
                       why, threading.current_thread().name, exc_info=exc)
            died = LoopDied(f"{why}; nothing sent to this controller can take effect any more")
            pending, self._pending = self._pending, []
            for cmd in pending:
                if cmd.future is not None:
                    _fail(cmd.future, died)
                if cmd.trajectory is not None:
                    self._abort_goal(cmd.robot, cmd.trajectory[0], cmd.trajectory[1], why)
            for r, run in list(self._trajectories.items()):
                self._abort_goal(r, run.goal, run.handle, why, run.t0_s)
            self._trajectories.clear()
            for waiting in self._planning.values():
                _fail(waiting.future, died)
            self._planning.clear()
            for _, fut in self._awaiting:
                _fail(fut, died)
            self._awaiting.clear()
            for fut, _ in self._resolved:
                _fail(fut, died)
            self._resolved.clear()
            for r in range(len(self._robots)):
                self._pub_state[r] = LifecycleState.ERROR.name
                self._pub_error[r] = why
            self._cycle_cv.notify_all()

    def _abort_goal(self, r: int, goal: TrajectoryGoal, handle: TrajectoryHandle, why: str,
                    t0_s: float | None = None) -> None:
        """End a trajectory goal ABORTED because the loop died, where the last published cycle left the robot."""
        here = self._pub_setpoint[r, : self._robots[r].n_joints][goal.order]
        since = self._t_s - t0_s if t0_s is not None else 0.0
        handle._finish(feedback(self._t_s, since, here, here, TrajectoryResult(TrajectoryResultCode.ABORTED, why)))

    # ------------------------------------------------------------------ ControllerBackend
    def robots(self) -> tuple[RobotDescription, ...]:
        """All robots, in loop order."""
        return self._robots

    def snapshot(self, robot: str) -> RobotSnapshot:
        """The robot's state after the last published cycle.

        Raises:
            InvalidCommand: unknown robot.
        """
        r = self._robot_index(robot)
        with self._lock:
            return self._snapshot_locked(r)

    def change_state(self, robot: str, transition: Transition) -> Future[str]:
        """Queue a lifecycle change for the next cycle; the future gives the resulting state name.

        The future fails with ``ControllerError`` when the lifecycle refuses the transition.
        Cancelling the future before that cycle drops the change, except a stop
        (PROTECTIVE_STOP, EMERGENCY_STOP): its future is running from the start, so it cannot be
        cancelled, and the next cycle applies it however late that is.

        Raises:
            InvalidCommand: unknown robot or transition.
        """
        r = self._robot_index(robot)
        if not isinstance(transition, Transition):
            known = ", ".join(t.name for t in Transition)
            raise InvalidCommand(f"transition: expected one of {known}, got {transition!r}")
        future: Future[str] = Future()
        if transition.value in _STOPS:
            future.set_running_or_notify_cancel()  # a running future cannot be cancelled
        return self._queue(_Command(r, transition.value, future))

    def send_job(self, robot: str, job_yaml: str) -> Future[str]:
        """Check a job and queue it; the future gives the job's name once it runs.

        The next cycle takes the job up: the robot (which must be ACTIVE) stops what it was doing
        and holds, and the job is planned from that set-point on the planning thread while the
        loop goes on ticking. A later cycle starts the finished plan. If planning fails, the future
        fails with its ``JobError`` and the robot keeps holding. Cancelling the future before the
        job started means it never starts.

        Raises:
            InvalidCommand: unknown robot.
            JobError: the YAML does not parse, or the job loader refuses the job (naming the line).
            FeatureUnavailable: no job loader is configured (the job language is not available).
            ControllerError: the job planning thread or process died.
        """
        r = self._robot_index(robot)
        if self._job_loader is None:
            try:
                yaml.safe_load(job_yaml)
            except yaml.YAMLError as exc:
                raise JobError(f"job_yaml: not valid YAML: {exc}") from exc
            raise FeatureUnavailable(
                f"job_yaml for robot {robot!r}: jobs cannot run here: this controller has no job loader "
                f"({self._job_missing}); stream set-points with StreamSetpoints instead"
            )
        job = self._job_loader(r, job_yaml)
        self._planner.ensure_started()
        return self._queue(_Command(r, "job", Future(), job=job))

    def stream_setpoints(
        self, robot: str, joint_pos_rad: np.ndarray, *, dt_s: float | None = None, gripper_on: bool = False
    ) -> Future[RobotSnapshot]:
        """Queue joint targets from the next cycle on; the future gives the state after that cycle.

        Args:
            robot: robot name.
            joint_pos_rad: ``(joints,)`` one target, or ``(steps, joints)`` rows ``dt_s`` apart.
            dt_s: time between rows; None or 0 means the loop's cycle.
            gripper_on: gripper output requested with these targets.

        Raises:
            InvalidCommand: unknown robot, wrong shape or joint count, NaN/inf, bad ``dt_s``.
        """
        r = self._robot_index(robot)
        desc = self._robots[r]
        arr = np.asarray(joint_pos_rad)
        if arr.dtype.kind != "f":
            raise InvalidCommand(f"joint_pos_rad: expected float32 or float64 values, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != desc.n_joints or not 1 <= arr.shape[0] <= MAX_CHUNK_ROWS:
            raise InvalidCommand(
                f"joint_pos_rad: robot {robot!r} has {desc.n_joints} joints: expected shape ({desc.n_joints},) "
                f"or (steps, {desc.n_joints}) with 1 <= steps <= {MAX_CHUNK_ROWS}, got {np.shape(joint_pos_rad)}"
            )
        finite = np.isfinite(arr)
        if not finite.all():
            row, joint = (int(x) for x in np.argwhere(~finite)[0])
            raise InvalidCommand(
                f"joint_pos_rad: NaN or inf for robot {robot!r} at row {row} joint {joint} "
                f"({desc.joint_names[joint]}); every value must be finite"
            )
        step_s = self._loop.dt_s if not dt_s else float(dt_s)
        if not (math.isfinite(step_s) and step_s > 0):
            raise InvalidCommand(f"dt_s: expected a finite time > 0 between rows (or 0 for the cycle), got {dt_s!r}")
        targets = np.array(arr, dtype=np.float64)  # own copy: the caller's buffer may change
        return self._queue(_Command(r, "setpoints", Future(), targets=targets, dt_s=step_s, gripper_on=gripper_on))

    def end_stream(self, robot: str) -> None:
        """Let ``robot`` reach its last streamed target and hold there (no stream-timeout stop).

        Raises:
            InvalidCommand: unknown robot.
        """
        with contextlib.suppress(LoopDied):  # nothing moves any more: there is nothing to end
            self._queue(_Command(self._robot_index(robot), "end_stream", None))

    def follow_trajectory(
        self,
        robot: str,
        points: Sequence[TrajectoryPoint],
        *,
        joint_names: Sequence[str] | None = None,
        path_tolerance: Sequence[float] | None = None,
        goal_tolerance: Sequence[float] | None = None,
        goal_time_tolerance_s: float | None = None,
    ) -> TrajectoryHandle:
        """Check a joint trajectory and queue it for the next cycle; the handle streams its feedback.

        At the next cycle the trajectory starts from the robot's current set-point and replaces
        any trajectory in progress (that one ends PREEMPTED). It is checked every cycle against
        the last measured positions (the set-point when the cell reports none).

        Args:
            robot: robot name.
            points: the trajectory, positions etc. in ``joint_names`` order; all points carry the
                same fields (positions: linear, + velocities: cubic, + accelerations: quintic).
            joint_names: order of the joints in ``points`` and the tolerances, each of the robot's
                joints once; None for the robot's own order.
            path_tolerance, goal_tolerance: per joint, None for the defaults
                (``DEFAULT_PATH_TOLERANCE``, ``DEFAULT_GOAL_TOLERANCE``); a value of 0 takes
                the default for that joint, a negative value leaves the joint unchecked.
            goal_time_tolerance_s: how long after the last point the goal may still be reached;
                None for ``DEFAULT_GOAL_TIME_TOLERANCE_S``.

        Raises:
            InvalidCommand: unknown robot, joint name or field size, NaN/inf, times not increasing,
                a position outside the joint range or a velocity/acceleration beyond the robot's
                limits (the message names the field and point index; nothing moved).
        """
        r = self._robot_index(robot)
        desc = self._robots[r]
        goal = check_trajectory_goal(
            desc,
            points,
            joint_names=joint_names,
            path_tolerance=path_tolerance,
            goal_tolerance=goal_tolerance,
            goal_time_tolerance_s=goal_time_tolerance_s,
        )
        order = tuple(desc.joint_names[j] for j in goal.order)
        handle = TrajectoryHandle(desc.name, order, self._feedback_queue)
        self._queue(_Command(r, "trajectory", None, trajectory=(goal, handle)))
        return handle

    # ------------------------------------------------------------------ the ticking thread
    def tick(self, t_s: float, measured_pos: np.ndarray | None = None) -> np.ndarray:
        """``apply_pending``, the loop's ``tick`` and ``publish`` in one call; returns the set-point view."""
        self.apply_pending(t_s)
        setpoint = self._loop.tick(t_s, measured_pos)
        self.publish(t_s, measured_pos)
        return setpoint

    def apply_pending(self, t_s: float) -> None:
        """Apply queued commands and advance running jobs; call before the loop's ``tick(t_s)``.

        Only the thread that ticks the loop may call this.
        """
        with self._lock:
            if not self._pending and not self._jobs and not self._trajectories and not self._planning:
                return
            if self._trajectories:
                self._advance_trajectories(t_s)
            pending, self._pending = self._pending, []
            for cmd in pending:
                future = cmd.future
                # a job stays cancellable while it is planned; a stop (its future running from the
                # start) always runs, however late; other commands run now or never
                if future is not None and cmd.kind not in _STOPS and (
                    future.cancelled() if cmd.kind == "job" else not future.set_running_or_notify_cancel()
                ):
                    continue  # the caller gave up waiting: a late command must not move the robot
                try:
                    self._apply(cmd, t_s)
                except (ControllerError, JobError) as exc:
                    if future is not None:
                        _fail(future, exc)
            if self._planning:
                self._start_planned(t_s)
            if self._jobs:
                self._advance_jobs(t_s)

    def publish(self, t_s: float, measured_pos: np.ndarray | None = None) -> None:
        """Copy the loop's state after its ``tick(t_s)``; resolves set-point futures of this cycle.

        Args:
            t_s: the cycle's time.
            measured_pos: ``(robots, max_joints)`` measured positions, or None to report set-points.
        """
        loop = self._loop
        with self._lock:
            if self._died:
                return  # a dead loop's last report stands (see loop_died)
            np.copyto(self._pub_setpoint, loop.setpoint)
            np.copyto(self._pub_vel, loop.setpoint_vel)
            if measured_pos is not None:
                np.copyto(self._pub_measured, measured_pos)
            self._has_measured = measured_pos is not None
            self._t_s = float(t_s)
            self._cycle += 1
            self._pub_speed_scale = loop.speed_scale
            if self._changed or loop.transition_count != self._pub_transitions:
                self._publish_flags()
            if self._awaiting:
                for r, fut in self._awaiting:
                    fut.set_result(self._snapshot_locked(r))
                self._awaiting.clear()
            if self._resolved:
                for fut, value in self._resolved:
                    fut.set_result(value)
                self._resolved.clear()
            self._cycle_cv.notify_all()

    def _publish_flags(self) -> None:
        """Copy lifecycle states, errors, jobs and gripper outputs for snapshots (only when one changed)."""
        loop = self._loop
        self._pub_transitions = loop.transition_count
        self._changed = False
        for r in range(loop.n_robots):
            comp = loop.component(r)
            job = self._jobs.get(r)
            self._pub_state[r] = comp.state.name
            self._pub_error[r] = comp.last_error or self._job_failed.get(r, "")
            self._pub_job[r] = job.name if job is not None else ""
            self._pub_gripper[r] = bool(self._gripper[r])

    def gripper_request(self, robot: int) -> bool | None:
        """The gripper output last requested for robot index ``robot`` by a stream or job, None if never."""
        with self._lock:
            return self._gripper[robot]

    def wait_cycles(self, n: int, timeout_s: float) -> bool:
        """Block until ``n`` more cycles were published; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cycle_cv:
            target = self._cycle + n
            while self._cycle < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cycle_cv.wait(left):
                    return self._cycle >= target
        return True

    # ------------------------------------------------------------------ internals
    def _robot_index(self, robot: str) -> int:
        r = self._index.get(robot)
        if r is None:
            known = ", ".join(self._index)
            raise InvalidCommand(f"robot: unknown robot {robot!r} (known: {known})")
        return r

    def _queue(self, cmd: _Command) -> Future:
        with self._lock:
            if self._died:
                raise LoopDied(f"{self._died}; nothing sent to this controller can take effect any more")
            self._pending.append(cmd)
        return cmd.future if cmd.future is not None else Future()

    def _apply(self, cmd: _Command, t_s: float) -> None:
        loop, r = self._loop, cmd.robot
        comp = loop.component(r)
        name = self._robots[r].name
        if cmd.kind == "trajectory":
            assert cmd.trajectory is not None
            self._start_trajectory(r, *cmd.trajectory, t_s)
        elif cmd.kind == "setpoints":
            assert cmd.targets is not None and cmd.future is not None
            if comp.state is not LifecycleState.ACTIVE:
                raise ControllerError(_not_active(name, comp.state, comp.last_error))
            busy = self._job_refusal(r, "set-points")
            if busy:
                raise ControllerError(busy)
            self._end_trajectory(r, TrajectoryResultCode.PREEMPTED, "preempted by a set-point stream", t_s)
            loop.submit_chunk(r, cmd.targets, t_s, cmd.dt_s)
            self._last_chunk[r] = _LastChunk(cmd.targets, t_s, cmd.dt_s)
            if self._gripper[r] != cmd.gripper_on:
                self._gripper[r] = cmd.gripper_on
                self._changed = True
            self._awaiting.append((r, cmd.future))
        elif cmd.kind == "end_stream":
            last = self._last_chunk.pop(r, None)
            if last is not None and comp.state is LifecycleState.ACTIVE and not self._job_refusal(r, ""):
                # the same rows on the same grid, but held at the end instead of timing out; if the
                # clock went back (a new episode restarts at 0) the rows start now
                loop.submit_chunk(r, last.targets, min(last.t0_s, t_s), last.dt_s, hold_after=True)
        elif cmd.kind == "job":
            assert cmd.job is not None and cmd.future is not None
            if comp.state is not LifecycleState.ACTIVE:
                raise ControllerError(_not_active(name, comp.state, comp.last_error))
            if r in self._jobs:
                raise ControllerError(f"robot {name!r} is already running job {self._jobs[r].name!r}")
            if r in self._planning:
                raise ControllerError(
                    f"robot {name!r} is already starting job {self._planning[r].job.name!r} (it is being planned)"
                )
            self._plan_token += 1
            q_start = loop.setpoint[r, : self._robots[r].n_joints].copy()
            self._planner.submit(_PlanRequest(r, self._plan_token, cmd.job, q_start))  # raises if it died
            self._planning[r] = _Planning(cmd.job, cmd.future, self._plan_token)
            self._end_trajectory(r, TrajectoryResultCode.PREEMPTED, f"preempted by job {cmd.job.name!r}", t_s)
            self._last_chunk.pop(r, None)
            loop.hold(r)  # the job takes the robot over: it holds here while the job is planned from here
        else:
            assert cmd.future is not None
            transition = Transition(cmd.kind)
            if transition is Transition.PROTECTIVE_STOP:
                loop.protective_stop(r, "requested by a ControllerService client")
            elif transition is Transition.EMERGENCY_STOP:
                loop.emergency_stop(r, "requested by a ControllerService client")
            else:
                getattr(comp, transition.value)()
            if comp.state is not LifecycleState.ACTIVE:
                if self._jobs.pop(r, None) is not None:
                    self._changed = True
                why = f" ({comp.last_error})" if comp.last_error else ""
                self._end_trajectory(
                    r, TrajectoryResultCode.ABORTED, f"robot {name!r} left ACTIVE: {comp.state.name}{why}", t_s
                )
                self._abort_planning(r)
            self._resolved.append((cmd.future, comp.state.name))

    def _start_trajectory(self, r: int, goal: TrajectoryGoal, handle: TrajectoryHandle, t_s: float) -> None:
        if handle.cancel_requested:
            return  # the caller left before it started: a late goal must not move the robot
        loop, desc = self._loop, self._robots[r]
        comp = loop.component(r)
        refusal = None
        if comp.state is not LifecycleState.ACTIVE:
            refusal = _not_active(desc.name, comp.state, comp.last_error)
        else:
            refusal = self._job_refusal(r, "trajectories") or None
        if refusal is not None:
            here = loop.setpoint[r, : desc.n_joints][goal.order]
            result = TrajectoryResult(TrajectoryResultCode.INVALID_GOAL, refusal)
            handle._finish(feedback(t_s, 0.0, here, here, result))
            return
        self._end_trajectory(r, TrajectoryResultCode.PREEMPTED, "preempted by a new trajectory", t_s)
        self._last_chunk.pop(r, None)
        n = desc.n_joints
        duration = goal.trajectory.duration_s
        row_dt = max(loop.dt_s, _MIN_TRAJECTORY_ROW_S, duration / _MAX_TRAJECTORY_ROWS)
        controller = TrajectoryController(
            loop,
            r,
            path_tolerance=goal.path_tolerance,
            goal_tolerance=goal.goal_tolerance,
            goal_time_tolerance_s=goal.goal_time_tolerance_s,
            row_dt_s=row_dt,
        )
        # the same start state follow() binds to, kept to report the desired positions
        bound = goal.trajectory.bind(loop.setpoint[r, :n].copy(), loop.setpoint_vel[r, :n].copy())
        controller.follow(goal.trajectory, t_s)
        self._trajectories[r] = _TrajectoryRun(goal, handle, controller, bound, t_s)

    def _advance_trajectories(self, t_s: float) -> None:
        """Check running trajectories against the last published cycle (its time and measured positions)."""
        t_meas = self._t_s
        measured = self._pub_measured if self._has_measured else self._pub_setpoint
        for r in list(self._trajectories):
            run = self._trajectories[r]
            n = self._robots[r].n_joints
            if run.handle.cancel_requested:
                if self._loop.state(r) is LifecycleState.ACTIVE:
                    self._loop.hold(r)
                self._end_trajectory(r, TrajectoryResultCode.ABORTED, "cancelled by the caller; the robot holds", t_s)
                continue
            if t_s < run.t0_s:
                self._end_trajectory(
                    r, TrajectoryResultCode.ABORTED,
                    f"the controller clock went back from {run.t0_s:.3f} s to {t_s:.3f} s (a new episode started)",
                    t_s,
                )
                continue
            if t_meas < run.t0_s:
                continue  # no cycle of this trajectory was measured yet
            meas = measured[r, :n]
            status = run.controller.tick(t_meas, meas)
            run.checks += 1
            if status.state == "executing":
                if run.checks % self._feedback_every == 0:
                    run.handle._push(self._trajectoryfeedback(run, t_meas, meas))
                continue
            code, text = self._trajectory_outcome(r, run, status, t_meas, meas)
            self._end_trajectory(r, code, text, t_meas, meas)

    def _trajectory_outcome(
        self, r: int, run: _TrajectoryRun, status: TrajectoryStatus, t_s: float, meas: np.ndarray
    ) -> tuple[TrajectoryResultCode, str]:
        desc, goal = self._robots[r], run.goal
        since = t_s - run.t0_s
        if status.state == "succeeded":
            err = np.abs(meas - run.bound.end)
            j = int(np.argmax(err))
            return TrajectoryResultCode.SUCCESSFUL, (
                f"robot {desc.name!r} reached the goal {since:.3f} s after the start "
                f"(largest error {err[j]:.3g} at {desc.joint_names[j]})"
            )
        if status.reason == "path_tolerance":
            err = np.abs(meas - run.bound.sample(since)[0])
            j = int(np.argmax(err - goal.path_tolerance))
            return TrajectoryResultCode.PATH_TOLERANCE_VIOLATED, (
                f"{desc.joint_names[j]}: |actual - desired| = {err[j]:.4g} > path_tolerance "
                f"{goal.path_tolerance[j]:.4g} at {since:.3f} s from the start; the robot holds where it was"
            )
        if status.reason == "goal_tolerance":
            err = np.abs(meas - run.bound.end)
            j = int(np.argmax(err - goal.goal_tolerance))
            return TrajectoryResultCode.GOAL_TOLERANCE_VIOLATED, (
                f"{desc.joint_names[j]}: |actual - goal| = {err[j]:.4g} > goal_tolerance {goal.goal_tolerance[j]:.4g} "
                f"{goal.goal_time_tolerance_s:g} s after the last point's time ({goal.trajectory.duration_s:g} s)"
            )
        comp = self._loop.component(r)
        why = f" ({comp.last_error})" if comp.last_error else ""
        return TrajectoryResultCode.ABORTED, f"robot {desc.name!r} left ACTIVE: {comp.state.name}{why}"

    def _trajectoryfeedback(
        self, run: _TrajectoryRun, t_s: float, meas: np.ndarray, result: TrajectoryResult | None = None
    ) -> TrajectoryFeedback:
        order = run.goal.order
        since = t_s - run.t0_s
        desired = run.bound.sample(since)[0]
        return feedback(t_s, since, desired[order], meas[order], result)

    def _end_trajectory(
        self, r: int, code: TrajectoryResultCode, text: str, t_s: float, meas: np.ndarray | None = None
    ) -> None:
        run = self._trajectories.pop(r, None)
        if run is None:
            return
        if meas is None:
            meas = self._loop.setpoint[r, : self._robots[r].n_joints]
        run.handle._finish(self._trajectoryfeedback(run, t_s, np.array(meas), TrajectoryResult(code, text)))

    def _job_refusal(self, r: int, what: str) -> str:
        """Why ``what`` is refused for robot ``r`` because of a job (running or being planned); empty if it is not."""
        name = self._robots[r].name
        if r in self._jobs:
            doing = f"running job {self._jobs[r].name!r}"
        elif r in self._planning:
            doing = f"starting job {self._planning[r].job.name!r} (it is being planned)"
        else:
            return ""
        return (f"robot {name!r} is {doing}: {what} are refused until it ends (or stop it with "
                "TRANSITION_PROTECTIVE_STOP and RESET)")

    def _start_planned(self, t_s: float) -> None:
        """Start the jobs whose plans came back (never waits for one still being planned)."""
        done = self._planner.done
        while done:
            result = done.popleft()
            waiting = self._planning.get(result.robot)
            if waiting is None or waiting.token != result.token:
                continue  # aborted while it was planned; its caller was told then
            del self._planning[result.robot]
            self._start_job(result.robot, waiting, result, t_s)
        if self._planning and self._planner.error is not None:
            for waiting in self._planning.values():
                _fail(waiting.future, self._planner.error)
            self._planning.clear()

    def _start_job(self, r: int, waiting: _Planning, result: _PlanDone, t_s: float) -> None:
        comp = self._loop.component(r)
        if result.error is not None:
            _fail(waiting.future, result.error)  # the robot keeps holding where the job took it over
            return
        if comp.state is not LifecycleState.ACTIVE:
            _fail(waiting.future, ControllerError(
                f"robot {self._robots[r].name!r} left ACTIVE while job {waiting.job.name!r} was being planned: "
                f"{_not_active(self._robots[r].name, comp.state, comp.last_error)}"
            ))
            return
        if not waiting.future.set_running_or_notify_cancel():
            return  # the caller gave up while the job was planned: it must not start late
        try:
            waiting.job.start(t_s, result.plan)
        except Exception as exc:  # refused, or a bug in the job: its caller gets the error, the loop goes on
            waiting.future.set_exception(exc)
            return
        self._jobs[r] = waiting.job
        self._job_failed.pop(r, None)
        self._changed = True
        self._resolved.append((waiting.future, waiting.job.name))

    def _abort_planning(self, r: int) -> None:
        """The robot left ACTIVE: a job being planned for it will not start."""
        waiting = self._planning.pop(r, None)
        if waiting is None:
            return
        comp = self._loop.component(r)
        name = self._robots[r].name
        _fail(waiting.future, ControllerError(
            f"robot {name!r} left ACTIVE while job {waiting.job.name!r} was being planned; it will not start: "
            f"{_not_active(name, comp.state, comp.last_error)}"
        ))

    def _advance_jobs(self, t_s: float) -> None:
        for r in list(self._jobs):
            if self._loop.state(r) is not LifecycleState.ACTIVE:
                del self._jobs[r]  # a stop or fault aborts the job, as on a teach pendant
                self._changed = True
                continue
            out = self._jobs[r].tick(t_s)
            if out.gripper is not None and self._gripper[r] != bool(out.gripper):
                self._gripper[r] = bool(out.gripper)
                self._changed = True
            if out.done:
                failed = getattr(out, "failed", None)
                if failed:
                    self._job_failed[r] = f"job {self._jobs[r].name!r} failed: {failed}"
                del self._jobs[r]
                self._changed = True

    def _snapshot_locked(self, r: int) -> RobotSnapshot:
        # only what publish copied: state, job and set-points of one and the same cycle
        n_j = self._robots[r].n_joints
        setpoint = self._pub_setpoint[r, :n_j].copy()
        measured = self._pub_measured[r, :n_j].copy() if self._has_measured else setpoint.copy()
        return RobotSnapshot(
            robot=self._robots[r].name,
            lifecycle_state=self._pub_state[r],
            t_s=self._t_s,
            cycle=self._cycle,
            joint_pos_rad=measured,
            setpoint_rad=setpoint,
            setpoint_vel_rad_s=self._pub_vel[r, :n_j].copy(),
            gripper_on=self._pub_gripper[r],
            speed_scale=self._pub_speed_scale * float(self._loop.robot_speed_scale[r]),
            job=self._pub_job[r],
            last_error=self._pub_error[r],
        )


def _fail(future: Future, exc: BaseException) -> None:
    """Fail a command's future, unless its caller cancelled it (still pending) meanwhile."""
    if future.running() or future.set_running_or_notify_cancel():
        future.set_exception(exc)


def _not_active(name: str, state: LifecycleState, last_error: str | None) -> str:
    why = f" ({last_error})" if last_error else ""
    fix = (
        "send TRANSITION_RESET, then TRANSITION_ACTIVATE"
        if state in (LifecycleState.PROTECTIVE_STOP, LifecycleState.EMERGENCY_STOP, LifecycleState.ERROR)
        else "send TRANSITION_ACTIVATE"
    )
    return f"robot {name!r} is {state.name}{why}: set-points and jobs are accepted only when ACTIVE; {fix}"


def _frozen(values: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=np.float64)
    out.flags.writeable = False
    return out


class TickerThread:
    """Ticks a ``ControlLoopBackend`` on a daemon thread, paced by the wall clock (a ``Pacer``: sleep, then spin).

    For serving robots without a simulator, for benchmarks and for tests. If a tick or the plant
    raises, the thread ends and reports it: logged, ``backend.loop_died`` (robots report ERROR,
    commands are refused with ``LoopDied``), and ``stop()`` raises it. The loop's time is the
    wall-clock time since ``start`` on the grid of ``dt_s``: a wake-up a whole period late skips
    the cycles it missed (they are counted in ``stats()``), it does not run them late.

    Args:
        backend: the backend to tick (it owns the loop).
        dt_s: period; None for the loop's cycle.
        plant: stands in for the robots: maps the set-points after a cycle, ``(robots, max_joints)``,
            to the positions measured at the next one (e.g. a lag or an offset); None reports no
            measurement (the loop and the backend then use the set-points).
        realtime_priority: ask for SCHED_FIFO for the ticking thread only (see
            ``request_realtime_priority``); ``scheduler`` then says what was granted.
        spin_s: the last part of each wait spent spinning (see ``Pacer``).
    """

    def __init__(
        self,
        backend: ControlLoopBackend,
        dt_s: float | None = None,
        *,
        plant: Callable[[np.ndarray], np.ndarray] | None = None,
        realtime_priority: bool = False,
        spin_s: float = 0.0002,
    ) -> None:
        self._backend = backend
        self.dt_s = float(dt_s) if dt_s is not None else backend.loop.dt_s
        self._plant = plant
        self._realtime = realtime_priority
        self._pacer = Pacer(self.dt_s, spin_s=spin_s, max_samples=1 << 18)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="controller-ticker", daemon=True)
        self.error: BaseException | None = None
        self.scheduler = ""

    def start(self) -> TickerThread:
        """Start ticking; returns self."""
        self._thread.start()
        return self

    def stats(self) -> PacingStats:
        """Wake-up error and missed cycles so far."""
        return self._pacer.stats()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop ticking and wait for the thread to end.

        Raises:
            ControllerError: the thread did not end within ``timeout_s`` (a tick or the plant is
                blocked; the loop may still be ticking), or the loop raised while ticking (the
                original error is chained).
        """
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise ControllerError(
                f"TickerThread: the ticking thread did not end within {timeout_s:g} s of stop() "
                "(is a tick or the plant blocked?); the loop may still be ticking"
            )
        if self.error is not None:
            raise ControllerError(f"TickerThread: the control loop raised {self.error!r}") from self.error

    def __enter__(self) -> TickerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        measured = None
        try:
            if self._realtime:
                request_realtime_priority()  # this thread only: planners and servers keep the normal policy
            self.scheduler = current_scheduler()
            pacer, dt = self._pacer, self.dt_s
            start = pacer.start()
            while not self._stop.is_set():
                deadline = pacer.wait()
                cycle = round((deadline - start) / dt) - 1
                setpoint = self._backend.tick(cycle * dt, measured)
                if self._plant is not None:
                    measured = np.array(self._plant(setpoint), dtype=np.float64)
        except BaseException as exc:  # a dead ticker must not pass silently: logged, reported, raised by stop()
            self.error = exc
            try:
                self._backend.loop_died(exc)
            except BaseException:  # still say it died, if only in the log
                _log.exception("controller: the ticking thread died of %r and could not report it", exc)
