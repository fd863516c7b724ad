"""benchmarks/openpi_peer.py runs end to end and reports its figures (no timing assertions)."""

from __future__ import annotations

import numpy as np
from benchmark_module import load_benchmark


def test_measure_openpi_reports_percentiles_for_both_clients() -> None:
    module = load_benchmark("openpi_peer")
    obs = {"state": np.zeros(7, np.float32), "image": np.zeros((8, 8, 3), np.uint8)}
    figures = module.measure_openpi(obs, 20)
    for key in ("p50_ms", "p99_ms", "testbed_source_p50_ms", "testbed_source_p99_ms"):
        assert figures[key] > 0, key
    assert figures["p50_ms"] <= figures["p99_ms"]
    assert figures["n"] == 20
    assert figures["obs_bytes"] > 7 * 4 + 8 * 8 * 3
