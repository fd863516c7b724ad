"""LeRobot itself loads our datasets and we read LeRobot's, in LeRobot's cached environment.

The environment (~8 GB with torch) is found at ``compat/envcache.py``'s path, or built there
by the same builder ``make compat-env`` runs; a failed build fails this test, never skips it.
The builder itself (``testbed.venv_cache``) is tested in tests/integration/test_openpi_env.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.venv_cache import VenvBuildError, cached_venv

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "compat" / "lerobot-requirements.txt"  # as compat/envcache.py and `make compat-env`


@pytest.mark.timeout(3600 + 900)  # a cold build of the environment, then the check itself
def test_lerobot_loads_our_datasets_and_we_read_lerobots(tmp_path: Path) -> None:
    try:
        python = cached_venv("lerobot", REQUIREMENTS, pip_args=(), timeout_s=3600)
    except VenvBuildError as exc:
        pytest.fail(f"LeRobot's environment could not be built (`make compat-env` builds it alone): {exc}")
    done = subprocess.run(
        [sys.executable, str(REPO / "compat" / "check.py"), "--venv", str(python.parent.parent),
         "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["lerobot_loads_ours_png"] and summary["lerobot_loads_ours_mp4"]
    assert summary["testbed_reads_lerobot"]
    pins = dict(line.split("==") for line in REQUIREMENTS.read_text().split()
                if "==" in line)
    lerobot_version, torch_version = summary["lerobot_torch"].split()
    assert (lerobot_version, torch_version.split("+")[0]) == (pins["lerobot"], pins["torch"])  # +cu128: a build tag
