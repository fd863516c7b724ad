"""Run a scenario: episodes of physics and control in lockstep, driven by a policy, recorded to runs/<id>/."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from testbed.control import ControlLoop
from testbed.control.pacing import Pacer
from testbed.errors import PolicyUnavailable, ScenarioError, SpecMismatch, TestbedError
from testbed.eval.events import EventStream
from testbed.eval.metrics import EpisodeTally, build_metrics
from testbed.eval.plan import plan_arrivals
from testbed.eval.sources import check_spec, open_action_source
from testbed.eval.trace import JointTrace
from testbed.policies.protocol import ActionKind, PolicySpec
from testbed.policies.source import ActionSource
from testbed.robots import RobotModel
from testbed.scenario.loader import LoadedScenario
from testbed.sim.cell import Cell, build_cell

PART_CHECK_EVERY = 4  # physics steps between part bookkeeping passes (60 Hz at 240 Hz physics)


class Recorder(Protocol):
    """Receives every policy step's observation and executed action (e.g. a LeRobot dataset writer)."""

    def start_episode(self, task: str) -> int: ...
    def add_frame(self, frame: Mapping[str, np.ndarray], timestamp_s: float) -> None: ...
    def end_episode(self, extra: Mapping[str, Any] | None = None) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class RunResult:
    """Where a finished run was recorded and what it measured."""

    run_id: str
    run_dir: Path
    metrics: dict[str, Any]


def new_run_id(name: str) -> str:
    """A unique, sortable run id: scenario name, UTC time, random suffix."""
    return f"{name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


class _RobotDriver:
    """Per-robot glue between an action source, the control loop and the cell."""

    def __init__(self, index: int, cell: Cell, source: ActionSource, spec: PolicySpec, deadline_s: float) -> None:
        self.index = index
        self.deadline_s = deadline_s
        self.cell = cell
        self.source = source
        self.spec = spec
        self.n = cell.robots[index].model.n_joints
        self.name = cell.robots[index].config.name
        self.period_s = 1.0 / spec.control_hz
        self.suction_plan = np.zeros(0, dtype=np.float32)
        self.plan_t0 = 0.0
        self.step = 0
        self.in_flight: tuple[int, dict[str, np.ndarray], float] | None = None
        self.cameras = [(i, f"observation.images.{c.name}") for i, c in enumerate(cell.config.cameras)
                        if f"observation.images.{c.name}" in spec.observation]

    def observe(self, joint_pos: np.ndarray) -> dict[str, np.ndarray]:
        robot = self.cell.robots[self.index]
        state = np.empty(self.n + 1, dtype=np.float32)
        state[: self.n] = joint_pos[self.index, : self.n]
        state[self.n] = 1.0 if robot.suction_on else 0.0
        obs = {"observation.state": state,
               "observation.environment_state": self.cell.environment_state(self.index)}
        for cam_index, key in self.cameras:
            obs[key] = self.cell.render(cam_index)
        return obs

    def suction_at(self, t_s: float) -> bool | None:
        if self.suction_plan.size == 0:
            return None
        row = min(int((t_s - self.plan_t0) / self.period_s + 1e-9), self.suction_plan.size - 1)
        return bool(self.suction_plan[row] > 0.5)


RecorderFactory = Callable[[PolicySpec, RobotModel], Recorder]


