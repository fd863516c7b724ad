"""Real-time factor of the default cell: the expert in-process vs served over gRPC, and physics alone.

Prints one JSON object. ``sim_rtf`` is simulated seconds over wall seconds of the episode loop.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pybullet as p

from testbed.eval.plan import plan_arrivals
from testbed.eval.runner import run_scenario
from testbed.scenario import load
from testbed.sim.cell import build_cell

LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "factory_cell.yaml"
EPISODES = 5


def physics_only_us(steps: int = 5000) -> float:
    scenario = load(LAUNCH).scenario
    cell = build_cell(scenario.cell, scenario.sim.physics_hz, plan_arrivals(scenario))
    try:
        cell.reset_episode()
        started = time.perf_counter()
        for _ in range(steps):
            p.stepSimulation(physicsClientId=cell.client)
        return (time.perf_counter() - started) / steps * 1e6
    finally:
        cell.close()


def run_rtf(policy: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as runs:
        loaded = load(LAUNCH, [f"episodes:={EPISODES}", "policy.serve:=null", "policy.builtin:=null",
                               f"policy.{policy}:=expert"])
        metrics = run_scenario(loaded, runs_dir=Path(runs)).metrics
    return {"sim_rtf": metrics["sim_rtf"], "success_rate": metrics["success_rate"], "sim_s": metrics["sim_s"]}


def main() -> None:
    step_us = physics_only_us()
    local = run_rtf("builtin")
    served = run_rtf("serve")
    print(json.dumps({
        "episodes": EPISODES,
        "physics_step_us": round(step_us, 2),
        "physics_only_rtf": round(1e6 / (step_us * 240), 1),
        "in_process": local,
        "served_grpc": served,
        "ratio_served_vs_in_process_rtf": round(served["sim_rtf"] / local["sim_rtf"], 3),
        "targets": {"sim_rtf_min": 20},
    }))


if __name__ == "__main__":
    main()
