"""summary.json of a real `testbed eval` (worker processes, a served expert): what its figures are computed from."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
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


def _sessions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "sessions.jsonl").read_text().splitlines()]


def test_reserved_cost_counts_the_workers_each_session_started(tmp_path: Path) -> None:
    # 2 episodes are 2 batches: --workers 4 starts 2; the resume has 1 episode left, so it starts 1
    plan = plan_evaluation(LAUNCH, ["workload.random.count:=1", "sim.max_episode_s:=12"], episodes=2)
    first = Evaluation.create(plan, Settings(workers=4), tmp_path).run()
    assert first.complete and first.workers == 2
    journal = first.run_dir / RESULTS_JSONL
    journal.write_text(journal.read_text().splitlines(keepends=True)[0])  # as if the session ended after one
    second = Evaluation.open(first.run_dir, workers=4).run()
    assert second.complete and second.episodes_run == 1 and second.workers == 1
    sessions = _sessions(first.run_dir)
    assert [s["workers_used"] for s in sessions] == [2, 1] and [s["workers"] for s in sessions] == [4, 4]
    overall = json.loads((first.run_dir / "summary.json").read_text())["overall"]
    reserved = sessions[0]["wall_s"] * 2 + sessions[1]["wall_s"] * 1
    assert overall["workers"] == 2
    assert overall["reserved_core_s"] == pytest.approx(reserved, abs=1e-6)
    assert overall["cost_per_1000_episodes_reserved"] == pytest.approx(reserved / 2 * 1000 / 3600 * 0.0425, abs=1e-6)
    assert json.loads((first.run_dir / "metrics.json").read_text())["evaluation"]["workers_per_session"] == [2, 1]


def test_a_shared_policy_servers_cpu_is_shared_by_the_episodes_it_served(tmp_path: Path) -> None:
    plan = plan_evaluation(LAUNCH, ["workload.random.count:=1", "sim.max_episode_s:=12"], episodes=2)
    result = Evaluation.create(plan, Settings(workers=1, policy_servers="shared"), tmp_path).run()
    assert result.complete
    (session,) = _sessions(result.run_dir)
    (server,) = session["shared_policy_servers"]
    assert server["serve"]["target"] == "expert" and server["cpu_s"] > 0
    assert sorted(server["episodes"]) == ["v0/default/0000", "v0/default/0001"]
    journaled = {r["episode_id"]: r["cpu_s"] for r in map(json.loads, (result.run_dir / RESULTS_JSONL).open())}
    rows = pq.read_table(result.run_dir / "results.parquet").to_pylist()
    for row in rows:  # the worker's own reading plus half the server's
        assert row["cpu_s"] == pytest.approx(journaled[row["episode_id"]] + server["cpu_s"] / 2, abs=2e-4)
    overall = json.loads((result.run_dir / "summary.json").read_text())["overall"]
    assert overall["cpu_s_total"] == pytest.approx(sum(journaled.values()) + server["cpu_s"], abs=1e-3)
    assert "shared server's CPU seconds" in json.loads((result.run_dir / "summary.json").read_text())[
        "definitions"]["cpu_s_per_episode"]
