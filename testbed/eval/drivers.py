"""What moves each robot during an episode: a policy (through an action source) or a teach-pendant job."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from testbed.bridge.merge import merge_chunks
from testbed.control import ControlLoop
from testbed.control.job import Job, JobPlan, JobProgram, JobRunner
from testbed.control.job_process import JobPlanningProcess
from testbed.errors import ControllerError, JobError, PolicyClientFailed, PolicyUnavailable, SpecMismatch
from testbed.eval.events import EventStream
from testbed.eval.metrics import EpisodeTally
from testbed.policies.protocol import ActionKind, PolicySpec
from testbed.policies.source import ActionChunk, ActionSource
from testbed.sim.cell import Cell
from testbed.sites.links import SimulatedLink

if TYPE_CHECKING:
    from testbed.eval.sites_run import RunSites

PART_HELD_INPUT = 1  # vacuum switch: the cup has seized a part
PART_READY_INPUT = 2  # photo-eye at the stopper: a part waits at this robot's station
RECONNECT_POLL_S = 0.2


class Recorder(Protocol):
    """Receives every policy step's observation and the action computed for it (e.g. a LeRobot writer)."""

    def start_episode(self, task: str) -> int: ...
    def add_frame(self, frame: Mapping[str, np.ndarray], timestamp_s: float) -> None: ...
    def end_episode(self, extra: Mapping[str, Any] | None = None) -> None: ...
    def abort_episode(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class Episode:
    """What every driver of a running episode shares."""

    index: int
    cell: Cell
    control: ControlLoop
    events: EventStream
    tally: EpisodeTally
    realtime: bool
    recorder: Recorder | None = None
    latencies_ms: list[float] = field(default_factory=list)
    sites: RunSites | None = None  # filters and counts what crosses to a policy at another site


class Driver(Protocol):
    """Moves one robot: called every control cycle of an episode from ``next_step`` on."""

    index: int
    name: str
    next_step: int  # the loop calls ``cycle`` at every step from this one on (0: every step)

    def reset(self, ep: Episode) -> None: ...
    def cycle(self, ep: Episode, step: int, t: float, measured: np.ndarray) -> None: ...
    def finish(self, ep: Episode, t: float, measured: np.ndarray) -> None: ...


class PolicyDriver:
    """Drives a robot from an action source at the policy's rate.

    Lockstep: the request for policy step k overlaps the physics of step k -> k+1 and its
    chunk is applied from step k+1 on, waiting for it at most the deadline: a fixed
    one-step pipeline, so the round trip does not stall the loop and the run stays
    deterministic whatever the network does. With a simulated ``link`` (a policy at another
    site), the chunk requested at step k applies no earlier than k + ceil(delay/dt), the delay
    drawn from the link by the run's seeded generator; requests keep going out at the policy's
    rate while earlier ones are on the wire, so a chunk longer than the round trip keeps the robot
    fed. Real time: nothing waits; chunks are applied whenever they arrive, aligned by the step
    they were computed for.

    ``request_mode="blocking"`` is the baseline a synchronous client gives (``action = infer(obs)``
    at the policy rate): no request while one is unanswered, and only the action for the step it
    was asked for is executed, for one policy period.
    """

    def __init__(self, index: int, name: str, cell: Cell, source: ActionSource, spec: PolicySpec,
                 deadline_s: float, reconnect_s: float, merge: str = "latest", merge_weight: float = 0.5, *,
                 link: Callable[[int], SimulatedLink] | None = None, request_mode: str = "pipelined") -> None:
        self.index = index
        self.link_for_episode = link
        self.blocking = request_mode == "blocking"
        self.reconnect_s = reconnect_s
        self.merge = merge
        self.merge_weight = merge_weight
        self.name = name
        self.cell = cell
        self.source = source
        self.spec = spec
        self.deadline_s = deadline_s
        self.robot = cell.robots[index]
        self.n = self.robot.model.n_joints
        self.period_s = 1.0 / spec.control_hz
        self.steps_per_request = max(1, round(self.period_s / cell.dt_s))
        self.cameras = [(i, f"observation.images.{c.name}") for i, c in enumerate(cell.config.cameras)
                        if f"observation.images.{c.name}" in spec.observation]
        self._clear()

    def _clear(self) -> None:
        self.next_step = 0  # the loop may skip ``cycle`` until this step (``_next_due``)
        self.suction_plan: list[bool] = []  # vacuum on or off, per row of the chunk being executed
        self.plan_t0 = 0.0
        self.plan_end_t = 0.0  # when the controller runs out of the actions it was given
        self.step = 0
        # (policy step, observation, wall time asked, control step asked)
        self.in_flight: tuple[int, dict[str, np.ndarray], float, int] | None = None
        self.executing: ActionChunk | None = None  # the chunk being followed, merged, aligned by its step
        self.on_the_wire: list[tuple[int, ActionChunk]] = []  # (arrival step, chunk) over a simulated link
        self.link: SimulatedLink | None = None

    def reset(self, ep: Episode) -> None:
        """Start an episode; a policy that is down gets ``reconnect_s`` to come back before the episode starts."""
        self._clear()
        if self.link_for_episode is not None:
            self.link = self.link_for_episode(ep.index)
        # streaming starts now: hold here, and a policy that never answers leads to a protective stop
        hold = ep.control.setpoint[self.index, : self.n][None].copy()
        ep.control.submit_chunk(self.index, hold, 0.0, self.period_s)
        give_up = time.monotonic() + self.reconnect_s
        while True:
            try:
                self.source.reset(ep.index)
                return
            except PolicyUnavailable as exc:
                self._report_client_failure(ep, 0.0, exc, step=0)
                if time.monotonic() >= give_up:
                    ep.tally.policy_timeouts += 1
                    ep.events.emit("policy_timeout", 0.0, ep.index, self.name, step=0,
                                   reason=f"not reachable at episode start for {self.reconnect_s} s: {exc}")
                    return
            time.sleep(RECONNECT_POLL_S)

    def observe(self, joint_pos: np.ndarray) -> dict[str, np.ndarray]:
        """What the policy's spec asks for, and nothing else (privileged state only when asked)."""
        robot = self.cell.robots[self.index]
        obs: dict[str, np.ndarray] = {}
        if "observation.state" in self.spec.observation:
            state = np.empty(self.n + 1, dtype=np.float32)
            state[: self.n] = joint_pos[self.index, : self.n]
            state[self.n] = 1.0 if robot.suction_on else 0.0
            obs["observation.state"] = state
        if "observation.environment_state" in self.spec.observation:
            obs["observation.environment_state"] = self.cell.environment_state(self.index)
        for cam_index, key in self.cameras:
            obs[key] = self.cell.render(cam_index)
        return obs

    def cycle(self, ep: Episode, step: int, t: float, measured: np.ndarray) -> None:
        # called at least at ``next_step``: plain Python on cached attributes, pybullet and numpy only per policy step
        while self.on_the_wire and self.on_the_wire[0][0] <= step:
            self._apply(ep, self.on_the_wire.pop(0)[1], step, t, measured)
        if self.in_flight is not None and ep.realtime:
            self._poll(ep, step, t, measured, timeout_s=0.0)
        if step % self.steps_per_request == 0:
            due = None
            if self.in_flight is not None and not ep.realtime:
                due = self._poll(ep, step, t, measured, timeout_s=self.deadline_s, defer=True)
            if not (self.blocking and (self.in_flight is not None or self.on_the_wire)):
                self._request(ep, step, t, measured)
            if due is not None:
                # handed to the controller after the next request went out, so that its round trip
                # overlaps this too: nothing the request observes depends on it (the joints were
                # measured before, the vacuum is switched below), and the controller is ticked after
                self._apply(ep, due, step, t, measured)
        if t >= self.plan_end_t - 1e-9:
            ep.tally.starved_steps += 1
        plan = self.suction_plan
        if plan:
            suction = plan[self._plan_row(t)]
            if suction != self.robot.suction_on:
                self.cell.set_suction(self.index, suction)
        self.next_step = self._next_due(ep, step, t)

    def _plan_row(self, t: float) -> int:
        return min(int((t - self.plan_t0) / self.period_s + 1e-9), len(self.suction_plan) - 1)

    def _next_due(self, ep: Episode, step: int, t: float) -> int:
        """The next step at which ``cycle`` can do anything: the next policy step, or a step shortly before the plan
        moves to its next row (the vacuum may switch) or runs out (starving); every step in real time or while
        chunks are on a link. Calling ``cycle`` earlier than needed changes nothing, so the bound is conservative."""
        if ep.realtime or self.on_the_wire or t >= self.plan_end_t - 1e-9:
            return step + 1
        due = (step // self.steps_per_request + 1) * self.steps_per_request
        change_t = self.plan_end_t
        if self.suction_plan:
            change_t = min(change_t, self.plan_t0 + (self._plan_row(t) + 1) * self.period_s)
        # ``cycle`` sees the change from the first step within 1e-9 s of change_t: this one is no later
        return max(step + 1, min(due, math.ceil((change_t - 1e-6) / self.cell.dt_s)))

    def finish(self, ep: Episode, t: float, measured: np.ndarray) -> None:
        if self.in_flight is not None and not ep.realtime:
            # the last observation's answer completes its recorded frame; it is never executed
            self._poll(ep, round(t / self.cell.dt_s), t, measured, timeout_s=self.deadline_s)

    def _request(self, ep: Episode, step: int, t: float, measured: np.ndarray) -> None:
        obs = self.observe(measured)
        if ep.events.frames_wanted:
            for _, key in self.cameras:  # live viewers get the frames the policy sees, without another render
                camera = key.removeprefix("observation.images.")
                if ep.events.frame_due(camera):
                    ep.events.publish_frame(camera, obs[key], t, ep.index)
        try:
            self.source.submit(obs if ep.sites is None else ep.sites.outbound_observations(obs), self.step)
        except (PolicyUnavailable, SpecMismatch) as exc:
            self._report_client_failure(ep, t, exc, step=self.step)
            ep.tally.policy_timeouts += 1
            ep.events.emit("policy_timeout", t, ep.index, self.name, reason=str(exc), step=self.step)
        else:
            asked_at = self.in_flight[2] if self.in_flight is not None else time.perf_counter()
            self.in_flight = (self.step, obs, asked_at, step)
        self.step += 1

    def _report_client_failure(self, ep: Episode, t: float, exc: Exception, *, step: int) -> None:
        """A failure of the client itself (not of the server) becomes one ``policy_error`` event per episode
        and message, with its cause, and is listed in the tally (and so in ``metrics.json``)."""
        if not isinstance(exc, PolicyClientFailed) or str(exc) in ep.tally.policy_errors:
            return
        ep.tally.policy_errors.append(str(exc))
        cause = exc.__cause__
        ep.events.emit("policy_error", t, ep.index, self.name, step=step, error=str(exc),
                       cause=None if cause is None else f"{type(cause).__name__}: {cause}")

    def _poll(self, ep: Episode, step: int, t: float, measured: np.ndarray, *, timeout_s: float,
              defer: bool = False) -> ActionChunk | None:
        """Take the chunk that arrived for the request in flight; a request past its deadline times out.

        With ``defer``, a chunk due now is returned instead of applied: the caller applies it (``_apply``)
        within this control cycle.
        """
        assert self.in_flight is not None
        asked_step, asked_obs, asked_at, asked_control_step = self.in_flight
        try:
            chunk = self.source.result(timeout_s)
        except (PolicyUnavailable, SpecMismatch) as exc:
            self._report_client_failure(ep, t, exc, step=asked_step)
            chunk, reason = None, str(exc)
        else:
            reason = f"no answer within {self.deadline_s} s"
            if chunk is None and time.perf_counter() - asked_at < self.deadline_s:
                return None  # still in time (real-time polling)
        if chunk is None:
            self.in_flight = None
            ep.tally.policy_timeouts += 1
            ep.events.emit("policy_timeout", t, ep.index, self.name, reason=reason, step=asked_step)
            return None
        if chunk.step >= asked_step:
            self.in_flight = None
        else:
            # real time over a slow link: an earlier request's answer; the deadline now runs from its request
            answered_at = time.perf_counter() - chunk.latency_ms / 1000.0
            self.in_flight = (asked_step, asked_obs, max(asked_at, answered_at), asked_control_step)
        if ep.sites is not None:
            ep.sites.inbound_actions(chunk.actions.nbytes)
        if self.link is None and (ep.realtime or chunk.step == asked_step):
            # submit-to-collection time: in lockstep it includes the physics the request overlapped
            ep.latencies_ms.append(chunk.latency_ms)
        if chunk.step == asked_step:
            if ep.recorder is not None:
                ep.recorder.add_frame({**asked_obs, "action": chunk.actions[0].astype(np.float32)},
                                      asked_step * self.period_s)
            if self.link is not None:
                crossing = self.link.exchange(asked_control_step, self.cell.dt_s,
                                              sum(v.nbytes for v in asked_obs.values()), chunk.actions.nbytes)
                ep.latencies_ms.append(crossing.delay_s * 1000.0)
                if crossing.arrival_step > step:
                    self.on_the_wire.append((crossing.arrival_step, chunk))
                    return None
        if defer:
            return chunk
        self._apply(ep, chunk, step, t, measured)
        return None

    def _apply(self, ep: Episode, chunk: ActionChunk, step: int, t: float, measured: np.ndarray) -> None:
        """Hand a chunk to the controller: row k of a chunk computed for policy step s applies at step s + k."""
        if self.blocking:
            actions = chunk.actions[:1]  # the action for the step it was asked for
            row_t = t
        else:
            if self.executing is not None and self.merge != "latest":
                merged = merge_chunks(self.executing.actions, self.executing.step, chunk, self.merge,
                                      self.merge_weight)
                merged[:, self.n] = chunk.actions[:, self.n]  # the vacuum is switched, never averaged
                chunk = replace(chunk, actions=merged)
            self.executing = chunk
            now = step / self.steps_per_request  # in policy steps; a whole number except for link arrivals
            row = math.floor(now + 1e-9)
            skip = row - chunk.step
            if skip >= chunk.actions.shape[0]:
                ep.tally.late_chunks += 1
                return
            actions = chunk.actions[skip:]
            row_t = t - (now - row) * self.period_s
        joints = actions[:, : self.n].astype(np.float64)
        if self.spec.action_kind is ActionKind.JOINT_DELTAS:
            joints = joints + measured[self.index, : self.n]
        ep.control.submit_chunk(self.index, joints, row_t, self.period_s)
        self.suction_plan = (actions[:, self.n] > 0.5).tolist()
        self.plan_t0 = row_t
        self.plan_end_t = row_t + actions.shape[0] * self.period_s


class JobDriver:
    """Runs a teach-pendant job on a robot, over and over, with the cell's sensors as its inputs.

    Inputs: ``IN#(1)`` is the vacuum switch (a part is held), ``IN#(2)`` the photo-eye at the
    robot's stopper (a part is waiting). Output ``OT#(1)`` switches the vacuum.

    Each run of the program is planned from where the robot stands (tens to hundreds of ms of IK
    the first time from a pose; later runs from the same pose reuse the plan). In real time no
    cycle plans: the program is planned in a child process (a ``JobPlanningProcess``, started with
    the first plan and ended by ``close``) while the robot holds its set-point, and a later cycle
    starts it; the episode's first plan is asked for at ``reset``, before its loop starts. In
    lockstep the cycle plans itself: simulated time stands still meanwhile, so outcomes depend on
    the launch file and seed alone.

    Events: ``job_start``, ``job_end``, ``job_failed``, and ``move_slowed`` at the cycle a MOVL/MOVC
    starts that the plan slowed below its V to keep the joints within their limits (each time it runs).
    """

    next_step = 0  # every step

    def __init__(self, index: int, name: str, cell: Cell, job: Job) -> None:
        self.index = index
        self.name = name
        self.cell = cell
        self.job = job
        self.runner: JobRunner | None = None
        self.failed = False
        self.plans: dict[tuple[float, ...], JobPlan] = {}  # lockstep: by start pose, kept across episodes
        self.programs: dict[tuple[float, ...], JobProgram] = {}  # real time: planned in the child, by start pose
        self.planner: JobPlanningProcess | None = None  # real time: started with the first plan
        self._planning: dict[tuple[float, ...], Future[JobProgram]] = {}  # plans asked for, by start pose
        self._start_pose: tuple[float, ...] | None = None  # real time: the held pose the next run starts from

    def __enter__(self) -> JobDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the planning child (if it started); plans not yet started are dropped."""
        planner, self.planner = self.planner, None
        self._planning.clear()
        if planner is not None:
            planner.close()

    def reset(self, ep: Episode) -> None:
        self.runner = None
        self.failed = False
        self._start_pose = None
        if ep.realtime:
            self._program(ep)  # the episode's first plan starts before its loop does

    def cycle(self, ep: Episode, step: int, t: float, measured: np.ndarray) -> None:
        if self.failed:
            return
        robot = self.cell.robots[self.index]
        if self.runner is None:
            try:
                program = self._program(ep) if ep.realtime else None
                if ep.realtime and program is None:
                    return  # the robot holds where it stands until its plan is ready
                runner = JobRunner(self.job, robot.model, ep.control, self.index,
                                   speed_scale=ep.control.effective_speed_scale(self.index),
                                   plan_cache=self.plans)
                if program is not None:
                    runner.start_program(t, program)
                else:
                    runner.start(t)
            except (JobError, ControllerError) as exc:  # cannot run from here, or the planning child died
                self._fail(ep, t, str(exc))
                return
            self.runner = runner
            self._start_pose = None  # the next run starts from where this one ends
            ep.events.emit("job_start", t, ep.index, self.name, job=self.job.name)
        self.runner.set_input(PART_HELD_INPUT, robot.held is not None)
        self.runner.set_input(PART_READY_INPUT, self.cell.part_ready(self.index))
        out = self.runner.tick(t)
        for move in out.slowed:  # a line the plan slowed below its V to keep the joints within their limits
            ep.events.emit("move_slowed", t, ep.index, self.name, **move.event_detail(self.job.name))
        if out.gripper is not None and out.gripper != robot.suction_on:
            self.cell.set_suction(self.index, out.gripper)
        if out.failed is not None:
            self._fail(ep, t, out.failed)
        elif out.done:
            ep.events.emit("job_end", t, ep.index, self.name, job=self.job.name)
            self.runner = None  # the program starts over at the next cycle, from where the robot stands

    def finish(self, ep: Episode, t: float, measured: np.ndarray) -> None:
        return

    def _program(self, ep: Episode) -> JobProgram | None:
        """Real time: the program from the robot's start pose if it is planned, else None (never waits).

        The first call for a run takes the robot's set-point as its start pose, holds the robot
        there and asks the planning child for the plan unless one from that pose is kept.

        Raises:
            JobError: the job cannot run from that pose (naming the line).
            ControllerError: the planning child died.
        """
        key = self._start_pose
        if key is None:
            n = int(self.cell.robots[self.index].model.n_joints)
            q0 = ep.control.setpoint[self.index, :n].copy()
            key = self._start_pose = tuple(np.round(q0, 9).tolist())  # the key JobRunner.start uses
            if key in self.programs:
                return self.programs[key]
            ep.control.hold(self.index)  # the plan starts from this set-point: keep it
            if key not in self._planning:
                if self.planner is None:
                    self.planner = JobPlanningProcess()
                self._planning[key] = self.planner.submit_plan(
                    self.job, self.cell.robots[self.index].model, q0,
                    speed_scale=ep.control.effective_speed_scale(self.index))
            return None
        program = self.programs.get(key)
        if program is not None:
            return program
        future = self._planning[key]
        if not future.done():
            return None
        del self._planning[key]  # a failure is reported once; a later run from this pose asks again
        program = future.result()
        self.programs[key] = program
        return program

    def _fail(self, ep: Episode, t: float, why: str) -> None:
        self.failed = True
        ep.events.emit("job_failed", t, ep.index, self.name, job=self.job.name, reason=why)


class ExternalDriver:
    """A robot driven by ControllerService clients: their set-points reach the loop through the service's
    backend; this driver applies the gripper output they ask for."""

    next_step = 0  # every step

    def __init__(self, index: int, name: str, cell: Cell, gripper_request: Callable[[int], bool | None]) -> None:
        self.index = index
        self.name = name
        self.cell = cell
        self._gripper_request = gripper_request

    def reset(self, ep: Episode) -> None:
        return

    def cycle(self, ep: Episode, step: int, t: float, measured: np.ndarray) -> None:
        wanted = self._gripper_request(self.index)
        if wanted is not None and wanted != self.cell.robots[self.index].suction_on:
            self.cell.set_suction(self.index, wanted)

    def finish(self, ep: Episode, t: float, measured: np.ndarray) -> None:
        return
