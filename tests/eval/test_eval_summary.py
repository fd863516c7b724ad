"""summary.json of a real `testbed eval` (worker processes, a served expert): what its figures are computed from."""

import json
from pathlib import Path

import numpy as np
import pytest

from testbed.eval.evaluation import Evaluation, Settings, plan_evaluation
from testbed.eval.journal import LATENCIES_KEY, RESULTS_JSONL

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "factory_cell_randomized.yaml"


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short episodes of the randomized cell on one worker process; its run directory."""
    plan = plan_evaluation(LAUNCH, ["workload.random.count:=1", "sim.max_episode_s:=12"], episodes=2)
    result = Evaluation.create(plan, Settings(workers=1), tmp_path_factory.mktemp("runs")).run()
    assert result.complete and result.episodes_run == 2
    return result.run_dir


def test_summary_latency_pools_every_journaled_round_trip(evaluation: Path) -> None:
    journal = [json.loads(line) for line in (evaluation / RESULTS_JSONL).read_text().splitlines()]
    round_trips = [x for row in journal for x in row[LATENCIES_KEY]]
    assert len(journal) == 2 and len(round_trips) > 2
    (group,) = json.loads((evaluation / "summary.json").read_text())["groups"]
    latency = group["policy_latency_ms"]
    assert latency["basis"] == "pooled round trips"
    assert latency["round_trips"] == len(round_trips) and latency["episodes"] == 2
    assert latency["p50"] == pytest.approx(float(np.percentile(round_trips, 50)), abs=1e-6)
    assert latency["p95"] == pytest.approx(float(np.percentile(round_trips, 95)), abs=1e-6)
