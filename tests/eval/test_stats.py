import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from testbed.errors import ResultsError, TestbedError
from testbed.eval.cost import CostSettings, EnergyMeasurement
from testbed.eval.stats import summarize, wilson_interval
from testbed.eval.table import summary_table


def row(variation="v0", policy="expert", episode=0, *, success=True, placed=2, cycle=(3.0, 4.0), sim_s=30.0,
        wall_s=1.0, cpu_s=1.5, p50=None, p95=None, label=None):
    return {
        "episode_id": f"{variation}/{policy}/{episode:04d}", "variation": variation,
        "variation_label": label or ("base" if variation == "v0" else f"cell.conveyor.speed=0.{variation[1:]}"),
        "overrides": "{}", "policy": policy, "seed": 7, "episode": episode, "success": success, "end_reason": "done",
        "parts": 2, "parts_placed": placed, "parts_misplaced": 0, "parts_dropped": 0, "cycle_times_s": list(cycle),
        "cycle_time_s_mean": sum(cycle) / len(cycle) if cycle else None, "sim_s": sim_s, "collisions": 0,
        "safety_stops": 0, "policy_timeouts": 0, "starved_steps": 0, "late_chunks": 0,
        "policy_latency_ms_p50": p50, "policy_latency_ms_p95": p95, "wall_s": wall_s, "cpu_s": cpu_s,
        "worker": "host:1",
    }


# textbook Wilson score interval, z = 1.96 (the same figures as statsmodels' proportion_confint(method="wilson"))
@pytest.mark.parametrize(("successes", "n", "lo", "hi"), [
    (0, 10, 0.0, 0.2775401688),
    (10, 10, 0.7224598312, 1.0),
    (5, 10, 0.2365895936, 0.7634104064),
    (1, 1, 0.2065432915, 1.0),
    (0, 1, 0.0, 0.7934567085),
    (81, 100, 0.7222, 0.8749),
])
def test_wilson_interval_matches_known_values(successes, n, lo, hi):
    got = wilson_interval(successes, n)
    assert got == pytest.approx((lo, hi), abs=1e-4 if n == 100 else 1e-9)


def test_wilson_interval_refuses_impossible_counts():
    with pytest.raises(ValueError, match="expected n >= 1 trials, got 0"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="expected 0 <= successes <= n = 3, got 4"):
        wilson_interval(4, 3)


@given(n=st.integers(1, 5000), data=st.data())
def test_wilson_interval_holds_the_rate_inside_zero_one(n, data):
    successes = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(successes, n)
    assert 0.0 <= lo <= successes / n <= hi <= 1.0
    assert hi - lo > 0


def test_summary_has_one_group_per_policy_and_variation_in_variation_order():
    rows = [row(f"v{v}", policy, e) for v in (0, 2, 10) for policy in ("expert", "bc") for e in range(3)]
    random.Random(3).shuffle(rows)
    summary = summarize(rows, cost=CostSettings(), wall_s=10.0, workers=2)
    assert [(g["variation"], g["policy"]) for g in summary["groups"]] == [
        ("v0", "bc"), ("v0", "expert"), ("v2", "bc"), ("v2", "expert"), ("v10", "bc"), ("v10", "expert")]
    assert all(g["episodes"] == 3 for g in summary["groups"])
    assert summary["groups"][2]["variation_label"] == "cell.conveyor.speed=0.2"
    overall = summary["overall"]
    assert overall["episodes"] == 18 and overall["workers"] == 2 and overall["wall_s"] == 10.0
    assert overall["episodes_per_minute"] == pytest.approx(108.0)


def test_summary_success_rate_and_interval_per_group():
    rows = [row("v0", "expert", e, success=e < 8) for e in range(10)]
    group = summarize(rows, cost=CostSettings(), wall_s=1.0, workers=1)["groups"][0]
    assert (group["successes"], group["episodes"], group["success_rate"]) == (8, 10, 0.8)
    assert group["success_ci95"] == pytest.approx(list(wilson_interval(8, 10)), abs=1e-6)


def test_cycle_time_pools_every_placed_part_and_parts_per_min_uses_the_simulated_clock():
    rows = [row(episode=0, cycle=(1.0, 2.0, 3.0), placed=3, sim_s=60.0),
            row(episode=1, cycle=(4.0,), placed=1, sim_s=60.0)]
    group = summarize(rows, cost=CostSettings(), wall_s=1.0, workers=1)["groups"][0]
    assert group["cycle_time_s"]["mean"] == pytest.approx(2.5)
    assert group["cycle_time_s"]["p95"] == pytest.approx(3.85)  # linear interpolation over [1, 2, 3, 4]
    assert group["cycle_time_s"]["parts"] == 4
    # 4 parts in 120 simulated seconds, whatever the wall time
    assert group["parts_per_min"] == pytest.approx(2.0)
    assert "simulated minute" in summarize(rows, cost=CostSettings(), wall_s=1.0,
                                           workers=1)["definitions"]["parts_per_min"]


