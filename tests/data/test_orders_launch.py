"""An imported order log drives the conveyor of a real run (`workload: {orders: DIR}`)."""

from __future__ import annotations

import json
from pathlib import Path

import testbed.data as data
from testbed.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_orders_arrive_in_log_order_and_get_sorted(tmp_path: Path) -> None:
    orders = tmp_path / "orders"
    data.import_orders(ROOT / "datasets/kr_electronics_orders/orders.csv", orders)
    expected = data.load_order_workload(orders, limit=3)
    runs = tmp_path / "runs"
    code = main(
        [
            "launch", str(ROOT / "launch/factory_cell.yaml"), "--quiet", "--runs-dir", str(runs),
            "episodes:=1", "workload.random:=null", f"workload.orders:={orders}", "workload.limit:=3",
        ]
    )  # fmt: skip
    assert code == 0
    (run_dir,) = runs.iterdir()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    arrivals = [e for e in events if e["kind"] == "part_arrival"]
    assert [(e["part_type"], e["order_id"]) for e in arrivals] == [(a.part_type, a.order_id) for a in expected]
    assert json.loads((run_dir / "metrics.json").read_text())["parts_placed"] == 3


def test_public_surface_names_resolve() -> None:
    for name in data.__all__:
        assert getattr(data, name) is not None
