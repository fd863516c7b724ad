"""The issue's headline evaluation, exactly as a user types it: 80 results, the same outcomes on 2 workers,
1 worker and a local Ray instance."""

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from testbed.eval.journal import OUTCOME_COLUMNS

REPO = Path(__file__).resolve().parents[2]
HEADLINE = ["eval", "launch/factory_cell_randomized.yaml", "--episodes", "40", "--sweep", "cell.conveyor.speed=0.1,0.2"]


def evaluate(runs: Path, *flags: str) -> dict[str, tuple]:
    done = subprocess.run([sys.executable, "-m", "testbed.cli", *HEADLINE, *flags, "--runs-dir", str(runs), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    assert len(rows) == len({r["episode_id"] for r in rows})
    return {r["episode_id"]: tuple(r[c] for c in OUTCOME_COLUMNS) for r in rows}


def test_the_headline_sweep_gives_80_results_alike_on_2_workers_1_worker_and_ray(tmp_path):
    two = evaluate(tmp_path / "two", "--workers", "2")
    assert len(two) == 80
    assert sorted({episode_id.split("/")[0] for episode_id in two}) == ["v0", "v1"]
    assert evaluate(tmp_path / "one", "--workers", "1") == two
    assert evaluate(tmp_path / "ray", "--workers", "2", "--ray", "local") == two