def test_single_failed_episode_with_nothing_placed_and_no_latency():
    rows = [row(success=False, placed=0, cycle=(), p50=None, p95=None)]
    summary = summarize(rows, cost=CostSettings(), wall_s=2.0, workers=1)
    group = summary["groups"][0]
    assert group["success_rate"] == 0.0
    assert group["success_ci95"] == pytest.approx([0.0, 0.7934567085])
    assert group["cycle_time_s"] == {"mean": None, "p95": None, "parts": 0}
    assert group["parts_per_min"] == 0.0
    assert group["policy_latency_ms"] == {"p50": None, "p95": None, "episodes": 0,
                                          "basis": "median of episode percentiles"}
    json.dumps(summary, allow_nan=False)  # valid JSON: nulls, never NaN


def test_latency_is_the_median_of_the_episodes_own_percentiles_and_skips_nulls():
    rows = [row(episode=0, p50=1.0, p95=5.0), row(episode=1, p50=3.0, p95=9.0), row(episode=2, p50=2.0, p95=6.0),
            row(episode=3)]
    latency = summarize(rows, cost=CostSettings(), wall_s=1.0, workers=1)["groups"][0]["policy_latency_ms"]
    assert latency == {"p50": 2.0, "p95": 6.0, "episodes": 3, "basis": "median of episode percentiles"}


def test_latency_pools_every_round_trip_when_rows_carry_the_raw_samples():
    rows = [row(episode=0, p50=1.0, p95=1.0), row(episode=1, p50=2.5, p95=9.55), row(episode=2)]
    rows[0]["policy_latency_ms"] = [1.0]
    rows[1]["policy_latency_ms"] = [2.0, 3.0, 10.0]
    latency = summarize(rows, cost=CostSettings(), wall_s=1.0, workers=1)["groups"][0]["policy_latency_ms"]
    # pooled [1, 2, 3, 10]: the median of episode p50s would say 1.75, the pooled median is 2.5
    assert latency == {"p50": 2.5, "p95": pytest.approx(8.95), "episodes": 2, "basis": "pooled round trips",
                       "round_trips": 4}


def test_declared_energy_and_cost_follow_cpu_seconds():
    rows = [row(episode=0, cpu_s=1.0, wall_s=2.0), row(episode=1, cpu_s=2.6, wall_s=4.0)]
    cost = CostSettings(price_per_core_hour=0.05, currency="EUR", cpu_watts_per_core=12.0)
    summary = summarize(rows, cost=cost, wall_s=3.0, workers=2)
    group = summary["groups"][0]
    assert group["cpu_s_per_episode"] == pytest.approx(1.8)
    assert group["wall_s_per_episode"] == pytest.approx(3.0)
    assert group["energy_j_per_episode"] == pytest.approx(1.8 * 12.0)
    assert group["cost_per_1000_episodes"] == pytest.approx(1.8 * 1000 / 3600 * 0.05, abs=1e-6)
    assert summary["cost"]["method"] == "declared: 12 W per busy core"
    assert summary["cost"]["currency"] == "EUR"
    overall = summary["overall"]
    assert overall["cpu_s_total"] == pytest.approx(3.6) and overall["energy_j_total"] == pytest.approx(43.2)
    # two workers holding a core each for 3 s, for 2 episodes
    assert overall["cost_per_1000_episodes_reserved"] == pytest.approx(3.0 * 2 / 2 * 1000 / 3600 * 0.05, abs=1e-6)


def test_measured_energy_is_shared_by_cpu_seconds():
    rows = [row(episode=0, cpu_s=1.0), row(episode=1, cpu_s=3.0), row("v1", episode=0, cpu_s=4.0)]
    energy = EnergyMeasurement(joules=80.0, wall_s=5.0, note="fake")
    summary = summarize(rows, cost=CostSettings(), wall_s=5.0, workers=1, energy=energy)
    assert summary["cost"]["method"] == "rapl"
    assert summary["cost"]["rapl"]["joules_per_cpu_s"] == pytest.approx(10.0)
    assert [g["energy_j_per_episode"] for g in summary["groups"]] == pytest.approx([20.0, 40.0])
    assert summary["overall"]["energy_j_total"] == pytest.approx(80.0)


