"""A real ``testbed dashboard`` process for integration and browser tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-dashboard-token"
ANNOUNCED = re.compile(r"dashboard on (http://127\.0\.0\.1:\d+)/")


@dataclass
class RunningDashboard:
    url: str
    runs_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        """(status, parsed JSON body) of one API call."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=180) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def start_run(self, *overrides: str, launch: str = "factory_cell.yaml") -> str:
        status, body = self.request("POST", "/api/runs", {"launch": launch, "overrides": list(overrides)}, TOKEN)
        assert status == 202, body
        return body["run_id"]

    def wait_until_ended(self, run_id: str, timeout_s: float = 120) -> list[dict[str, Any]]:
        """The run's events once it has written run_end or run_aborted."""
        path = self.runs_dir / run_id / "events.jsonl"
        give_up = time.monotonic() + timeout_s
        while time.monotonic() < give_up:
            events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if events and events[-1]["kind"] in ("run_end", "run_aborted"):
                return events
            time.sleep(0.2)
        raise AssertionError(f"{run_id} did not end within {timeout_s} s")


@contextlib.contextmanager
def running_dashboard(runs_dir: Path, token: str | None = TOKEN) -> Iterator[RunningDashboard]:
    """``testbed dashboard --port 0`` on ``runs_dir``, stopped (SIGTERM) and waited for afterwards."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    log = runs_dir.parent / f"dashboard-{os.getpid()}-{time.monotonic_ns()}.log"
    env = {k: v for k, v in os.environ.items() if k != "TESTBED_DASHBOARD_TOKEN"}
    if token:
        env["TESTBED_DASHBOARD_TOKEN"] = token
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "testbed.cli", "dashboard", "--port", "0", "--runs",
                                    str(runs_dir), "--launch-dir", str(REPO / "launch")], cwd=REPO, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        give_up = time.monotonic() + 60
        while (match := ANNOUNCED.search(log.read_text())) is None:
            assert process.poll() is None, f"dashboard exited: {log.read_text()}"
            assert time.monotonic() < give_up, f"dashboard did not announce itself: {log.read_text()}"
            time.sleep(0.1)
        yield RunningDashboard(match.group(1), runs_dir, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(f"the dashboard did not stop on SIGTERM: {log.read_text()}") from None
