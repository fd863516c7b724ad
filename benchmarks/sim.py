"""Real-time factor of the default cell against the physics floor, in-process and served over gRPC.

Prints one JSON object. Within one run, the expert drives the default cell in-process (``policy.builtin``)
and served from a child process over gRPC (``policy.serve``), ``--episodes`` episodes each, ``--rounds``
times in turn. The machine may be shared: every round is listed, the headline figures are medians, and
``best`` gives the least disturbed round.

- ``sim_rtf``: simulated seconds over wall seconds of the episode loop.
- ``physics_us_per_step``: wall time inside pybullet's ``stepSimulation`` per 240 Hz step, timed around
  every call in those same episodes (the cell always does it; ``metrics.json`` reports it).
- ``physics_rtf_ceiling``: the real-time factor physics alone allows, ``1 / (physics s per step * hz)``.
- ``ratio_rtf_vs_physics_floor``: in-process ``sim_rtf`` over that ceiling, per round (bar >= 0.8): the
  share of the loop's wall time that is physics.
- ``ratio_served_vs_in_process_rtf``: served ``sim_rtf`` over in-process, per round (bar >= 0.9).
- ``cpu``: the same share from thread CPU time (one more in-process run, only the episode loop and
  ``stepSimulation`` timed): what other processes on the machine do barely moves it.
- ``floor_loop``: the floor of any lockstep loop around these episodes. The calls that changed the world in one
  more in-process run (part arrivals, vacuum switches, motor commands, each at its physics step) are replayed
  on a fresh cell of the same launch file with nothing added: per step, the recorded calls, reading the joints,
  ``Cell.step`` (belt + physics) and, at 60 Hz, ``Cell.update_parts`` (suction grip, placement). No policy,
  trajectory, safety monitor or events. ``ratio_rtf_vs_physics_floor`` is its physics share of wall time, the
  most any loop that also reads the joints and commands the motors at every step could reach;
  ``same_world`` says the replay ended every episode with every part where the run left it, bit for bit.
  One recording, replayed ``--rounds`` times: the median round, and every round's ratio.
- ``breakdown_cpu_us_per_step``: thread CPU per physics step of each part of the loop, from one more
  in-process run with a timer around each part (each timer adds ~1 µs to the part it wraps and to the
  whole; work done once per policy step is spread over the physics steps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pybullet as p

import testbed.eval.runner as runner_module
import testbed.sim.cell as cell_module
from testbed.control import ControlLoop
from testbed.eval.drivers import PolicyDriver
from testbed.eval.runner import PART_CHECK_EVERY, run_scenario
from testbed.policies.source import LocalActionSource
from testbed.scenario import load
from testbed.scenario.arrivals import plan_arrivals
from testbed.sim.cell import Cell, build_cell

LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "factory_cell.yaml"
BARS = {"ratio_rtf_vs_physics_floor_min": 0.8, "ratio_served_vs_in_process_rtf_min": 0.9}
FIGURES = ("sim_rtf", "physics_us_per_step", "physics_rtf_ceiling", "loop_us_per_step", "overhead_us_per_step")


def _load(policy: str, episodes: int) -> Any:
    return load(LAUNCH, [f"episodes:={episodes}", "policy.serve:=null", "policy.builtin:=null",
                         f"policy.{policy}:=expert"])


def run_once(policy: str, episodes: int) -> dict[str, Any]:
    """One run of the default cell with the expert ``builtin`` (in-process) or ``serve`` (gRPC child)."""
    loaded = _load(policy, episodes)
    with tempfile.TemporaryDirectory() as runs:
        m = run_scenario(loaded, runs_dir=Path(runs)).metrics
    loop_us = 1e6 / (m["sim_rtf"] * loaded.scenario.sim.physics_hz)
    return {"sim_rtf": m["sim_rtf"], "physics_us_per_step": m["physics_us_per_step"],
            "physics_rtf_ceiling": m["physics_rtf_ceiling"], "loop_us_per_step": round(loop_us, 2),
            "overhead_us_per_step": round(loop_us - m["physics_us_per_step"], 2),
            "success_rate": m["success_rate"], "sim_s": m["sim_s"],
            "outcomes": [(e["success"], e["placed"], e["duration_s"]) for e in m["episode_results"]]}


def _timed(owner: Any, name: str, label: str, acc: Counter[str]) -> Callable[[], None]:
    """Put a thread-CPU timer around ``owner.name``; returns the undo."""
    original = getattr(owner, name)
    clock = time.thread_time

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return original(*args, **kwargs)
        finally:
            acc[label] += clock() - started

    setattr(owner, name, timed)
    return lambda: setattr(owner, name, original)


def _instrumented(episodes: int, parts: list[tuple[Any, str, str]]) -> tuple[dict[str, float], dict[str, Any]]:
    """Thread CPU µs per physics step of each wrapped part, over one in-process run; and its metrics."""
    acc: Counter[str] = Counter()
    undo = [_timed(owner, name, label, acc) for owner, name, label in parts]
    try:
        loaded = _load("builtin", episodes)
        with tempfile.TemporaryDirectory() as runs:
            m = run_scenario(loaded, runs_dir=Path(runs)).metrics
    finally:
        for u in reversed(undo):
            u()
    steps = round(m["sim_s"] * loaded.scenario.sim.physics_hz)
    return {label: s / steps * 1e6 for label, s in acc.items()}, m


def cpu_share(episodes: int) -> dict[str, Any]:
    """The physics share of the in-process loop in thread CPU time (two timers: loop per episode, physics)."""
    us, _ = _instrumented(episodes, [(runner_module, "_run_episode", "loop"),
                                     (cell_module, "_step_simulation", "physics")])
    return {"loop_us_per_step": round(us["loop"], 2), "physics_us_per_step": round(us["physics"], 2),
            "overhead_us_per_step": round(us["loop"] - us["physics"], 2),
            "ratio_physics_of_loop": round(us["physics"] / us["loop"], 3)}


def breakdown(episodes: int) -> dict[str, float]:
    """Thread CPU µs per physics step of each part of the in-process loop, from one instrumented run."""
    us, _ = _instrumented(episodes, [
        (cell_module, "_step_simulation", "physics (stepSimulation)"),
        (Cell, "step", "cell.step (belt + physics)"), (Cell, "read_joint_positions", "read_joint_positions"),
        (Cell, "apply_joint_commands", "apply_joint_commands"), (ControlLoop, "tick", "control tick"),
        (ControlLoop, "submit_chunk", "control submit_chunk (per policy step)"),
        (PolicyDriver, "cycle", "driver cycle (incl. policy)"),
        (PolicyDriver, "observe", "driver observe (per policy step)"),
        (LocalActionSource, "submit", "policy act (in-process expert, per policy step)"),
        (runner_module, "_monitor", "monitor (20 Hz)"), (runner_module, "_part_events", "part events (60 Hz)"),
        (runner_module, "_run_episode", "whole loop")])
    out = {label: round(v, 2) for label, v in us.items()}
    out["belt driving"] = round(out["cell.step (belt + physics)"] - out["physics (stepSimulation)"], 2)
    inner = ("cell.step (belt + physics)", "read_joint_positions", "apply_joint_commands", "control tick",
             "driver cycle (incl. policy)", "monitor (20 Hz)", "part events (60 Hz)")
    out["loop body (rest, incl. the inner timers)"] = round(out["whole loop"] - sum(out[k] for k in inner), 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _part_poses(cell: Cell) -> list[tuple[str, Any]]:
    return [(s.status, p.getBasePositionAndOrientation(s.body, physicsClientId=cell.client))
            for s in cell.parts]


def _recorded_world_calls(episodes: int) -> list[dict[str, Any]]:
    """Per episode of an in-process run: its draw, its physics steps, the calls that changed the world by step
    (``spawn``, ``set_suction``, ``apply_joint_commands``, arguments copied) and where it left every part."""
    recorded: list[dict[str, Any]] = []
    cell_of: list[Cell] = []

    def end_episode() -> None:
        if recorded and "parts" not in recorded[-1]:
            ep = recorded[-1]
            ep["steps"] = cell_of[0].physics_steps - ep["first_step"]
            ep["parts"] = _part_poses(cell_of[0])

    def wrap(name: str) -> Callable[[], None]:
        original = getattr(Cell, name)

        def recording(cell: Cell, *args: Any) -> Any:
            if name == "reset_episode":
                cell_of[:] = [cell]
                end_episode()
                out = original(cell, *args)
                recorded.append({"draw": args[0] if args else None, "first_step": cell.physics_steps, "calls": []})
                return out
            if name == "close":
                end_episode()
            elif recorded:
                copied = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
                recorded[-1]["calls"].append((cell.physics_steps - recorded[-1]["first_step"], name, copied))
            return original(cell, *args)

        setattr(Cell, name, recording)
        return lambda: setattr(Cell, name, original)

    undo = [wrap(n) for n in ("reset_episode", "spawn", "set_suction", "apply_joint_commands", "close")]
    try:
        loaded = _load("builtin", episodes)
        with tempfile.TemporaryDirectory() as runs:
            run_scenario(loaded, runs_dir=Path(runs))
    finally:
        for u in reversed(undo):
            u()
    return recorded


def replay_world_calls(recorded: list[dict[str, Any]]) -> dict[str, Any]:
    """Replay ``_recorded_world_calls``' episodes on a fresh cell: the floor loop's figures and ``same_world``."""
    scenario = _load("builtin", len(recorded)).scenario
    cell = build_cell(scenario.cell, scenario.sim.physics_hz, plan_arrivals(scenario))
    loop_s = physics_s = 0.0
    steps = 0
    same_world = True
    try:
        for ep in recorded:
            cell.reset_episode(ep["draw"])
            calls = ep["calls"]
            by_step: dict[int, list[tuple[str, tuple[Any, ...]]]] = {}
            for step, name, args in calls:
                by_step.setdefault(step, []).append((name, args))
            bound = {name: getattr(cell, name) for name in ("spawn", "set_suction", "apply_joint_commands")}
            read_joints, step_cell, update_parts = cell.read_joint_positions, cell.step, cell.update_parts
            physics_before = cell.physics_s
            started = time.perf_counter()
            for step in range(ep["steps"]):
                due = by_step.get(step)
                if due is not None:
                    for name, args in due:
                        if name == "spawn":  # the runner spawns before it reads the joints
                            bound[name](*args)
                    read_joints()
                    for name, args in due:
                        if name != "spawn":
                            bound[name](*args)
                else:
                    read_joints()
                step_cell()
                if step % PART_CHECK_EVERY == 0:
                    update_parts()
            loop_s += time.perf_counter() - started
            physics_s += cell.physics_s - physics_before
            steps += ep["steps"]
            same_world = same_world and _part_poses(cell) == ep["parts"]
    finally:
        cell.close()
    sim_rtf = steps / scenario.sim.physics_hz / loop_s
    return {"sim_rtf": round(sim_rtf, 3), "physics_us_per_step": round(physics_s / steps * 1e6, 2),
            "loop_us_per_step": round(loop_s / steps * 1e6, 2),
            "overhead_us_per_step": round((loop_s - physics_s) / steps * 1e6, 2),
            # sim_rtf over the ceiling physics allows is the physics share of the loop's wall time
            "ratio_rtf_vs_physics_floor": round(physics_s / loop_s, 3), "same_world": same_world}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=5, help="episodes per run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="in-process and served runs, in turn (default 3)")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the floor loop and the two instrumented runs")
    args = parser.parse_args()
    local: list[dict[str, Any]] = []
    served: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        local.append(run_once("builtin", args.episodes))
        served.append(run_once("serve", args.episodes))
    floor_ratios = [r["sim_rtf"] / r["physics_rtf_ceiling"] for r in local]
    served_ratios = [s["sim_rtf"] / r["sim_rtf"] for r, s in zip(local, served, strict=True)]
    best = max(range(args.rounds), key=lambda i: local[i]["sim_rtf"])
    floor_ratio, served_ratio = statistics.median(floor_ratios), statistics.median(served_ratios)
    result: dict[str, Any] = {
        "episodes": args.episodes, "rounds": args.rounds, "sim_s_per_run": local[0]["sim_s"],
        "in_process": {**{k: round(statistics.median(r[k] for r in local), 3) for k in FIGURES},
                       "success_rate": local[0]["success_rate"]},
        "served_grpc": {**{k: round(statistics.median(r[k] for r in served), 3) for k in FIGURES},
                        "success_rate": served[0]["success_rate"]},
        "ratio_rtf_vs_physics_floor": round(floor_ratio, 3),
        "ratio_served_vs_in_process_rtf": round(served_ratio, 3),
        "best": {"in_process": {k: local[best][k] for k in FIGURES},
                 "ratio_rtf_vs_physics_floor": round(floor_ratios[best], 3)},
        # the same episodes whoever serves the policy: the runs are deterministic
        "same_outcomes_every_run": all(r["outcomes"] == local[0]["outcomes"] for r in local + served),
        "rounds_detail": [{"in_process": {k: r[k] for k in FIGURES[:2]}, "served_grpc": {k: s[k] for k in FIGURES[:2]},
                           "ratio_rtf_vs_physics_floor": round(f, 3), "ratio_served_vs_in_process_rtf": round(v, 3)}
                          for r, s, f, v in zip(local, served, floor_ratios, served_ratios, strict=True)],
        "bars": BARS,
        "bars_met": {"ratio_rtf_vs_physics_floor": floor_ratio >= BARS["ratio_rtf_vs_physics_floor_min"],
                     "ratio_served_vs_in_process_rtf": served_ratio >= BARS["ratio_served_vs_in_process_rtf_min"]},
    }
    if not args.no_breakdown:
        recorded = _recorded_world_calls(args.episodes)  # replayed once per round, as the runs above ran
        floors = sorted((replay_world_calls(recorded) for _ in range(args.rounds)),
                        key=lambda f: f["ratio_rtf_vs_physics_floor"])
        floor = {**floors[len(floors) // 2], "same_world": all(f["same_world"] for f in floors),
                 "rounds": [f["ratio_rtf_vs_physics_floor"] for f in floors]}
        result["floor_loop"] = {**floor, "in_process_ratio_of_floor_loop_ratio": round(
            floor_ratio / floor["ratio_rtf_vs_physics_floor"], 3)}
        result["cpu"] = cpu_share(args.episodes)
        result["breakdown_cpu_us_per_step"] = breakdown(args.episodes)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
