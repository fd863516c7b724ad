"""The evaluation journal: durable rows, torn tails ignored and cut, one row per episode, parquet by the contract."""

import json

import pyarrow.parquet as pq
import pytest

from testbed.errors import ResultsError
from testbed.eval.journal import (
    COLUMNS,
    LATENCIES_KEY,
    ROW_SCHEMA,
    Journal,
    read_journal,
    result_rows,
    write_parquet,
)


def row(episode_id: str, **extra) -> dict:
    variation, policy, episode = episode_id.split("/")
    base = {c: None for c in COLUMNS}
    base.update(episode_id=episode_id, variation=variation, variation_label="base", overrides="{}", policy=policy,
                seed=0, episode=int(episode), success=True, end_reason="all parts handled", parts=3, parts_placed=3,
                parts_misplaced=0, parts_dropped=0, cycle_times_s=[2.5, 2.75], cycle_time_s_mean=2.625, sim_s=20.0,
                collisions=0, safety_stops=0, policy_timeouts=0, starved_steps=0, late_chunks=0, wall_s=0.5,
                cpu_s=0.6, worker="h:1")
    base.update(extra)
    return base


def test_a_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path):
    path = tmp_path / "results.jsonl"
    with Journal(path) as journal:
        journal.append(row("v0/default/0000"))
    with path.open("a") as f:
        f.write('{"episode_id": "v0/default/00')
    assert [r["episode_id"] for r in read_journal(path)] == ["v0/default/0000"]
    with Journal(path) as journal:
        journal.append(row("v0/default/0001"))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["episode_id"] for line in lines] == ["v0/default/0000", "v0/default/0001"]


def test_an_episode_journaled_twice_counts_once(tmp_path):
    path = tmp_path / "results.jsonl"
    with Journal(path) as journal:
        journal.append(row("v0/default/0000", success=False))
        journal.append(row("v0/default/0000", success=True))
    (only,) = read_journal(path)
    assert only["success"] is False  # the first finished run of an episode is the one kept


def test_a_broken_line_before_the_last_is_an_error(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('not json\n{"episode_id": "v0/default/0000"}\n')
    with pytest.raises(ResultsError, match=r"results.jsonl:1: not a JSON row"):
        read_journal(path)


def test_parquet_has_the_contract_schema_sorted_by_episode_id(tmp_path):
    rows = [row("v1/default/0000"), row("v0/default/0001", policy_latency_ms=[1.0]),
            row("v0/default/0000", cycle_times_s=[], cycle_time_s_mean=None)]
    write_parquet(rows, tmp_path / "results.parquet")
    table = pq.read_table(tmp_path / "results.parquet")
    assert table.schema.equals(ROW_SCHEMA)
    assert table.column("episode_id").to_pylist() == ["v0/default/0000", "v0/default/0001", "v1/default/0000"]
    assert table.to_pylist()[0]["cycle_time_s_mean"] is None
    assert result_rows(rows)[1].keys() == set(COLUMNS)  # the journal's raw latencies stay out of the results


def test_a_torn_last_line_ending_in_a_newline_is_cut_so_every_later_append_stays_readable(tmp_path):
    path = tmp_path / "results.jsonl"
    with Journal(path) as journal:
        journal.append(row("v0/default/0000"))
        journal.append(row("v0/default/0001"))
    with path.open("a") as f:
        f.write('{"episode_id": "v0/default/0002", "succ\n')  # killed mid-row; the bytes ended in a newline
    assert [r["episode_id"] for r in read_journal(path)] == ["v0/default/0000", "v0/default/0001"]
    for episode in ("0002", "0003"):  # two resumes, each opening the journal and appending after it
        with Journal(path) as journal:
            journal.append(row(f"v0/default/{episode}"))
        ids = [r["episode_id"] for r in read_journal(path)]
    assert ids == ["v0/default/0000", "v0/default/0001", "v0/default/0002", "v0/default/0003"]
    lines = path.read_text().splitlines()
    assert [json.loads(line)["episode_id"] for line in lines] == ids  # the torn row is gone, none is twice


@pytest.mark.parametrize(("field", "value", "message"), [
    ("episode_id", ["x"], r"results.jsonl:2: episode_id: expected a string such as 'v0/default/0000', got \['x'\]"),
    ("success", "false", r"results.jsonl:2 \(episode 'v0/default/0001'\): success: expected true or false, "
                         r"got 'false'"),
    ("parts_placed", "3", r"results.jsonl:2 \(episode 'v0/default/0001'\): parts_placed: expected an integer, "
                          r"got '3'"),
    ("sim_s", None, r"sim_s: expected a number, got None"),
    ("cpu_s", "0.6", r"cpu_s: expected a number or null, got '0.6'"),
    ("cycle_times_s", [1.0, "2"], r"cycle_times_s: expected a list of numbers, got \[1.0, '2'\]"),
    ("policy", 7, r"policy: expected a string, got 7"),
    (LATENCIES_KEY, "1.0", r"policy_latency_ms: expected a list of numbers or null, got '1.0'"),
])
def test_a_journal_field_of_the_wrong_type_is_named_with_its_line(tmp_path, field, value, message):
    path = tmp_path / "results.jsonl"
    with Journal(path) as journal:
        journal.append(row("v0/default/0000"))
        bad = row("v0/default/0001")
        bad[field] = value
        journal.append(bad)
        journal.append(row("v0/default/0002"))
    with pytest.raises(ResultsError, match=message):
        read_journal(path)


def test_null_is_accepted_where_the_workers_write_it(tmp_path):
    path = tmp_path / "results.jsonl"
    with Journal(path) as journal:
        journal.append(row("v0/default/0000", cycle_times_s=[], cycle_time_s_mean=None, policy_latency_ms_p50=None,
                           policy_latency_ms_p95=None, cpu_s=None, **{LATENCIES_KEY: []}))
    assert read_journal(path)[0]["cpu_s"] is None
