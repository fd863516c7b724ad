"""A TCP speed limited run: an episode ends the same whichever episodes ran before it in the process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from testbed.eval.runner import run_scenario
from testbed.scenario import load


def _episode(run_dir: Path, index: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Episode ``index``'s joint trace rows and events (without their wall-clock stamps)."""
    rows = [r for r in pq.read_table(run_dir / "joint_states.parquet").to_pylist() if r["episode"] == index]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return rows, [{k: v for k, v in e.items() if k != "wall"} for e in events if e["episode"] == index]


def test_an_episode_after_others_equals_the_episode_alone_under_a_tcp_speed_limit(tmp_path):
    # the guard checks the TCP speed (and narrows the loop's bound) every 12th tick; episodes 0 and 1
    # end on ticks that are not multiples of 12, so a count carried over moved episode 2's checks
    loaded = load("launch/factory_cell.yaml", ["episodes:=3", "policy.serve:=null", "policy.builtin:=expert",
                                               "cell.robots[0].controller.tcp_speed_limit_m_s:=0.5"])
    after = run_scenario(loaded, runs_dir=tmp_path / "after")
    alone = run_scenario(loaded, runs_dir=tmp_path / "alone", episodes=[2])
    assert after.metrics["episode_results"][2] == alone.metrics["episode_results"][0]
    rows_after, events_after = _episode(after.run_dir, 2)
    rows_alone, events_alone = _episode(alone.run_dir, 2)
    assert len(rows_after) > 100 and rows_after == rows_alone  # bit for bit: positions, commands, TCP poses
    assert any(e["kind"] == "place" for e in events_after) and events_after == events_alone
    steps = [round(t.duration_s * 240) for t in after.tallies[:2]]
    assert sum(steps) % 12, f"episodes 0 and 1 took {steps} ticks: the test needs a sum not a multiple of 12"
