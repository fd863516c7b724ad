import csv
import json
import shutil
from datetime import datetime

import pytest

from testbed.errors import DatasetError
from testbed.eval.runner import run_scenario
from testbed.scenario import load
from testbed.scenario.arrivals import plan_arrivals

ORDERS = "datasets/kr_electronics_orders"


def first_rows(n):
    with open(f"{ORDERS}/orders.csv", newline="", encoding="utf-8") as f:
        return [row for _, row in zip(range(n), csv.DictReader(f), strict=False)]


def test_raw_order_log_is_played_in_order_at_scaled_intervals():
    scenario = load("launch/factory_orders.yaml", ["episodes:=2"]).scenario
    plans = plan_arrivals(scenario)
    rows = first_rows(12)
    stamps = [datetime.fromisoformat(r["timestamp"]) for r in rows]
    expected = [(s - stamps[0]).total_seconds() * 0.5 for s in stamps[:6]]
    assert [a.t_s for a in plans[0]] == pytest.approx(expected)
    assert [a.part_type for a in plans[0]] == ["connector"] * 6  # CONN in the log
    second = [(s - stamps[6]).total_seconds() * 0.5 for s in stamps[6:12]]
    assert [a.t_s for a in plans[1]] == pytest.approx(second)  # the next window of the log, re-based


def test_the_cell_sorts_the_parts_of_a_production_log(tmp_path):
    result = run_scenario(load("launch/factory_orders.yaml", ["episodes:=1"]), runs_dir=tmp_path)
    events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    arrivals = [e["order_id"] for e in events if e["kind"] == "part_arrival"]
    assert arrivals == [r["work_order"] for r in first_rows(6)]
    assert result.metrics["parts_placed"] == 6 and result.metrics["success_rate"] == 1.0


def test_raw_log_with_bad_rows_is_refused_with_located_errors(tmp_path):
    shutil.copy(f"{ORDERS}/card.yaml", tmp_path / "card.yaml")
    shutil.copy(f"{ORDERS}/orders_bad_rows.csv", tmp_path / "orders.csv")
    scenario = load("launch/factory_orders.yaml", [f"workload.orders:={tmp_path}"]).scenario
    with pytest.raises(DatasetError, match=r"orders.csv has \d+ bad row\(s\): orders.csv:\d+ column"):
        plan_arrivals(scenario)
