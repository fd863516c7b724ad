"""Data -> model -> robots: train BC on the shipped demonstrations, serve it over gRPC, run the cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_bc_trained_on_shipped_demos_sorts_parts_over_grpc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.npz"
    assert main(["train", "bc", "--dataset", str(ROOT / "datasets/expert_demos"), "--out", str(model)]) == 0
    runs = tmp_path / "runs"
    code = main(
        [
            "launch", str(ROOT / "launch/factory_cell.yaml"), "--quiet", "--runs-dir", str(runs),
            "episodes:=10", "policy.builtin:=null", f"policy.serve:=bc:{model}",
        ]
    )  # fmt: skip
    assert code == 0
    (run_dir,) = runs.iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["episodes"] == 10
    assert metrics["success_rate"] >= 0.6, capsys.readouterr().out
    run_start = json.loads((run_dir / "events.jsonl").read_text().splitlines()[0])
    assert run_start["policy"] == "bc-knn"  # the served model acted, not the expert
