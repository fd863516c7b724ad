import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testbed.errors import ResultsError, TestbedError
from testbed.eval.compare import (
    FISHER,
    Z_TEST,
    choose_test,
    compare_rows,
    fisher_exact,
    load_results,
    two_proportion_z_test,
)

TESTBED = Path(sys.executable).parent / "testbed"  # the venv's console script

# the evaluation contract's results schema
SCHEMA = pa.schema([
    ("episode_id", pa.string()), ("variation", pa.string()), ("variation_label", pa.string()),
    ("overrides", pa.string()), ("policy", pa.string()), ("seed", pa.int64()), ("episode", pa.int64()),
    ("success", pa.bool_()), ("end_reason", pa.string()), ("parts", pa.int64()), ("parts_placed", pa.int64()),
    ("parts_misplaced", pa.int64()), ("parts_dropped", pa.int64()), ("cycle_times_s", pa.list_(pa.float64())),
    ("cycle_time_s_mean", pa.float64()), ("sim_s", pa.float64()), ("collisions", pa.int64()),
    ("safety_stops", pa.int64()), ("policy_timeouts", pa.int64()), ("starved_steps", pa.int64()),
    ("late_chunks", pa.int64()), ("policy_latency_ms_p50", pa.float64()), ("policy_latency_ms_p95", pa.float64()),
    ("wall_s", pa.float64()), ("cpu_s", pa.float64()), ("worker", pa.string()),
])


def rows_for(groups):
    """Contract rows: groups maps (variation, label, policy) to (successes, episodes)."""
    rows = []
    for (variation, label, policy), (successes, episodes) in groups.items():
        for e in range(episodes):
            ok = e < successes
            rows.append({
                "episode_id": f"{variation}/{policy}/{e:04d}", "variation": variation, "variation_label": label,
                "overrides": "{}", "policy": policy, "seed": 1, "episode": e, "success": ok,
                "end_reason": "all_parts_done" if ok else "timeout", "parts": 2, "parts_placed": 2 if ok else 0,
                "parts_misplaced": 0, "parts_dropped": 0, "cycle_times_s": [3.0, 3.5] if ok else [],
                "cycle_time_s_mean": 3.25 if ok else None, "sim_s": 20.0, "collisions": 0, "safety_stops": 0,
                "policy_timeouts": 0, "starved_steps": 0, "late_chunks": 0, "policy_latency_ms_p50": None,
                "policy_latency_ms_p95": None, "wall_s": 0.5, "cpu_s": 0.6, "worker": "host:1",
            })
    return rows


