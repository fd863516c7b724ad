"""Evaluation throughput: episodes per minute on 1 and 2 local worker processes and on a local Ray instance.

The same evaluation (launch/factory_cell.yaml, the expert in-process, EPISODES episodes) runs through
``testbed.eval.evaluation`` in one run of this script, so the ratio compares like with like. Throughput is
taken from the evaluation's own wall time (worker start-up included, as a user sees it); the summary's CPU
seconds per episode are reported for each, and should agree across worker counts (same work, same
episodes). Prints one JSON object; ``ratio_2_vs_1`` has the bar >= 1.8 (2 cores).

Usage: python benchmarks/eval_scaling.py [--episodes N] [--repeat R] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from testbed.eval.evaluation import Evaluation, Settings, plan_evaluation

LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "factory_cell.yaml"
IN_PROCESS = ["policy.serve:=null", "policy.builtin:=expert"]


def measure(episodes: int, workers: int, ray: str | None = None) -> dict[str, Any]:
    """Run one evaluation; its episodes per minute, wall seconds and CPU seconds per episode."""
    plan = plan_evaluation(LAUNCH, IN_PROCESS, episodes=episodes)
    with tempfile.TemporaryDirectory() as runs:
        evaluation = Evaluation.create(plan, Settings(workers=workers, ray=ray), Path(runs))
        result = evaluation.run()
        assert result.complete and result.summary is not None
        overall = result.summary["overall"]
        busy_s = sum(r["cpu_s"] for r in result.rows)
        return {"episodes_per_minute": round(result.episodes_run / result.wall_s * 60.0, 2),
                "wall_s": round(result.wall_s, 2), "cpu_s_per_episode": overall["cpu_s_per_episode"],
                # cores the episodes actually got: under 2 with 2 workers means other work held a core
                "cores_used": round(busy_s / result.wall_s, 2), "success_rate": overall["success_rate"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=40, help="episodes per evaluation (default 40)")
    parser.add_argument("--repeat", type=int, default=1, help="alternate 1 and 2 workers this many times")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray local figure")
    args = parser.parse_args()
    load_before = os.getloadavg()
    ones, twos = [], []
    for _ in range(args.repeat):  # alternated, so load from other processes on the machine hits both alike
        ones.append(measure(args.episodes, 1))
        twos.append(measure(args.episodes, 2))
    ray = None if args.no_ray else measure(args.episodes, 2, ray="local")
    one = statistics.median(r["episodes_per_minute"] for r in ones)
    two = statistics.median(r["episodes_per_minute"] for r in twos)
    print(json.dumps({
        "launch": "launch/factory_cell.yaml (expert in-process)", "episodes": args.episodes,
        "episodes_per_minute": {"workers_1": one, "workers_2": two,
                                "ray_local_2": ray["episodes_per_minute"] if ray else None},
        "ratio_2_vs_1": round(two / one, 3),
        "ratio_ray_local_2_vs_1": round(ray["episodes_per_minute"] / one, 3) if ray else None,
        "cpu_s_per_episode": {"workers_1": [r["cpu_s_per_episode"] for r in ones],
                              "workers_2": [r["cpu_s_per_episode"] for r in twos],
                              "ray_local_2": ray["cpu_s_per_episode"] if ray else None},
        "runs": {"workers_1": ones, "workers_2": twos, "ray_local_2": ray},
        # other processes on the machine take cores from the workers: a ratio under load says little
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2),
                              "cpus": os.cpu_count()},
        "targets": {"ratio_2_vs_1_min": 1.8, "cpu_s_per_episode_agreement_max": 0.15},
    }, indent=1))


if __name__ == "__main__":
    main()
