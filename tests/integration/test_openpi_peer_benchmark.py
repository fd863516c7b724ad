"""benchmarks/openpi_peer.py runs end to end and reports its figures (no timing assertions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "openpi_peer.py"


def test_measure_openpi_reports_percentiles_for_both_clients() -> None:
    spec = importlib.util.spec_from_file_location("openpi_peer_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    obs = {"state": np.zeros(7, np.float32), "image": np.zeros((8, 8, 3), np.uint8)}
    figures = module.measure_openpi(obs, 20)
    for key in ("p50_ms", "p99_ms", "testbed_source_p50_ms", "testbed_source_p99_ms"):
        assert figures[key] > 0, key
    assert figures["p50_ms"] <= figures["p99_ms"]
    assert figures["n"] == 20
    assert figures["obs_bytes"] > 7 * 4 + 8 * 8 * 3
