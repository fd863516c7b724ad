"""Does the evaluation tell policies apart? Expert and behaviour cloning on the nominal and the randomized cell.

Records 10 expert episodes of the NON-randomized cell (launch/factory_cell.yaml) as a LeRobot dataset, trains
the nearest-neighbour BC policy on them, then evaluates the expert and BC on unseen seeds of
launch/factory_cell.yaml and launch/factory_cell_randomized.yaml (in-process policies, one process).
Prints one JSON object: per cell and policy, successes out of episodes with a Wilson 95 % interval.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from testbed.eval.record import record_dataset
from testbed.eval.runner import run_scenario
from testbed.eval.stats import wilson_interval
from testbed.policies.bc import train_bc
from testbed.scenario import load

ROOT = Path(__file__).resolve().parents[1]
CELLS = {"nominal": ROOT / "launch/factory_cell.yaml", "randomized": ROOT / "launch/factory_cell_randomized.yaml"}
DEMOS = 10
IN_PROCESS = ("policy.serve:=null",)


def evaluate(launch: Path, policy: str, episodes: int, seed: int, runs: Path) -> dict[str, object]:
    """Run ``episodes`` episodes of ``launch`` from ``seed`` with an in-process policy; its success figures."""
    loaded = load(launch, [*IN_PROCESS, f"policy.builtin:={policy}", f"episodes:={episodes}", f"seed:={seed}"])
    started = time.perf_counter()
    result = run_scenario(loaded, runs_dir=runs)
    successes = sum(1 for t in result.tallies if t.success)
    placed = sum(t.placed for t in result.tallies)
    parts = sum(t.parts for t in result.tallies)
    interval = [round(x, 3) for x in wilson_interval(successes, episodes)]
    return {"successes": successes, "episodes": episodes, "success_rate": round(successes / episodes, 3),
            "wilson_95": interval, "parts_placed": f"{placed}/{parts}",
            "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=30, help="evaluation episodes per cell and policy")
    parser.add_argument("--seed", type=int, default=1000, help="evaluation seed (the demonstrations use seed 0)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        record_dataset(CELLS["nominal"], work / "demos", episodes=DEMOS,
                       overrides=[*IN_PROCESS, "policy.builtin:=expert", "seed:=0"], runs_dir=work / "runs")
        report = train_bc(work / "demos", work / "bc.npz")
        results: dict[str, dict[str, object]] = {}
        for cell, launch in CELLS.items():
            for name, policy in (("expert", "expert"), ("bc", f"bc:{report.model_path}")):
                results.setdefault(cell, {})[name] = evaluate(launch, policy, args.episodes, args.seed, work / "runs")
    expert_r, bc_n, bc_r = (results["randomized"]["expert"]["success_rate"], results["nominal"]["bc"]["success_rate"],
                            results["randomized"]["bc"]["success_rate"])
    bc_nominal_low = results["nominal"]["bc"]["wilson_95"][0]
    bc_randomized_high = results["randomized"]["bc"]["wilson_95"][1]
    print(json.dumps({
        "demonstrations": {"launch": "launch/factory_cell.yaml", "episodes": DEMOS, "seed": 0,
                           "frames": report.frames},
        "evaluation": {"seed": args.seed, "episodes": args.episodes, "policies": "in-process"},
        "results": results,
        "bc_drop": round(float(bc_n) - float(bc_r), 3),  # type: ignore[arg-type]
        "checks": {"expert_randomized_min_0_9": float(expert_r) >= 0.9,  # type: ignore[arg-type]
                   "bc_intervals_do_not_overlap": bc_randomized_high < bc_nominal_low},
    }, indent=2))


if __name__ == "__main__":
    main()
