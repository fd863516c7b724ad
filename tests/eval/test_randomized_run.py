"""Runs of the randomized cell: the expert still sorts, episodes stay reproducible alone, the draw is recorded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from testbed.eval.runner import run_scenario
from testbed.scenario import load
from testbed.scenario.randomize import draw_episode

ROOT = Path(__file__).resolve().parents[2]
RANDOMIZED = ROOT / "launch/factory_cell_randomized.yaml"
EPISODES = 10


def _outcome(tally):
    fields = dataclasses.asdict(tally)
    return {k: fields[k] for k in ("episode", "success", "placed", "parts", "dropped", "misplaced", "collisions",
                                   "duration_s", "cycle_times_s", "end_reason")}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    loaded = load(RANDOMIZED, ["policy.serve:=null", "policy.builtin:=expert", f"episodes:={EPISODES}", "seed:=0"])
    return loaded, run_scenario(loaded, runs_dir=tmp_path_factory.mktemp("runs"))


@pytest.mark.timeout(600)
def test_the_expert_sorts_the_randomized_cell(full_run):
    loaded, result = full_run
    draws = [draw_episode(loaded.scenario.randomize, 0, e) for e in range(EPISODES)]
    assert {d.stopper for d in draws} == {True, False}  # parts caught moving and at rest both count here
    successes = sum(t.success for t in result.tallies)
    assert successes / EPISODES >= 0.9, [_outcome(t) for t in result.tallies]
    moving = [t for t, d in zip(result.tallies, draws, strict=True) if not d.stopper]
    assert sum(t.success for t in moving) >= len(moving) - 1


@pytest.mark.timeout(600)
def test_a_randomized_episode_run_alone_gives_the_same_outcome(full_run, tmp_path):
    loaded, result = full_run
    again = run_scenario(loaded, runs_dir=tmp_path, episodes=[6, 3])
    by_index = {t.episode: _outcome(t) for t in result.tallies}
    assert [_outcome(t) for t in again.tallies] == [by_index[6], by_index[3]]


def test_episode_start_records_the_draw(full_run):
    loaded, result = full_run
    starts = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    starts = [e for e in starts if e["kind"] == "episode_start"]
    assert [e["episode"] for e in starts] == list(range(EPISODES))
    for event in starts:
        expected = draw_episode(loaded.scenario.randomize, 0, event["episode"]).summary()
        assert event["randomize"] == json.loads(json.dumps(expected))
        assert set(event["randomize"]) >= {"stopper", "conveyor_speed_scale", "light", "part_mix"}