def run_scenario(loaded: LoadedScenario, *, runs_dir: Path = Path("runs"),
                 make_recorder: RecorderFactory | None = None, progress: Callable[[str], None] | None = None,
                 events_hook: Callable[[EventStream], None] | None = None) -> RunResult:
    """Run every episode of a scenario and record it under ``runs_dir/<run_id>/``.

    Args:
        loaded: a validated launch file.
        runs_dir: parent of the run directory.
        make_recorder: builds, from the policy's spec and the robot model, what receives every policy
            step's observation and action (one robot per run); ``record: true`` in the launch file uses a
            LeRobot writer under ``runs/<run_id>/dataset`` when none is given.
        progress: called with one line per finished episode.
        events_hook: called with the live event stream before the first episode (dashboards subscribe here).

    Raises:
        SpecMismatch: the policy does not fit the scenario (before any episode runs).
        PolicyUnavailable: the policy cannot be reached at start.
    """
    scenario = loaded.scenario
    run_id = new_run_id(scenario.name)
    run_dir = runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "scenario.yaml").write_text(loaded.resolved_yaml(), encoding="utf-8")
    arrivals = plan_arrivals(scenario)
    events = EventStream(run_dir / "events.jsonl")
    if events_hook is not None:
        events_hook(events)
    with ExitStack() as stack:
        stack.callback(events.close)
        cell = build_cell(scenario.cell, scenario.sim.physics_hz, arrivals)
        stack.callback(cell.close)
        drivers = []
        for i, robot_cfg in enumerate(scenario.cell.robots):
            source = open_action_source(scenario.policy, robot_cfg, stack, n_joints=cell.robots[i].model.n_joints,
                                        cameras=scenario.cell.cameras)
            spec = source.spec()
            check_spec(spec, robot=robot_cfg, n_joints=cell.robots[i].model.n_joints,
                       cameras=scenario.cell.cameras, describe=lambda s=spec: repr(s.model_name))
            drivers.append(_RobotDriver(i, cell, source, spec, scenario.policy.deadline_s))
        if make_recorder is None and scenario.record:
            from testbed.data.record import lerobot_recorder

            make_recorder = lerobot_recorder(run_dir / "dataset")
        recorder = None
        if make_recorder is not None:
            if len(drivers) != 1:
                raise ScenarioError(f"{loaded.path}: record: recording supports one robot per cell, "
                                    f"got {len(drivers)}")
            recorder = make_recorder(drivers[0].spec, cell.robots[0].model)
        robot0 = scenario.cell.robots[0].controller
        control = ControlLoop([r.model for r in cell.robots], cell.dt_s,
                              stream_timeout_s=robot0.stream_timeout_s, speed_scale=robot0.speed_scale)
        trace = JointTrace(run_dir / "joint_states.parquet", cell)
        pacer = Pacer(cell.dt_s) if scenario.sim.realtime else None
        events.emit("run_start", 0.0, None, run_id=run_id, scenario=scenario.name, seed=scenario.seed,
                    episodes=scenario.episodes, robots=[r.name for r in scenario.cell.robots],
                    policy=drivers[0].spec.model_name)
        tallies: list[EpisodeTally] = []
        latencies: list[float] = []
        sim_s = 0.0
        wall_s = 0.0
        for episode in range(scenario.episodes):
            started = time.perf_counter()
            tally = _run_episode(episode, scenario, cell, control, drivers, arrivals[episode], events, trace,
                                 latencies, recorder, pacer)
            wall_s += time.perf_counter() - started
            sim_s += tally.duration_s
            tallies.append(tally)
            if progress is not None:
                verdict = "success" if tally.success else f"failed ({tally.end_reason})"
                progress(f"episode {episode + 1}/{scenario.episodes}: {verdict}, {tally.placed}/{tally.parts} "
                         f"parts placed, {tally.duration_s:.1f} s simulated")
        trace.close()
        metrics = build_metrics(
            run_id=run_id, scenario=scenario.name, tallies=tallies, policy_latency_ms=latencies, sim_s=sim_s,
            wall_s=wall_s, control=_control_metrics(cell.dt_s, len(cell.robots), pacer))
        events.emit("run_end", sim_s, None, success_rate=metrics["success_rate"])
        if recorder is not None:
            recorder.close()
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return RunResult(run_id, run_dir, metrics)


def _snapshot(t: float, episode: int, drivers: list[_RobotDriver], measured: np.ndarray, control: ControlLoop,
              tally: EpisodeTally) -> dict[str, Any]:
    return {
        "t": t, "episode": episode,
        "robots": {d.name: {"joint_pos": measured[d.index, : d.n].tolist(),
                            "setpoint": control.setpoint[d.index, : d.n].tolist(),
                            "state": control.state(d.index).name,
                            "suction": d.cell.robots[d.index].suction_on} for d in drivers},
        "episode_tally": {"parts": tally.parts, "placed": tally.placed, "dropped": tally.dropped,
                          "collisions": tally.collisions, "policy_timeouts": tally.policy_timeouts},
    }


def _control_metrics(dt_s: float, robots: int, pacer: Pacer | None) -> dict[str, Any]:
    figures: dict[str, Any] = {"cycle_ms": round(dt_s * 1000, 6), "robots": robots}
    if pacer is None:
        # lockstep: the loop runs as fast as it can on simulated time; there is no wall-clock deadline to miss
        return {**figures, "mode": "lockstep", "jitter_us_p99": None, "missed_cycles": 0}
    stats = pacer.stats()
    return {**figures, "mode": "realtime", "jitter_us_p99": round(stats.wake_error_us_p99, 3),
            "jitter_us_p50": round(stats.wake_error_us_p50, 3), "jitter_us_max": round(stats.wake_error_us_max, 3),
            "missed_cycles": stats.missed_cycles, "missed_cycles_pct": round(stats.missed_cycles_pct, 5)}


