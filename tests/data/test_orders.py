"""Production-order logs: import, located row errors, workloads."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.data.card import load_card
from testbed.data.orders import import_orders, load_order_workload, read_orders
from testbed.errors import DatasetError
from testbed.scenario.workload import PART_TYPES

SAMPLE = Path(__file__).resolve().parents[2] / "datasets/kr_electronics_orders"
HEADER = "timestamp,work_order,line,part_id,part_type,length_mm,width_mm,height_mm,weight_g,target_bin,line_speed_m_min"


def _write(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    shutil.copy(SAMPLE / "card.yaml", src / "card.yaml")
    path = src / "orders.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _row(t: str, part_id: str, part_type: str = "capacitor", weight: str = "2.5") -> str:
    return f"{t},WO-1,SMT-2,{part_id},{part_type},12,12,20,{weight},BIN-C1,10"


def test_shipped_log_imports_every_row(tmp_path: Path) -> None:
    report = import_orders(SAMPLE / "orders.csv", tmp_path / "out")
    with (SAMPLE / "orders.csv").open() as fh:
        n_rows = sum(1 for _ in csv.DictReader(fh))
    assert report.errors == ()
    assert report.rows_imported == report.rows_total == n_rows
    assert pq.read_table(tmp_path / "out/orders.parquet").num_rows == n_rows
    assert sum(report.part_type_counts.values()) == n_rows
    assert set(report.part_type_counts) == set(PART_TYPES)


def test_shipped_bad_rows_are_located_and_good_rows_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = import_orders(SAMPLE / "orders_bad_rows.csv", out, card=SAMPLE / "card.yaml")
    lines = report.error_lines()
    assert "orders_bad_rows.csv:7 column weight_g: expected a positive number, got 'abc'" in lines
    assert any(line.startswith("orders_bad_rows.csv:8 column length_mm:") for line in lines)
    assert any(line.startswith("orders_bad_rows.csv:9 column timestamp:") and "UTC offset" in line for line in lines)
    assert any(line.startswith("orders_bad_rows.csv:10 column part_type:") and "resistor" in line for line in lines)
    assert any(line.startswith("orders_bad_rows.csv:11 column part_id:") for line in lines)
    assert any(line.startswith("orders_bad_rows.csv:12 column part_id:") and "duplicate" in line for line in lines)
    assert any(line.startswith("orders_bad_rows.csv:13 column shift:") for line in lines)
    assert any(line.startswith("orders_bad_rows.csv:13 column line_speed_m_min:") for line in lines)
    assert any(line.startswith("orders_bad_rows.csv:14:") and "fields" in line for line in lines)
    assert report.rows_rejected == 8
    assert report.rows_imported == 6
    kept = pq.read_table(out / "orders.parquet").column("row").to_pylist()
    assert kept == [2, 3, 4, 5, 6, 15]
    written = json.loads((out / "import_report.json").read_text())
    assert written["rows_rejected"] == 8 and len(written["errors"]) == len(report.errors)


def test_card_is_copied_with_provenance(tmp_path: Path) -> None:
    report = import_orders(SAMPLE / "orders.csv", tmp_path / "out")
    card = load_card(tmp_path / "out")
    assert card.kind == "orders"
    assert card.provenance.derived_from is not None
    assert report.source_sha256[:16] in card.provenance.derived_from
    assert card.provenance.seed == load_card(SAMPLE).provenance.seed


def test_missing_card_is_an_error_suggesting_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + "\n" + _row("2024-05-13T08:00:00+09:00", "P1") + "\n")
    with pytest.raises(DatasetError, match="--card"):
        import_orders(path, tmp_path / "out")


def test_missing_required_column_names_it(tmp_path: Path) -> None:
    path = _write(tmp_path, ["x"], header=HEADER.replace(",weight_g", ""))
    with pytest.raises(DatasetError, match=r"orders.csv:1: missing required column\(s\) weight_g"):
        import_orders(path, tmp_path / "out")


def test_all_rows_bad_is_an_error_but_report_is_written(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row("2024-05-13T08:00:00+09:00", "P1", weight="abc")])
    with pytest.raises(DatasetError, match="no valid rows"):
        import_orders(path, tmp_path / "out")
    assert (tmp_path / "out/import_report.json").is_file()


def test_cp949_log_needs_its_encoding(tmp_path: Path) -> None:
    path = _write(tmp_path, [])
    text = HEADER + ",비고\n" + _row("2024-05-13T08:00:00+09:00", "P1") + ",야간 재작업\n"
    path.write_bytes(text.encode("cp949"))
    with pytest.raises(DatasetError, match="cp949"):
        import_orders(path, tmp_path / "out")
    report = import_orders(path, tmp_path / "out", encoding="cp949")
    assert report.rows_imported == 1
    assert any("비고" in w and "ignored" in w for w in report.warnings)


def test_aliases_map_to_cell_part_types_and_raw_name_is_kept(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [_row("2024-05-13T08:00:00+09:00", "P1", "MLCC"), _row("2024-05-13T08:00:05+09:00", "P2", "Conn")],
    )
    import_orders(path, tmp_path / "out")
    table = read_orders(tmp_path / "out")
    assert table.column("part_type").to_pylist() == ["capacitor", "connector"]
    assert table.column("part_type_raw").to_pylist() == ["MLCC", "Conn"]


def test_workload_times_are_relative_sorted_and_scaled(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            _row("2024-05-13T08:00:10+09:00", "P2", "module"),
            _row("2024-05-13T08:00:00+09:00", "P1", "capacitor"),
            _row("2024-05-12T23:00:30Z", "P3", "connector"),  # same instant as 08:00:30 KST
        ],
    )
    import_orders(path, tmp_path / "out")
    arrivals = load_order_workload(tmp_path / "out", time_scale=0.5)
    assert [a.t_s for a in arrivals] == [0.0, 5.0, 15.0]
    assert [a.part_type for a in arrivals] == ["capacitor", "module", "connector"]
    assert all(a.order_id == "WO-1" and a.bin is None for a in arrivals)
    assert len(load_order_workload(tmp_path / "out", limit=2)) == 2


@pytest.mark.parametrize(("kwargs", "match"), [({"time_scale": 0.0}, "time_scale"), ({"limit": 0}, "limit")])
def test_workload_rejects_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    import_orders(SAMPLE / "orders.csv", tmp_path / "out")
    with pytest.raises(DatasetError, match=match):
        load_order_workload(tmp_path / "out", **kwargs)


def test_workload_from_missing_dir_says_how_to_import(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="import-orders"):
        load_order_workload(tmp_path)


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=3600.0), min_size=1, max_size=20),
    scale=st.floats(min_value=1e-3, max_value=10.0),
)
def test_workload_is_monotone_and_starts_at_zero(
    tmp_path_factory: pytest.TempPathFactory, gaps: list[float], scale: float
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    start = dt.datetime(2024, 5, 13, 8, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    stamps, t = [], 0.0
    for gap in gaps:
        t += gap
        stamps.append((start + dt.timedelta(seconds=round(t, 3))).isoformat())
    path = _write(tmp, [_row(s, f"P{i}") for i, s in enumerate(stamps)])
    import_orders(path, tmp / "out")
    arrivals = load_order_workload(tmp / "out", time_scale=scale)
    times = [a.t_s for a in arrivals]
    assert times[0] == 0.0
    assert all(b >= a for a, b in itertools.pairwise(times))
    assert times[-1] == pytest.approx((round(t, 3) - round(gaps[0], 3)) * scale, abs=1e-5)
