import json

import pytest

from testbed.errors import ScenarioError
from testbed.eval.parallel import evaluate, split_episodes
from testbed.eval.runner import run_scenario
from testbed.scenario import load

LOCAL = ["policy.serve:=null", "policy.builtin:=expert"]


def test_episodes_are_dealt_to_workers_in_turn():
    assert split_episodes(5, 2) == [[0, 2, 4], [1, 3]]
    assert split_episodes(2, 4) == [[0], [1]]


def test_split_evaluation_gives_the_same_episodes_as_one_run(tmp_path):
    loaded = load("launch/factory_cell.yaml", ["episodes:=4", "seed:=2", *LOCAL])
    together = run_scenario(loaded, runs_dir=tmp_path / "one")
    split = evaluate(loaded, workers=2, runs_dir=tmp_path / "two")
    assert split.metrics["episode_results"] == together.metrics["episode_results"]
    for key in ("success_rate", "parts_placed", "cycle_time_s", "collisions", "safety_stops"):
        assert split.metrics[key] == together.metrics[key]
    evaluation = split.metrics["evaluation"]
    assert evaluation["workers"] == 2 and evaluation["episodes_per_minute"] > 0
    for worker_run in evaluation["worker_runs"]:
        assert (split.run_dir / worker_run / "events.jsonl").is_file()
    saved = json.loads((split.run_dir / "metrics.json").read_text())
    assert saved["episodes"] == 4


def test_worker_count_must_be_positive(tmp_path):
    with pytest.raises(ScenarioError, match=r"--workers: expected a positive number of processes, got 0"):
        evaluate(load("launch/factory_cell.yaml", LOCAL), workers=0, runs_dir=tmp_path)


def test_episode_subset_outside_the_scenario_is_refused(tmp_path):
    with pytest.raises(ScenarioError, match=r"episodes \[5\] are outside 0..1"):
        run_scenario(load("launch/factory_cell.yaml", ["episodes:=2", *LOCAL]), runs_dir=tmp_path, episodes=[5])
