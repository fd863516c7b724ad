"""benchmarks/sim.py's floor loop replays the very episodes it measures (no timing assertions)."""

from __future__ import annotations

from benchmark_module import load_benchmark


def test_the_floor_loop_leaves_every_part_where_the_run_left_it_and_misses_nothing() -> None:
    sim = load_benchmark("sim")
    recorded = sim._recorded_world_calls(1)
    kinds = {name for _, name, _ in recorded[0]["calls"]}
    assert kinds == {"spawn", "set_suction", "apply_joint_commands"}
    assert any(status == "placed" for status, _ in recorded[0]["parts"])
    figures = sim.replay_world_calls(recorded)
    assert figures["same_world"] is True
    assert 0.0 < figures["ratio_rtf_vs_physics_floor"] < 1.0
    assert figures["physics_us_per_step"] > 0 and figures["overhead_us_per_step"] > 0

    # the check has teeth: without the vacuum switches no part is carried to its bin
    recorded[0]["calls"] = [c for c in recorded[0]["calls"] if c[1] != "set_suction"]
    assert sim.replay_world_calls(recorded)["same_world"] is False
