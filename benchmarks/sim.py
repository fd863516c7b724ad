"""Real-time factor of the default cell against the physics floor, in-process and served over gRPC.

Prints one JSON object. Within one run, the expert drives the default cell in-process (``policy.builtin``)
and served from a child process over gRPC (``policy.serve``), ``--episodes`` episodes each, ``--rounds``
times in turn (the machine is shared: each figure is the median over rounds, every round is listed).

- ``sim_rtf``: simulated seconds over wall seconds of the episode loop.
- ``physics_us_per_step``: wall time inside pybullet's ``stepSimulation`` per 240 Hz step, timed around
  every call in those same episodes (the cell does it always, ``metrics.json`` reports it).
- ``physics_rtf_ceiling``: the real-time factor physics alone allows, ``1 / (physics s per step * hz)``.
- ``ratio_rtf_vs_physics_floor``: in-process ``sim_rtf`` over that ceiling (bar >= 0.8): the share of the
  loop's wall time that is physics.
- ``ratio_served_vs_in_process_rtf``: served ``sim_rtf`` over in-process (bar >= 0.9).
- ``breakdown_us_per_step``: where an in-process step's time goes, from one more run with a timer around
  each part of the loop (the timers cost ~0.2 µs each; amortized over all steps, so the policy's compute,
  done once per policy step, shows as its share per physics step).
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

import testbed.eval.runner as runner_module
from testbed.control import ControlLoop
from testbed.eval.drivers import PolicyDriver
from testbed.eval.runner import run_scenario
from testbed.policies.source import LocalActionSource
from testbed.scenario import load
from testbed.sim.cell import Cell

LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "factory_cell.yaml"
BARS = {"ratio_rtf_vs_physics_floor_min": 0.8, "ratio_served_vs_in_process_rtf_min": 0.9}


def run_once(policy: str, episodes: int) -> dict[str, Any]:
    """One run of the default cell with the expert ``builtin`` (in-process) or ``serve`` (gRPC child)."""
    with tempfile.TemporaryDirectory() as runs:
        loaded = load(LAUNCH, [f"episodes:={episodes}", "policy.serve:=null", "policy.builtin:=null",
                               f"policy.{policy}:=expert"])
        m = run_scenario(loaded, runs_dir=Path(runs)).metrics
    hz = loaded.scenario.sim.physics_hz
    loop_us = 1e6 / (m["sim_rtf"] * hz)
    return {"sim_rtf": m["sim_rtf"], "physics_us_per_step": m["physics_us_per_step"],
            "physics_rtf_ceiling": m["physics_rtf_ceiling"], "loop_us_per_step": round(loop_us, 2),
            "overhead_us_per_step": round(loop_us - m["physics_us_per_step"], 2),
            "success_rate": m["success_rate"], "sim_s": m["sim_s"],
            "outcomes": [(e["success"], e["placed"], e["duration_s"]) for e in m["episode_results"]]}


def _timed(owner: Any, name: str, label: str, acc: Counter[str]) -> Callable[[], None]:
    """Put a perf_counter timer around ``owner.name``; returns the undo."""
    original = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            acc[label] += time.perf_counter() - started

    setattr(owner, name, timed)
    return lambda: setattr(owner, name, original)


def breakdown(episodes: int) -> dict[str, float]:
    """Per-step µs of each part of the in-process loop, from one instrumented run."""
    acc: Counter[str] = Counter()
    parts = [(Cell, "step", "cell.step (belt + physics)"), (Cell, "read_joint_positions", "read_joint_positions"),
             (Cell, "apply_joint_commands", "apply_joint_commands"), (ControlLoop, "tick", "control tick"),
             (ControlLoop, "submit_chunk", "control submit_chunk (per policy step)"),
             (PolicyDriver, "cycle", "driver cycle (incl. policy)"),
             (PolicyDriver, "observe", "driver observe (per policy step)"),
             (runner_module, "_monitor", "monitor (20 Hz)"), (runner_module, "_part_events", "part events (60 Hz)"),
             (runner_module, "_run_episode", "whole loop")]
    undo = [_timed(owner, name, label, acc) for owner, name, label in parts]
    undo.append(_timed(LocalActionSource, "submit", "policy act (in-process expert, per policy step)", acc))
    try:
        with tempfile.TemporaryDirectory() as runs:
            loaded = load(LAUNCH, [f"episodes:={episodes}", "policy.serve:=null", "policy.builtin:=expert"])
            m = run_scenario(loaded, runs_dir=Path(runs)).metrics
    finally:
        for u in reversed(undo):
            u()
    steps = round(m["sim_s"] * loaded.scenario.sim.physics_hz)
    out = {label: round(s / steps * 1e6, 2) for label, s in acc.items()}
    out["physics (stepSimulation)"] = m["physics_us_per_step"]
    out["belt driving"] = round(out["cell.step (belt + physics)"] - m["physics_us_per_step"], 2)
    inner = ("cell.step (belt + physics)", "read_joint_positions", "apply_joint_commands", "control tick",
             "driver cycle (incl. policy)", "monitor (20 Hz)", "part events (60 Hz)")
    out["loop body (rest)"] = round(out["whole loop"] - sum(out[k] for k in inner), 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=5, help="episodes per run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="in-process and served runs, in turn (default 3)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the instrumented breakdown run")
    args = parser.parse_args()
    local: list[dict[str, Any]] = []
    served: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        local.append(run_once("builtin", args.episodes))
        served.append(run_once("serve", args.episodes))
    # the same episodes, whoever serves the policy: the runs are deterministic
    same = all(r["outcomes"] == local[0]["outcomes"] for r in local + served)
    in_process = {k: median(local, k) for k in ("sim_rtf", "physics_us_per_step", "physics_rtf_ceiling",
                                                  "loop_us_per_step", "overhead_us_per_step")}
    served_med = {k: median(served, k) for k in ("sim_rtf", "physics_us_per_step", "physics_rtf_ceiling",
                                                   "loop_us_per_step", "overhead_us_per_step")}
    # per round, both ratios from runs that ran back to back, then the median
    floor_ratio = statistics.median(r["sim_rtf"] / r["physics_rtf_ceiling"] for r in local)
    served_ratio = statistics.median(s["sim_rtf"] / r["sim_rtf"] for r, s in zip(local, served, strict=True))
    result = {
        "episodes": args.episodes, "rounds": args.rounds, "sim_s_per_run": local[0]["sim_s"],
        "in_process": {**in_process, "success_rate": local[0]["success_rate"]},
        "served_grpc": {**served_med, "success_rate": served[0]["success_rate"]},
        "ratio_rtf_vs_physics_floor": round(floor_ratio, 3),
        "ratio_served_vs_in_process_rtf": round(served_ratio, 3),
        "same_outcomes_every_run": same,
        "rounds_detail": {"in_process": [{k: r[k] for k in ("sim_rtf", "physics_us_per_step")} for r in local],
                          "served_grpc": [{k: r[k] for k in ("sim_rtf", "physics_us_per_step")} for r in served]},
        "bars": BARS,
        "bars_met": {"ratio_rtf_vs_physics_floor": floor_ratio >= BARS["ratio_rtf_vs_physics_floor_min"],
                     "ratio_served_vs_in_process_rtf": served_ratio >= BARS["ratio_served_vs_in_process_rtf_min"]},
    }
    if not args.no_breakdown:
        result["breakdown_us_per_step"] = breakdown(args.episodes)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
