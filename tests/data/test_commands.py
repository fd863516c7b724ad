"""`testbed datasets ...` commands, run through the real CLI entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testbed.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "datasets/kr_electronics_orders"


def test_import_orders_then_info_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "orders"
    assert main(["datasets", "import-orders", str(SAMPLE / "orders.csv"), "--out", str(out)]) == 0
    assert "imported 400 of 400 rows" in capsys.readouterr().out
    assert main(["datasets", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "origin: gumi-electronics-plant [KR]" in text
    assert "export not allowed" in text and "personal: operator_id" in text
    assert "orders: 400" in text
    assert main(["datasets", "validate", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")


def test_import_with_bad_rows_reports_them_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "datasets", "import-orders", str(SAMPLE / "orders_bad_rows.csv"),
            "--out", str(tmp_path / "o"), "--card", str(SAMPLE / "card.yaml"),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "orders_bad_rows.csv:7 column weight_g: expected a positive number, got 'abc'" in captured.err
    assert "imported 6 of 14 rows" in captured.out


def test_validate_names_every_problem_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "orders"
    main(["datasets", "import-orders", str(SAMPLE / "orders.csv"), "--out", str(out)])
    capsys.readouterr()
    card = yaml.safe_load((out / "card.yaml").read_text())
    del card["data_classes"]["weight_g"]
    card["terms"]["export_allowed"] = "no idea"
    (out / "card.yaml").write_text(yaml.safe_dump(card))
    (out / "import_report.json").unlink()
    assert main(["datasets", "validate", str(out)]) == 2
    err = capsys.readouterr().err
    assert "import_report.json: missing" in err
    assert "terms.export_allowed" in err
    assert "2 problem(s)" in err


def test_validate_flags_uncovered_card_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "orders"
    main(["datasets", "import-orders", str(SAMPLE / "orders.csv"), "--out", str(out)])
    card = yaml.safe_load((out / "card.yaml").read_text())
    del card["data_classes"]["weight_g"]
    (out / "card.yaml").write_text(yaml.safe_dump(card))
    capsys.readouterr()
    assert main(["datasets", "validate", str(out)]) == 2
    assert "field 'weight_g' of the data has no data class" in capsys.readouterr().err


def test_info_json_counts_part_types(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "orders"
    main(["datasets", "import-orders", str(SAMPLE / "orders.csv"), "--out", str(out)])
    capsys.readouterr()
    assert main(["datasets", "info", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "orders" and sum(summary["part_types"].values()) == summary["orders"] == 400
    assert summary["card"]["origin"]["jurisdiction"] == "KR"


def test_not_a_dataset_is_one_line_error(tmp_path: Path) -> None:
    shutil.copy(SAMPLE / "card.yaml", tmp_path / "card.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "datasets", "info", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "neither an order dataset" in errors[0]
    assert "Traceback" not in proc.stderr


def test_shipped_raw_order_log_validates_and_describes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "validate", str(SAMPLE)]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")
    assert main(["datasets", "info", str(SAMPLE)]) == 0
    text = capsys.readouterr().out
    assert "kind: order_log" in text and "orders: 400" in text and "rejected_rows: 0" in text


def test_raw_order_log_with_bad_rows_names_each_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(SAMPLE / "card.yaml", tmp_path / "card.yaml")
    shutil.copy(SAMPLE / "orders_bad_rows.csv", tmp_path / "orders.csv")
    assert main(["datasets", "validate", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert f"{tmp_path}/orders.csv:7 column weight_g: expected a positive number, got 'abc'" in out
    assert f"{tmp_path}/orders.csv:14: expected 15 fields, got 12" in out


def test_output_into_a_closed_pipe_is_not_a_crash() -> None:
    proc = subprocess.run(
        f"{sys.executable} -m testbed.cli datasets info {SAMPLE} | head -1",
        shell=True, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
