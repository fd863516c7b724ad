"""Evaluation throughput: episodes per minute on 1 and on 2 worker processes, in the same run.

Prints one JSON object; ``ratio_2_vs_1`` is the speed-up (target >= 1.8 on 2 cores).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from testbed.eval.parallel import evaluate
from testbed.scenario import load

LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "factory_cell.yaml"
EPISODES = 20


def episodes_per_minute(workers: int) -> float:
    loaded = load(LAUNCH, [f"episodes:={EPISODES}", "policy.serve:=null", "policy.builtin:=expert"])
    with tempfile.TemporaryDirectory() as runs:
        return evaluate(loaded, workers=workers, runs_dir=Path(runs)).metrics["evaluation"]["episodes_per_minute"]


def main() -> None:
    one = episodes_per_minute(1)
    two = episodes_per_minute(2)
    print(json.dumps({"episodes": EPISODES, "episodes_per_minute": {"workers_1": one, "workers_2": two},
                      "ratio_2_vs_1": round(two / one, 3), "targets": {"ratio_2_vs_1_min": 1.8}}))


if __name__ == "__main__":
    main()