def test_energy_measured_on_a_resumed_part_sets_the_rate_for_all_rows():
    rows = [row(episode=0, cpu_s=1.0), row(episode=1, cpu_s=3.0)]
    energy = EnergyMeasurement(joules=30.0, wall_s=5.0, note="fake").covering(["v0/expert/0001"])
    summary = summarize(rows, cost=CostSettings(), wall_s=5.0, workers=1, energy=energy)
    assert summary["cost"]["rapl"]["joules_per_cpu_s"] == pytest.approx(10.0)
    assert summary["groups"][0]["energy_j_per_episode"] == pytest.approx(20.0)


def test_unmeasured_energy_falls_back_to_the_declared_figure_and_says_why():
    energy = EnergyMeasurement(joules=None, wall_s=1.0, note="RAPL not used: no /x/powercap")
    summary = summarize([row(cpu_s=2.0)], cost=CostSettings(), wall_s=1.0, workers=1, energy=energy)
    assert summary["cost"]["method"] == "declared: 10 W per busy core"
    assert summary["cost"]["note"] == "RAPL not used: no /x/powercap"
    assert summary["groups"][0]["energy_j_per_episode"] == pytest.approx(20.0)


def test_null_cpu_seconds_give_null_figures_not_errors():
    summary = summarize([row(cpu_s=None, wall_s=None)], cost=CostSettings(), wall_s=0.0, workers=1)
    group = summary["groups"][0]
    assert group["cpu_s_per_episode"] is None and group["energy_j_per_episode"] is None
    assert group["cost_per_1000_episodes"] is None
    assert summary["overall"]["episodes_per_minute"] is None


def test_an_episode_counted_twice_is_refused():
    with pytest.raises(ResultsError, match=r"episode 'v0/expert/0001' appears twice"):
        summarize([row(episode=1), row(episode=1)], cost=CostSettings(), wall_s=1.0, workers=1)


def test_a_row_without_the_contract_columns_is_refused_by_name():
    bad = row()
    del bad["cpu_s"], bad["sim_s"]
    with pytest.raises(ResultsError, match=r"results row 0 \(v0/expert/0000\): missing column\(s\) sim_s, cpu_s"):
        summarize([bad], cost=CostSettings(), wall_s=1.0, workers=1)
    with pytest.raises(ResultsError, match="no results rows"):
        summarize([], cost=CostSettings(), wall_s=1.0, workers=1)


def test_results_errors_are_of_the_one_error_family():
    # the CLI turns a TestbedError into one line and exit code 2: a bad results file is a user's matter
    assert issubclass(ResultsError, TestbedError) and ResultsError.__module__ == "testbed.errors"
    with pytest.raises(TestbedError, match="no results rows"):
        summarize([], cost=CostSettings(), wall_s=1.0, workers=1)


def test_summary_table_has_a_row_per_group_with_interval_and_cost():
    rows = [row("v0", "expert", e, success=e > 0) for e in range(4)] + [row("v1", "bc", 0, placed=0, cycle=())]
    summary = summarize(rows, cost=CostSettings(), wall_s=4.0, workers=2)
    table = summary_table(summary)
    assert table.row_count == 2
    console = Console(record=True, width=220)
    console.print(table)
    text = console.export_text()
    lo, hi = wilson_interval(3, 4)
    assert "3/4 = 0.750" in text and f"{lo:.3f}–{hi:.3f}" in text
    assert "cell.conveyor.speed=0.1" in text and "–/–" in text  # nothing placed: no cycle time
    assert "USD/1k" in text and "declared: 10 W per busy core" in text
    assert f"{1.5 * 1000 / 3600 * 0.0425:.4f}" in text


def test_a_success_that_is_not_a_bool_is_refused_not_counted():
    with pytest.raises(ResultsError, match=r"results row 1 \(v0/expert/0001\): success: expected true or false, "
                                           r"got 'false'"):
        summarize([row(episode=0), row(episode=1, success="false")], cost=CostSettings(), wall_s=1.0, workers=1)


def test_reserved_cost_uses_the_core_seconds_summed_over_sessions():
    rows = [row(episode=e) for e in range(2)]
    one = summarize(rows, cost=CostSettings(price_per_core_hour=0.05), wall_s=3.0, workers=2)["overall"]
    assert one["reserved_core_s"] == 6.0
    summed = summarize(rows, cost=CostSettings(price_per_core_hour=0.05), wall_s=3.0, workers=2,
                       reserved_core_s=4.0)["overall"]  # e.g. 1 s on 2 workers, then 2 s on 1
    assert summed["reserved_core_s"] == 4.0
    assert summed["cost_per_1000_episodes_reserved"] == pytest.approx(4.0 / 2 * 1000 / 3600 * 0.05, abs=1e-6)