def _run_episode(episode: int, scenario: Any, cell: Cell, control: ControlLoop, drivers: list[_RobotDriver],
                 arrivals: list, events: EventStream, trace: JointTrace, latencies: list[float],
                 recorder: Recorder | None, pacer: Pacer | None) -> EpisodeTally:
    tally = EpisodeTally(episode=episode, parts=len(arrivals))
    cell.reset_episode()
    control.reset(cell.read_joint_positions().copy())
    control.drain_events()
    for d in drivers:
        d.source.reset(episode)
        d.suction_plan = np.zeros(0, dtype=np.float32)
        d.step = 0
        d.in_flight = None
    if recorder is not None:
        recorder.start_episode("sort each arriving part into the bin for its type")
    events.emit("episode_start", 0.0, episode, parts=len(arrivals))
    dt = cell.dt_s
    max_steps = round(scenario.sim.max_episode_s / dt)
    steps_per_policy = [max(1, round(d.period_s / dt)) for d in drivers]
    # parts go to the robots' stations in turn
    pending = [(arrival, i % len(drivers)) for i, arrival in enumerate(arrivals)]
    resolved = 0
    contacts: list[set[str]] = [set() for _ in drivers]
    stopped = False
    step = 0
    t = 0.0
    if pacer is not None:
        pacer.start()
    for step in range(max_steps):
        t = step * dt
        if pacer is not None:
            pacer.wait()
        while pending and pending[0][0].t_s <= t + 1e-9:
            arrival, station = pending.pop(0)
            if cell.spawn(arrival, station):
                events.emit("part_arrival", t, episode, drivers[station].name, part_type=arrival.part_type,
                            order_id=arrival.order_id)
            else:
                tally.dropped += 1
                resolved += 1
                events.emit("drop", t, episode, part_type=arrival.part_type, order_id=arrival.order_id,
                            reason="no free part in the pool")
        measured = cell.read_joint_positions()
        for d, spp in zip(drivers, steps_per_policy, strict=True):
            if pacer is not None and d.in_flight is not None:
                _poll(d, t, episode, measured, control, events, tally, latencies, recorder, timeout_s=0.0)
            if step % spp == 0:
                _policy_step(d, t, episode, measured, control, events, tally, latencies, recorder, trace,
                             realtime=pacer is not None)
                touching = cell.robot_contacts(d.index)
                for name in sorted(touching - contacts[d.index]):
                    tally.collisions += 1
                    events.emit("collision", t, episode, d.name, other=name)
                contacts[d.index] = touching
            suction = d.suction_at(t)
            if suction is not None and suction != cell.robots[d.index].suction_on:
                cell.set_suction(d.index, suction)
        setpoint = control.tick(t, measured)
        cell.apply_joint_commands(setpoint, control.setpoint_vel)
        cell.step()
        if step % PART_CHECK_EVERY == 0:
            for ev in cell.update_parts():
                robot_name = drivers[ev.robot].name if ev.robot is not None else None
                events.emit(ev.kind, t, episode, robot_name, part_type=ev.part_type, order_id=ev.order_id,
                            **ev.detail)
                if ev.kind == "place":
                    resolved += 1
                    if ev.detail.get("correct"):
                        tally.placed += 1
                        tally.cycle_times_s.append(float(ev.detail["cycle_time_s"]))
                    else:
                        tally.misplaced += 1
                elif ev.kind == "drop":
                    resolved += 1
                    tally.dropped += 1
        if step % steps_per_policy[0] == 0:
            events.publish_state(_snapshot(t, episode, drivers, measured, control, tally))
        for ev in control.drain_events():
            name = drivers[ev.robot].name
            if ev.kind in ("protective_stop", "emergency_stop"):
                tally.safety_stops += 1
                stopped = True
            if ev.kind != "state_change":
                events.emit(ev.kind, ev.t_s, episode, name, **ev.detail)
        if stopped:
            tally.end_reason = "protective_stop"
            break
        if not pending and resolved >= len(arrivals):
            tally.end_reason = "all parts handled"
            break
    else:
        tally.end_reason = "max_episode_s reached"
    tally.duration_s = round((step + 1) * dt, 6)
    for d in drivers:
        if d.in_flight is not None and pacer is None:
            # the last observation's answer completes its recorded frame; it is never executed
            _poll(d, t, episode, measured, control, events, tally, latencies, recorder, timeout_s=d.deadline_s)
    fraction = tally.placed / tally.parts if tally.parts else 1.0
    tally.success = (fraction >= scenario.success.min_placed_fraction - 1e-9 and not stopped
                     and (scenario.success.allow_drops or tally.dropped == 0) and tally.misplaced == 0)
    if recorder is not None:
        recorder.end_episode({"success": tally.success})
    events.emit("episode_end", tally.duration_s, episode, success=tally.success, placed=tally.placed,
                parts=tally.parts, dropped=tally.dropped, reason=tally.end_reason,
                policy_timeouts=tally.policy_timeouts)
    return tally