def write_run(run_dir, groups, *, parquet=True):
    run_dir.mkdir(parents=True)
    rows = rows_for(groups)
    if parquet:
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), run_dir / "results.parquet")
    else:
        (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


RUN_A = {("v0", "cell.conveyor.speed=0.1", "expert"): (45, 100), ("v1", "cell.conveyor.speed=0.2", "expert"): (9, 10),
         ("v0", "cell.conveyor.speed=0.1", "bc"): (5, 5)}
RUN_B = {("v0", "cell.conveyor.speed=0.1", "expert"): (30, 100), ("v1", "cell.conveyor.speed=0.2", "expert"): (1, 10),
         ("v2", "cell.conveyor.speed=0.3", "expert"): (4, 4)}


def test_fisher_exact_matches_known_p_values():
    # [[8, 2], [1, 5]]: scipy.stats.fisher_exact and R's fisher.test give 0.03496503
    assert fisher_exact(8, 10, 1, 6) == pytest.approx(0.0349650349650, abs=1e-12)
    # Fisher's tea-tasting table [[3, 1], [1, 3]]: 34/70
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(34 / 70, abs=1e-12)
    # 10/10 against 0/10: only the two extreme tables, 2 / C(20, 10)
    assert fisher_exact(10, 10, 0, 10) == pytest.approx(2 / 184756, rel=1e-12)
    assert fisher_exact(0, 10, 0, 10) == 1.0
    assert fisher_exact(3, 4, 1, 4) == fisher_exact(1, 4, 3, 4)


def test_two_proportion_z_test_matches_known_values():
    # 45/100 vs 30/100: R's prop.test(c(45, 30), c(100, 100), correct = FALSE) gives X-squared = 4.8, p = 0.02846
    z, p = two_proportion_z_test(45, 100, 30, 100)
    assert z * z == pytest.approx(4.8, abs=1e-9)
    assert z < 0  # B is lower than A
    assert p == pytest.approx(0.0284597369, abs=1e-9)
    assert two_proportion_z_test(50, 100, 50, 100) == (0.0, 1.0)
    assert two_proportion_z_test(20, 20, 30, 30) == (0.0, 1.0)  # no variance at all


def test_fisher_is_chosen_when_an_expected_count_is_below_five():
    assert choose_test(45, 100, 30, 100) == Z_TEST
    assert choose_test(9, 10, 1, 10) == Z_TEST  # pooled 0.5: 5 expected in every cell
    assert choose_test(10, 10, 8, 10) == FISHER  # 1 expected failure per run
    assert choose_test(5, 100, 3, 100) == FISHER


def test_compare_rows_matches_groups_by_policy_and_label():
    comparison = compare_rows(rows_for(RUN_A), rows_for(RUN_B), alpha=0.05)
    by_key = {(g.policy, g.variation_label): g for g in comparison.groups}
    assert sorted(by_key) == [("expert", "cell.conveyor.speed=0.1"), ("expert", "cell.conveyor.speed=0.2")]
    slow = by_key[("expert", "cell.conveyor.speed=0.1")]
    assert (slow.test, slow.significant) == (Z_TEST, True)
    assert slow.rate_a == 0.45 and slow.rate_b == 0.3 and slow.difference == pytest.approx(-0.15)
    assert slow.ci95_a[0] < 0.45 < slow.ci95_a[1]
    fast = by_key[("expert", "cell.conveyor.speed=0.2")]
    assert fast.test == Z_TEST and fast.p_value < 0.001
    assert comparison.only_in_a == (("bc", "cell.conveyor.speed=0.1"),)
    assert comparison.only_in_b == (("expert", "cell.conveyor.speed=0.3"),)


def test_small_groups_use_fisher_and_a_small_difference_is_not_significant():
    a = rows_for({("v0", "base", "expert"): (9, 10)})
    b = rows_for({("v0", "base", "expert"): (7, 10)})
    (group,) = compare_rows(a, b).groups
    assert group.test == FISHER
    assert group.p_value == pytest.approx(fisher_exact(9, 10, 7, 10))
    assert group.p_value == pytest.approx(0.5820, abs=1e-4)  # R: fisher.test(matrix(c(9, 7, 1, 3), 2))
    assert not group.significant


def test_results_are_read_from_parquet_with_the_contract_schema(tmp_path):
    run = write_run(tmp_path / "a", RUN_A)
    rows = load_results(run)
    assert len(rows) == 115
    assert set(rows[0]) == {"episode_id", "policy", "variation", "variation_label", "success"}


def test_the_journal_is_read_when_the_parquet_is_missing(tmp_path):
    run = write_run(tmp_path / "a", {("v0", "base", "expert"): (2, 3)}, parquet=False)
    journal = run / "results.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    rerun = json.loads(lines[2])
    rerun["success"] = True  # the same episode journaled again: counts once, as its first row (as resume keeps it)
    journal.write_text("".join(lines) + json.dumps(rerun) + "\n" + '{"episode_id": "v0/exp')  # cut short by a kill
    rows = load_results(run)
    assert len(rows) == 3 and sum(r["success"] for r in rows) == 2


def test_a_damaged_journal_line_is_named(tmp_path):
    run = tmp_path / "a"
    run.mkdir()
    (run / "results.jsonl").write_text('{"episode_id": "x"\n{}\n')
    with pytest.raises(TestbedError, match=r"results.jsonl:1: not a JSON row"):
        load_results(run)
    (run / "results.jsonl").write_text('{"episode_id": "v0/x/0000", "policy": "x"}\n')
    with pytest.raises(ResultsError, match=r"episode 'v0/x/0000' lacks field\(s\) variation, variation_label, success"):
        load_results(run)


def test_a_parquet_without_the_contract_columns_is_named(tmp_path):
    run = tmp_path / "a"
    run.mkdir()
    pq.write_table(pa.table({"episode_id": ["v0/x/0000"], "policy": ["x"]}), run / "results.parquet")
    with pytest.raises(ResultsError, match=r"results.parquet: missing column\(s\) variation, variation_label, success"):
        load_results(run)


def test_directory_without_results_is_named(tmp_path):
    with pytest.raises(ResultsError, match=rf"{tmp_path}: no results.parquet or results.jsonl"):
        load_results(tmp_path)
    with pytest.raises(ResultsError, match=r"missing: not a directory"):
        load_results(tmp_path / "missing")


def test_compare_command_reports_each_group_as_json(tmp_path):
    a, b = write_run(tmp_path / "a", RUN_A), write_run(tmp_path / "b", RUN_B, parquet=False)
    done = subprocess.run([str(TESTBED), "compare", str(a), str(b), "--json"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["alpha"] == 0.05
    tests = {(g["policy"], g["variation_label"]): (g["test"], g["significant"]) for g in result["groups"]}
    assert tests == {("expert", "cell.conveyor.speed=0.1"): (Z_TEST, True),
                     ("expert", "cell.conveyor.speed=0.2"): (Z_TEST, True)}
    assert result["only_in_a"] == [{"policy": "bc", "variation_label": "cell.conveyor.speed=0.1"}]
    assert result["only_in_b"] == [{"policy": "expert", "variation_label": "cell.conveyor.speed=0.3"}]


def test_compare_command_prints_a_table_and_a_stricter_alpha_changes_the_verdict(tmp_path):
    a = write_run(tmp_path / "a", {("v0", "base", "expert"): (45, 100)})
    b = write_run(tmp_path / "b", {("v0", "base", "expert"): (30, 100)})
    done = subprocess.run([str(TESTBED), "compare", str(a), str(b), "--alpha", "0.01"], capture_output=True,
                          text=True, timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "two-proportion z-test (pooled)" in done.stdout
    assert "45/100 = 0.450" in done.stdout and "30/100 = 0.300" in done.stdout
    assert "0.02846" in done.stdout and "│ no" in done.stdout  # p = 0.028 is not below 0.01


def test_compare_command_names_a_directory_without_results(tmp_path):
    good = write_run(tmp_path / "a", RUN_A)
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([str(TESTBED), "compare", str(good), str(empty)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {empty}: no results.parquet or results.jsonl (expected the run "
                                   "directory of `testbed eval`, which writes one row per episode there)")
    assert done.stdout == ""


def test_the_orchestration_writes_the_same_schema_as_the_contract():
    from testbed.eval.journal import ROW_SCHEMA

    assert ROW_SCHEMA.equals(SCHEMA)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("episode_id", ["x"], r"results.jsonl:2: episode_id: expected a string such as 'v0/default/0000', got \['x'\]"),
    ("success", "false", r"results.jsonl:2 \(episode 'v0/bc/0001'\): success: expected true or false, got 'false'"),
])
def test_compare_names_a_journal_field_of_the_wrong_type_in_one_line(tmp_path, field, value, message):
    good = write_run(tmp_path / "a", {("v0", "base", "bc"): (2, 3)})
    bad = write_run(tmp_path / "b", {("v0", "base", "bc"): (0, 3)}, parquet=False)
    rows = [json.loads(line) for line in (bad / "results.jsonl").read_text().splitlines()]
    rows[1][field] = value  # "false" would count as a success if read as bool("false")
    (bad / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run([str(TESTBED), "compare", str(good), str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    import re
    assert re.search(message, done.stderr), done.stderr


def test_a_parquet_column_of_the_wrong_type_is_named(tmp_path):
    run = tmp_path / "a"
    run.mkdir()
    rows = [{**r, "success": str(r["success"]).lower()} for r in rows_for({("v0", "base", "bc"): (1, 3)})]
    schema = SCHEMA.set(SCHEMA.get_field_index("success"), pa.field("success", pa.string()))
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), run / "results.parquet")
    with pytest.raises(ResultsError, match=r"results.parquet: column success is string, expected bool"):
        load_results(run)


def test_compare_rows_refuses_a_success_that_is_not_a_bool():
    rows = rows_for({("v0", "base", "bc"): (1, 2)})
    rows[1]["success"] = "false"
    with pytest.raises(ResultsError, match=r"results row 'v0/bc/0001': success: expected true or false, got 'false'"):
        compare_rows(rows, rows_for({("v0", "base", "bc"): (1, 2)}))
