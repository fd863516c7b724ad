"""Run a scenario: episodes of physics and control stepped together, recorded under runs/<run_id>/."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pybullet as p

from testbed.control import ControlLoop
from testbed.control.pacing import Pacer, request_realtime_priority
from testbed.control.tcp_guard import TcpSpeedGuard
from testbed.errors import ScenarioError, TestbedError
from testbed.eval.drivers import Driver, Episode, ExternalDriver, JobDriver, PolicyDriver, Recorder
from testbed.eval.events import EventStream
from testbed.eval.metrics import EpisodeTally, build_metrics
from testbed.eval.ros2_run import RunRos2, check_available, part_poses, start_ros2
from testbed.eval.sites_run import RunSites, effective_scenario
from testbed.eval.sources import check_spec, open_action_source, token_from_env
from testbed.eval.trace import JointTrace
from testbed.policies.protocol import PolicySpec
from testbed.robots import RobotModel
from testbed.scenario.arrivals import plan_arrivals
from testbed.scenario.loader import LoadedScenario
from testbed.scenario.randomize import draw_episode
from testbed.scenario.schema import Scenario
from testbed.scenario.workload import PartArrival
from testbed.sim.cell import Cell, build_cell

PART_CHECK_EVERY = 4  # physics steps between part bookkeeping passes (60 Hz at 240 Hz physics)
MONITOR_HZ = 20.0  # contacts, joint trace and the live snapshot (and camera frames while someone watches)
LIVE_LATENCIES = 32  # latest policy round trips in the snapshot, with their running count
TASK = "sort each arriving part into the bin for its type"

RecorderFactory = Callable[[PolicySpec, RobotModel], Recorder]


@dataclass(frozen=True)
class RunResult:
    """Where a finished run was recorded and what it measured.

    Args:
        run_id: the run's id (its directory name).
        run_dir: ``runs_dir/run_id``.
        metrics: the content of ``metrics.json``.
        tallies: per-episode tallies, cycle times included (for merging runs).
        policy_latency_ms: every policy round trip collected.
    """

    run_id: str
    run_dir: Path
    metrics: dict[str, Any]
    tallies: tuple[EpisodeTally, ...] = ()
    policy_latency_ms: tuple[float, ...] = ()


def new_run_id(name: str) -> str:
    """A unique, sortable run id: scenario name, UTC time, random suffix."""
    return f"{name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def run_scenario(loaded: LoadedScenario, *, runs_dir: Path = Path("runs"),
                 make_recorder: RecorderFactory | None = None, progress: Callable[[str], None] | None = None,
                 events_hook: Callable[[EventStream], None] | None = None,
                 episodes: Sequence[int] | None = None,
                 on_episode: Callable[[EpisodeTally, dict[str, Any]], None] | None = None) -> RunResult:
    """Run every episode of a scenario and record it under ``runs_dir/<run_id>/``.

    Args:
        loaded: a validated launch file.
        runs_dir: parent of the run directory.
        make_recorder: builds, from the policy's spec and the robot model, what receives every policy
            step's observation and action (one policy-driven robot per run); ``record: true`` in the
            launch file uses a LeRobot writer under ``runs/<run_id>/dataset`` when none is given.
        progress: called with one line per finished episode.
        events_hook: called with the live event stream before the first episode (dashboards subscribe here).
        episodes: run only these episode indices (each is determined by the seed and its index alone,
            so a run split across workers gives the same episodes as one run).
        on_episode: called after each episode with its tally and figures {wall_s: the episode loop's wall
            seconds, cpu_s: CPU seconds of this process and its child processes (policy servers) over the
            episode, policy_latency_ms: this episode's policy round trips}.

    Raises:
        SpecMismatch: the policy does not fit the scenario (before any episode runs).
        PolicyUnavailable: the policy cannot be reached at start.
    """
    scenario = effective_scenario(loaded.scenario, loaded.path)
    loaded = dataclasses.replace(loaded, scenario=scenario)
    bad = [i for i in (episodes or ()) if not 0 <= i < scenario.episodes]
    if bad:
        raise ScenarioError(f"{loaded.path}: episodes {bad} are outside 0..{scenario.episodes - 1}")
    sites = RunSites(scenario, loaded.path)
    check_available(scenario)
    run_id, run_dir = create_run_dir(runs_dir, scenario.name)
    events = EventStream(run_dir / "events.jsonl")
    with ExitStack() as stack:
        stack.callback(events.close)
        # pushed first, so it runs last: whatever fails from here on, the stream ends with run_aborted
        stack.push(noting_failure(events))
        (run_dir / "scenario.yaml").write_text(loaded.resolved_yaml(), encoding="utf-8")
        arrivals = plan_arrivals(scenario)
        if events_hook is not None:
            events_hook(events)
        cell = build_cell(scenario.cell, scenario.sim.physics_hz, arrivals)
        stack.callback(cell.close)
        settings = [r.controller for r in scenario.cell.robots]
        control = ControlLoop([r.model for r in cell.robots], cell.dt_s,
                              stream_timeout_s=[c.stream_timeout_s for c in settings],
                              robot_speed_scale=[c.speed_scale for c in settings])
        control.reset(cell.read_joint_positions().copy())  # outside callers see the real pose from the start
        guard = _tcp_speed_guard(scenario, control, [r.model for r in cell.robots])
        service = _serve_controllers(scenario, control, stack)
        drivers = _open_drivers(loaded, cell, stack, service, run_dir / "logs", sites)
        policy_drivers = [d for d in drivers if isinstance(d, PolicyDriver)]
        ros = start_ros2(scenario, cell, events, service[0] if service else None, stack)
        if ros is not None and scenario.ros2.commands == "all":
            drivers = ros.yielding(drivers)
        sites.check(key for d in policy_drivers for key in d.spec.observation)
        sites.start_audit(run_dir, run_id, stack)
        arrivals = [sites.plan.filter_arrivals(a) for a in arrivals]
        if make_recorder is None and scenario.record:
            from testbed.data.card import Provenance
            from testbed.data.record import lerobot_recorder

            make_recorder = lerobot_recorder(run_dir / "dataset", Provenance(
                scenario=str(loaded.path), seed=scenario.seed, generator="testbed launch (record: true)",
                derived_from=f"run {run_id}"))
        recorder = None
        if make_recorder is not None:
            if len(policy_drivers) != 1:
                raise ScenarioError(f"{loaded.path}: record: recording needs exactly one policy-driven robot, "
                                    f"got {len(policy_drivers)}")
            d = policy_drivers[0]
            recorder = make_recorder(d.spec, cell.robots[d.index].model)
            stack.push(_closing_recorder(recorder))
        trace = JointTrace(run_dir / "joint_states.parquet", cell)
        stack.callback(trace.close)  # a failed run keeps the joint trace it gathered
        pacer = None
        if scenario.sim.realtime:
            _raise_priority_for_the_run(stack)
            pacer = Pacer(cell.dt_s)
            # real time: live views get frames at the policy's rate (lockstep, ~35x faster, keeps the wall cap)
            events.frame_max_hz = max([d.spec.control_hz for d in policy_drivers], default=events.frame_max_hz)
        events.emit("run_start", 0.0, None, run_id=run_id, scenario=scenario.name, seed=scenario.seed,
                    episodes=scenario.episodes, robots=[r.name for r in scenario.cell.robots],
                    policy=policy_drivers[0].spec.model_name if policy_drivers else None,
                    controller_service=f"grpc://{service[1].address}" if service and service[1] else None,
                    ros2=_ros2_info(scenario) if ros is not None else None,
                    policy_logs=sorted(str(p.relative_to(run_dir)) for p in (run_dir / "logs").glob("policy-*.log")))
        tallies: list[EpisodeTally] = []
        latencies: list[float] = []
        sim_s = wall_s = 0.0
        indices = range(scenario.episodes) if episodes is None else episodes
        for index in indices:
            ep = Episode(index, cell, control, events, EpisodeTally(episode=index, parts=len(arrivals[index])),
                         realtime=pacer is not None, recorder=recorder, latencies_ms=latencies, sites=sites)
            sites.workload_sent(len(arrivals[index]))
            if on_episode is not None:
                from testbed.eval.cpu import cpu_between, cpu_seconds

                cpu_started, latencies_from = cpu_seconds(), len(latencies)
            started = time.perf_counter()
            _run_episode(ep, scenario, drivers, arrivals[index], trace, pacer,
                         service[0].tick if service else control.tick, guard, ros)
            episode_wall_s = time.perf_counter() - started
            wall_s += episode_wall_s
            if on_episode is not None:
                on_episode(ep.tally, {"wall_s": episode_wall_s, "cpu_s": cpu_between(cpu_started, cpu_seconds()),
                                      "policy_latency_ms": latencies[latencies_from:]})
            sim_s += ep.tally.duration_s
            sites.end_interval(sim_s)
            tallies.append(ep.tally)
            if progress is not None:
                t = ep.tally
                verdict = "success" if t.success else f"failed ({t.end_reason})"
                progress(f"episode {index + 1}/{scenario.episodes}: {verdict}, {t.placed}/{t.parts} parts placed, "
                         f"{t.duration_s:.1f} s simulated")
        metrics = build_metrics(run_id=run_id, scenario=scenario.name, tallies=tallies, policy_latency_ms=latencies,
                                sim_s=sim_s, wall_s=wall_s, control=_control_metrics(cell.dt_s, len(drivers), pacer),
                                physics_s=cell.physics_s, physics_steps=cell.physics_steps,
                                physics_hz=scenario.sim.physics_hz)
        events.emit("run_end", sim_s, None, success_rate=metrics["success_rate"])
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    # every round trip, for latency distributions (metrics.json keeps the percentiles)
    (run_dir / "policy_latency_ms.json").write_text(json.dumps([round(x, 4) for x in latencies]) + "\n",
                                                     encoding="utf-8")
    return RunResult(run_id, run_dir, metrics, tuple(tallies), tuple(latencies))


def _raise_priority_for_the_run(stack: ExitStack) -> None:
    """Ask for real-time scheduling while the run lasts (no effect where the OS refuses; wake-up error shows it)."""
    if not hasattr(os, "sched_getscheduler"):
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    if request_realtime_priority():
        stack.callback(os.sched_setscheduler, 0, policy, param)


def create_run_dir(runs_dir: Path, name: str) -> tuple[str, Path]:
    """Make a fresh ``runs_dir/<run_id>/`` for scenario ``name``; returns the id and the directory.

    Raises:
        ScenarioError: ``runs_dir`` names a file, or the directory cannot be created.
    """
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ScenarioError(f"--runs-dir {runs_dir}: is a file, expected a directory for run records")
    run_id = new_run_id(name)
    run_dir = runs_dir / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise ScenarioError(f"--runs-dir {runs_dir}: cannot create the run directory {run_dir}: "
                            f"{exc.strerror or exc}") from exc
    return run_id, run_dir


def abort_reason(exc_type: type[BaseException], exc: BaseException | None) -> str:
    """One line saying why a run ended early, for ``run_aborted``."""
    if issubclass(exc_type, KeyboardInterrupt):
        return f"interrupted ({str(exc or '') or exc_type.__name__})"
    detail = str(exc) if exc is not None else ""
    return f"{exc_type.__name__}: {detail}" if detail else exc_type.__name__


def noting_failure(events: EventStream) -> Callable[..., bool]:
    """Exit callback: a run that ends by an error says so in its event stream before the stream closes."""

    def note(exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object) -> bool:
        if exc_type is not None:
            events.emit("run_aborted", 0.0, None, reason=abort_reason(exc_type, exc))
        return False

    return note


def _closing_recorder(recorder: Recorder) -> Callable[..., bool]:
    """Exit callback: close the recorder; if the run failed, drop the unfinished episode and keep the ended ones."""

    def close(exc_type: type[BaseException] | None, *_: object) -> bool:
        if exc_type is None:
            recorder.close()
            return False
        recorder.abort_episode()
        with contextlib.suppress(TestbedError):  # e.g. no episode had ended yet: the run's own error matters
            recorder.close()
        return False

    return close


def _tcp_speed_guard(scenario: Scenario, control: ControlLoop, models: list[RobotModel]) -> TcpSpeedGuard | None:
    """The TCP speed limit for robots whose controller settings ask for it: held every tick, monitored at 20 Hz.

    Each robot's limit is the lowest that applies (``monitored_tcp_limit_m_s``), ``inf`` when none does.
    """
    from testbed.control.tcp_limit import monitored_tcp_limit_m_s

    limits = [
        monitored_tcp_limit_m_s(reduced_speed=robot.controller.reduced_speed,
                                reduced_limit_m_s=model.reduced_tcp_speed_m_s,
                                tcp_speed_limit_m_s=robot.controller.tcp_speed_limit_m_s)
        for robot, model in zip(scenario.cell.robots, models, strict=True)
    ]
    if all(math.isinf(x) for x in limits):
        return None
    # forward kinematics costs ~0.15 ms a robot: check at the monitoring rate, not every physics step
    every = max(1, round(1.0 / (MONITOR_HZ * control.dt_s)))
    return TcpSpeedGuard(control, models, limits_m_s=limits, every_n_ticks=every)


def _serve_controllers(scenario: Scenario, control: ControlLoop, stack: ExitStack) -> tuple[Any, Any] | None:
    """The controller backend (for the ControllerService and the ROS 2 node) and the gRPC server, if asked for.

    Returns (backend, server or None), or None when neither the service nor ROS 2 is enabled.
    """
    cfg = scenario.controller_service
    if not cfg.serve and not scenario.ros2.enabled:
        return None
    from testbed.bridge.controller_backend import ControlLoopBackend
    from testbed.bridge.controller_service import start_controller_server

    token = token_from_env("controller_service.token_env", cfg.token_env) if cfg.serve else None
    backend = stack.enter_context(ControlLoopBackend(control, names=[r.name for r in scenario.cell.robots]))
    if not cfg.serve:
        return backend, None
    server = stack.enter_context(start_controller_server(backend, host=cfg.host, port=cfg.port, token=token))
    return backend, server


def _ros2_info(scenario: Scenario) -> dict[str, Any]:
    """Where the run's ROS 2 node is, for ``run_start``."""
    from testbed.ros2.node import NODE_NAMESPACE, node_name

    cfg = scenario.ros2
    domain = cfg.domain_id if cfg.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    return {"node": f"{NODE_NAMESPACE}/{node_name(scenario.name)}", "domain_id": domain, "namespace": cfg.namespace}


def _open_drivers(loaded: LoadedScenario, cell: Cell, stack: ExitStack, service: tuple[Any, Any] | None,
                  log_dir: Path, sites: RunSites) -> list[Driver]:
    scenario = loaded.scenario
    drivers: list[Driver] = []
    for i, robot_cfg in enumerate(scenario.cell.robots):
        n_joints = cell.robots[i].model.n_joints
        if robot_cfg.external:
            assert service is not None  # the schema requires controller_service.serve or ros2.enabled
            drivers.append(ExternalDriver(i, robot_cfg.name, cell, service[0].gripper_request))
            continue
        if i in loaded.jobs:
            # real time: plans in a child process, which ends with the run
            drivers.append(stack.enter_context(JobDriver(i, robot_cfg.name, cell, loaded.jobs[i])))
            continue
        # real time: the policy's traffic crosses an emulated link; lockstep: the link is simulated per request
        relay_link = sites.policy_link() if scenario.sim.realtime else None
        source = open_action_source(scenario.policy, robot_cfg, stack, n_joints=n_joints,
                                    cameras=scenario.cell.cameras, log_dir=log_dir,
                                    link=relay_link, link_seed=(scenario.seed, i))
        spec = source.spec()
        check_spec(spec, robot=robot_cfg, n_joints=n_joints, cameras=scenario.cell.cameras)
        policy = scenario.policy
        drivers.append(PolicyDriver(i, robot_cfg.name, cell, source, spec, policy.deadline_s, policy.reconnect_s,
                                    policy.merge, policy.merge_weight,
                                    link=None if scenario.sim.realtime else sites.simulated_link(i),
                                    request_mode=policy.request_mode))
    return drivers


def _run_episode(ep: Episode, scenario: Scenario, drivers: list[Driver], arrivals: list[PartArrival],
                 trace: JointTrace, pacer: Pacer | None, tick: Callable[[float, np.ndarray], np.ndarray],
                 guard: TcpSpeedGuard | None, ros: RunRos2 | None = None) -> None:
    cell, control, events, tally = ep.cell, ep.control, ep.events, ep.tally
    draw = draw_episode(scenario.randomize, scenario.seed, ep.index)  # from (seed, episode) alone
    cell.reset_episode(draw)
    control.reset(cell.read_joint_positions().copy())
    if guard is not None:
        guard.reset()  # its checks fall on the same ticks whichever episodes ran before
    control.drain_events()
    events.emit("episode_start", 0.0, ep.index, parts=len(arrivals), randomize=draw.summary())
    for d in drivers:
        d.reset(ep)
    if ep.recorder is not None:
        ep.recorder.start_episode(TASK)
    dt = cell.dt_s
    max_steps = round(scenario.sim.max_episode_s / dt)
    monitor_every = max(1, round(1.0 / (MONITOR_HZ * dt)))
    # the ROS 2 node publishes the newest snapshot at its wall-clock rate; in lockstep the monitor's snapshots
    # already come faster than that, in real time they are kept at least that fresh
    state_every = (max(1, round(1.0 / (ros.rate_hz * dt)))
                   if ros is not None and pacer is not None and ros.rate_hz > MONITOR_HZ else 0)
    # parts go to the robots' stations in turn
    pending = [(arrival, i % len(drivers)) for i, arrival in enumerate(arrivals)]
    resolved = 0
    contacts: list[set[str]] = [set() for _ in drivers]
    stopped = False
    step, t = 0, 0.0
    measured = cell.read_joint_positions()
    # the loop below runs at the physics rate: what it calls every step is looked up once
    read_joints, apply_commands, step_cell = cell.read_joint_positions, cell.apply_joint_commands, cell.step
    drain_control_events = control.drain_events
    next_arrival_t = pending[0][0].t_s if pending else math.inf
    n_arrivals = len(arrivals)
    sent_version = -1  # the control loop's setpoint_version last sent to the motors (the first tick is always sent)
    if pacer is not None:
        pacer.start()
    for step in range(max_steps):
        t = step * dt
        if pacer is not None:
            pacer.wait()
        if next_arrival_t <= t + 1e-9:
            while pending and pending[0][0].t_s <= t + 1e-9:
                arrival, station = pending.pop(0)
                if cell.spawn(arrival, station):
                    events.emit("part_arrival", t, ep.index, drivers[station].name, part_type=arrival.part_type,
                                order_id=arrival.order_id)
                else:
                    tally.dropped += 1
                    resolved += 1
                    events.emit("drop", t, ep.index, drivers[station].name, part_type=arrival.part_type,
                                order_id=arrival.order_id, reason="no free part in the pool")
            next_arrival_t = pending[0][0].t_s if pending else math.inf
        measured = read_joints()
        monitor_due = step % monitor_every == 0
        if monitor_due:
            _monitor(ep, drivers, contacts, trace, t, measured, ros is not None)
            if ros is not None:
                ros.drain(events, t, ep.index)
        elif state_every and step % state_every == 0:
            _publish_state(ep, drivers, t, measured, True)
        for d in drivers:
            if step >= d.next_step:  # a driver says when it next has something to do
                d.cycle(ep, step, t, measured)
        if monitor_due and events.frames_wanted:
            _publish_frames(ep, t)  # after the drivers: a camera the policy just rendered is not rendered again
        setpoint = tick(t, measured)
        if guard is not None:
            guard.check()
        if control.setpoint_version != sent_version:  # unchanged set-points: the motors keep what they have
            sent_version = control.setpoint_version
            apply_commands(setpoint, control.setpoint_vel)
        step_cell()
        if step % PART_CHECK_EVERY == 0:
            resolved += _part_events(ep, drivers, t)
        control_events = drain_control_events()
        if control_events:
            for ev in control_events:
                if ev.kind in ("protective_stop", "emergency_stop"):
                    tally.safety_stops += 1
                    stopped = True
                if ev.kind != "state_change":
                    events.emit(ev.kind, ev.t_s, ep.index, drivers[ev.robot].name, **ev.detail)
                    if ep.sites is not None:
                        ep.sites.safety_intervention(ev.t_s, ep.index, drivers[ev.robot].name, ev.kind, ev.detail)
            if stopped:
                tally.end_reason = "protective_stop"
                break
        if resolved >= n_arrivals and not pending:
            tally.end_reason = "all parts handled"
            break
    else:
        tally.end_reason = "max_episode_s reached"
    tally.duration_s = round((step + 1) * dt, 6)
    for d in drivers:
        d.finish(ep, t, measured)
    fraction = tally.placed / tally.parts if tally.parts else 1.0
    tally.success = (fraction >= scenario.success.min_placed_fraction - 1e-9 and not stopped
                     and (scenario.success.allow_drops or tally.dropped == 0) and tally.misplaced == 0)
    if ep.recorder is not None:
        ep.recorder.end_episode({"success": tally.success})
    events.emit("episode_end", tally.duration_s, ep.index, success=tally.success, placed=tally.placed,
                parts=tally.parts, dropped=tally.dropped, reason=tally.end_reason,
                policy_timeouts=tally.policy_timeouts)


def _monitor(ep: Episode, drivers: list[Driver], contacts: list[set[str]], trace: JointTrace, t: float,
             measured: np.ndarray, with_parts: bool = False) -> None:
    """Collisions, the joint trace and the live snapshot, at ``MONITOR_HZ``."""
    for d in drivers:
        touching = ep.cell.robot_contacts(d.index)
        for name in sorted(touching - contacts[d.index]):
            ep.tally.collisions += 1
            ep.events.emit("collision", t, ep.index, d.name, other=name)
        contacts[d.index] = touching
        trace.add(t, ep.index, d.index, measured, ep.control.setpoint)
    if ep.events.state_wanted:  # ~18 µs a snapshot: only for live viewers (they subscribe to the events)
        _publish_state(ep, drivers, t, measured, with_parts)


def _publish_state(ep: Episode, drivers: list[Driver], t: float, measured: np.ndarray, with_parts: bool) -> None:
    """The live snapshot (with the parts' poses when the ROS 2 node shows them)."""
    ep.events.publish_state({
        "t": t, "episode": ep.index,
        "robots": {d.name: {"joint_pos": measured[d.index, : ep.cell.robots[d.index].model.n_joints].tolist(),
                            "setpoint": ep.control.setpoint[d.index, : ep.cell.robots[d.index].model.n_joints]
                            .tolist(),
                            "state": ep.control.state(d.index).name,
                            "suction": ep.cell.robots[d.index].suction_on} for d in drivers},
        "tcp_xyz": {d.name: _tcp_xyz(ep.cell, d.index) for d in drivers},
        "episode_tally": {"parts": ep.tally.parts, "placed": ep.tally.placed, "dropped": ep.tally.dropped,
                          "collisions": ep.tally.collisions, "policy_timeouts": ep.tally.policy_timeouts},
        "policy_latency_ms": {"count": len(ep.latencies_ms), "recent": ep.latencies_ms[-LIVE_LATENCIES:]},
        **({"parts": part_poses(ep.cell)} if with_parts else {}),
    })


def _tcp_xyz(cell: Cell, index: int) -> list[float]:
    """The robot's TCP position in the world frame (m)."""
    robot = cell.robots[index]
    return list(p.getLinkState(robot.body, robot.tcp_link, computeForwardKinematics=True,
                               physicsClientId=cell.client)[4])


def _publish_frames(ep: Episode, t: float) -> None:
    """Render the cell's cameras for live viewers, each no more often than the stream's frame rate allows."""
    for index, camera in enumerate(ep.cell.config.cameras):
        if ep.events.frame_due(camera.name):
            ep.events.publish_frame(camera.name, ep.cell.render(index), t, ep.index)


def _part_events(ep: Episode, drivers: list[Driver], t: float) -> int:
    """Emit what happened to parts; returns how many were resolved (placed or dropped)."""
    resolved = 0
    for ev in ep.cell.update_parts():
        robot_name = drivers[ev.robot].name if ev.robot is not None else None
        ep.events.emit(ev.kind, t, ep.index, robot_name, part_type=ev.part_type, order_id=ev.order_id, **ev.detail)
        if ev.kind == "place":
            resolved += 1
            if ev.detail.get("correct"):
                ep.tally.placed += 1
                ep.tally.cycle_times_s.append(float(ev.detail["cycle_time_s"]))
            else:
                ep.tally.misplaced += 1
        elif ev.kind == "drop":
            resolved += 1
            ep.tally.dropped += 1
    return resolved


def _control_metrics(dt_s: float, robots: int, pacer: Pacer | None) -> dict[str, Any]:
    figures: dict[str, Any] = {"cycle_ms": round(dt_s * 1000, 6), "robots": robots}
    if pacer is None:
        # lockstep: the loop runs as fast as it can on simulated time; there is no wall-clock deadline to miss
        return {**figures, "mode": "lockstep", "jitter_us_p99": None, "missed_cycles": None}
    stats = pacer.stats()
    return {**figures, "mode": "realtime", "jitter_us_p99": round(stats.wake_error_us_p99, 3),
            "jitter_us_p50": round(stats.wake_error_us_p50, 3), "jitter_us_max": round(stats.wake_error_us_max, 3),
            "missed_cycles": stats.missed_cycles, "missed_cycles_pct": round(stats.missed_cycles_pct, 5)}


__all__ = ["Recorder", "RecorderFactory", "RunResult", "create_run_dir", "new_run_id", "noting_failure", "run_scenario"]