def _policy_step(d: _RobotDriver, t: float, episode: int, measured: np.ndarray, control: ControlLoop,
                 events: EventStream, tally: EpisodeTally, latencies: list[float], recorder: Recorder | None,
                 trace: JointTrace, *, realtime: bool) -> None:
    """Collect the chunk asked for one policy step ago, then ask for the next one.

    Lockstep: the request for step k overlaps the physics of step k -> k+1 and its
    chunk is applied from step k+1 on, waiting for it at most the deadline: a fixed
    one-step pipeline, so the round trip does not stall the loop and the run stays
    deterministic whatever the network does. Real time: nothing waits; chunks are
    applied whenever they arrive (``_poll`` every cycle), aligned by the step they
    were computed for.
    """
    if d.in_flight is not None and not realtime:
        _poll(d, t, episode, measured, control, events, tally, latencies, recorder, timeout_s=d.deadline_s)
    trace.add(t, episode, d.index, measured, control.setpoint)
    obs = d.observe(measured)
    try:
        d.source.submit(obs, d.step)
    except (PolicyUnavailable, SpecMismatch) as exc:
        tally.policy_timeouts += 1
        events.emit("policy_timeout", t, episode, d.name, reason=str(exc), step=d.step)
    else:
        asked_at = d.in_flight[2] if d.in_flight is not None else time.perf_counter()
        d.in_flight = (d.step, obs, asked_at)
    d.step += 1


def _poll(d: _RobotDriver, t: float, episode: int, measured: np.ndarray, control: ControlLoop,
          events: EventStream, tally: EpisodeTally, latencies: list[float], recorder: Recorder | None,
          *, timeout_s: float) -> None:
    """Apply the chunk that arrived for the request in flight, if any; a request past its deadline times out."""
    assert d.in_flight is not None
    asked_step, asked_obs, asked_at = d.in_flight
    try:
        chunk = d.source.result(timeout_s)
    except (PolicyUnavailable, SpecMismatch) as exc:
        chunk, reason = None, str(exc)
    else:
        reason = f"no answer within {d.deadline_s} s"
        if chunk is None and time.perf_counter() - asked_at < d.deadline_s:
            return  # still in time (real-time polling)
    if chunk is None:
        d.in_flight = None
        tally.policy_timeouts += 1
        events.emit("policy_timeout", t, episode, d.name, reason=reason, step=asked_step)
        return
    if chunk.step >= asked_step:
        d.in_flight = None
    if chunk.step == asked_step:
        # the source's own round-trip figure: the wall time until collection includes the overlapped physics
        latencies.append(chunk.latency_ms)
        if recorder is not None:
            recorder.add_frame({**asked_obs, "action": chunk.actions[0].astype(np.float32)},
                               asked_step * d.period_s)
    # row k of a chunk computed for step s applies at step s + k; rows already past are skipped
    skip = d.step - chunk.step
    if skip >= chunk.actions.shape[0]:
        return
    actions = chunk.actions[skip:]
    joints = actions[:, : d.n].astype(np.float64)
    if d.spec.action_kind is ActionKind.JOINT_DELTAS:
        joints = joints + measured[d.index, : d.n]
    control.submit_chunk(d.index, joints, t, d.period_s)
    d.suction_plan = actions[:, d.n].copy()
    d.plan_t0 = t


__all__ = ["Recorder", "RunResult", "TestbedError", "new_run_id", "run_scenario"]
