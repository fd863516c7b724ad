"""LeRobot itself loads our datasets and we read LeRobot's (needs `make compat`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPAT_PYTHON = REPO / ".compat-venv" / "bin" / "python"


@pytest.mark.skipif(
    not COMPAT_PYTHON.exists(),
    reason="no .compat-venv with the lerobot package (several GB with torch); build it with `make compat`",
)
def test_lerobot_loads_our_datasets_and_we_read_lerobots(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "compat" / "check.py"), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["lerobot_loads_ours_png"] and summary["lerobot_loads_ours_mp4"]
    assert summary["testbed_reads_lerobot"]
