"""The dashboard as users run it: `testbed dashboard` starting and stopping runs, `testbed launch --dashboard`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time

from dashboard_server import REPO, TOKEN, RunningDashboard, running_dashboard
from websockets.asyncio.client import connect

LOCAL_EXPERT = ("policy.serve:=null", "policy.builtin:=expert")


async def collect(url: str, run_id: str, until: set[str], timeout_s: float = 60) -> dict[str, list]:
    """Messages of a run's live feed, by type, until one of each type in ``until`` arrived (or the feed ended)."""
    seen: dict[str, list] = {}
    ws_url = url.replace("http://", "ws://") + f"/api/runs/{run_id}/live"
    async with connect(ws_url, max_size=2**24) as ws:
        await ws.send(json.dumps({"token": None, "frames": True}))
        async with asyncio.timeout(timeout_s):
            async for raw in ws:
                message = json.loads(raw)
                seen.setdefault(message["type"], []).append(message)
                if message["type"] == "tick":
                    parts = {"state": [message["state"]] if message["state"] else [], "frame": message["frames"],
                             "events": [message["events"]] if message["events"] else [],
                             "metrics": [message["metrics"]] if message["metrics"] else []}
                    for kind, items in parts.items():
                        seen.setdefault(kind, []).extend(items)
                    seen = {k: v for k, v in seen.items() if v}
                if until <= seen.keys() or message["type"] in ("end", "error"):
                    break
    return seen


def test_a_run_started_from_the_dashboard_streams_live_and_stops_on_request(tmp_path):
    with running_dashboard(tmp_path / "runs") as dash:
        run_id = dash.start_run(*LOCAL_EXPERT, "episodes:=500")
        status, row = dash.request("GET", f"/api/runs/{run_id}")
        assert status == 200 and row["status"] == "live" and row["controllable"] is True
        seen = asyncio.run(collect(dash.url, run_id, {"hello", "state", "frame", "events", "metrics"}))
        assert "end" not in seen and "error" not in seen
        state = seen["state"][-1]["robots"]["arm1"]
        assert len(state["joint_pos"]) == 6 and len(state["tcp_xyz"]) == 3 and state["state"] == "ACTIVE"
        assert seen["frame"][0]["data"].startswith("data:image/jpeg;base64,")
        assert dash.request("POST", f"/api/runs/{run_id}/stop")[0] == 401
        status, body = dash.request("POST", f"/api/runs/{run_id}/stop", token=TOKEN)
        assert status == 202 and body["stopping"] is True
        events = dash.wait_until_ended(run_id)
        assert events[-1]["kind"] == "run_aborted" and "SIGTERM" in events[-1]["reason"]
        give_up = time.monotonic() + 30
        while (row := dash.request("GET", f"/api/runs/{run_id}")[1])["exit_code"] is None:
            assert time.monotonic() < give_up, row
            time.sleep(0.2)
        assert row["exit_code"] == 143 and row["status"] == "aborted"
        assert not (dash.runs_dir / run_id / "live.json").exists()
        (log,) = (dash.runs_dir / ".launches").glob("*.log")
        assert "stopped: terminated by SIGTERM" in log.read_text()


def test_a_run_started_from_the_dashboard_finishes_with_its_record(tmp_path):
    with running_dashboard(tmp_path / "runs") as dash:
        run_id = dash.start_run(*LOCAL_EXPERT, "episodes:=1")
        events = dash.wait_until_ended(run_id)
        assert events[-1]["kind"] == "run_end"
        give_up = time.monotonic() + 30
        while (row := dash.request("GET", f"/api/runs/{run_id}")[1])["status"] != "finished":
            assert time.monotonic() < give_up, row
            time.sleep(0.2)
        assert row["episodes"] == 1 and row["success_rate"] == 1.0


def test_starting_without_the_token_starts_nothing(tmp_path):
    with running_dashboard(tmp_path / "runs") as dash:
        status, body = dash.request("POST", "/api/runs", {"launch": "factory_cell.yaml"})
        assert status == 401 and "token" in body["detail"]
        assert [p.name for p in dash.runs_dir.iterdir()] == []


def test_stopping_the_dashboard_stops_the_runs_it_started(tmp_path):
    with running_dashboard(tmp_path / "runs") as dash:
        run_id = dash.start_run(*LOCAL_EXPERT, "episodes:=500")
    assert dash.process.returncode == 143, dash.log.read_text()
    events = [json.loads(line) for line in (dash.runs_dir / run_id / "events.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "run_aborted"


def test_serving_beyond_loopback_without_a_token_is_one_line_and_exit_2(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "dashboard", "--host", "0.0.0.0", "--port", "0",
                           "--runs", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: dashboard --host 0.0.0.0: serving beyond loopback needs a token; set TESTBED_DASHBOARD_TOKEN "
        "(clients send it as 'Authorization: Bearer <token>'), or use --host 127.0.0.1"]


def test_launch_with_dashboard_serves_while_the_run_is_live(tmp_path):
    runs_dir = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "launch", "launch/factory_cell.yaml", *LOCAL_EXPERT,
                           "episodes:=1", "--runs-dir", str(runs_dir), "--dashboard", "--dashboard-port", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (run_dir,) = runs_dir.iterdir()
    assert re.search(r"^dashboard on http://127\.0\.0\.1:\d+/$", done.stdout, re.MULTILINE)
    assert re.search(rf"^live view: http://127\.0\.0\.1:\d+/#/run/{run_dir.name}$", done.stdout, re.MULTILINE)
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "live.json").exists()


def test_a_run_launched_with_dashboard_streams_through_it_and_stops_from_it_with_the_token(tmp_path):
    runs_dir, out = tmp_path / "runs", tmp_path / "launch.log"
    env = {**os.environ, "TESTBED_DASHBOARD_TOKEN": TOKEN}
    with out.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "testbed.cli", "launch", "launch/factory_cell.yaml",
                                    *LOCAL_EXPERT, "episodes:=500", "--runs-dir", str(runs_dir), "--dashboard",
                                    "--dashboard-port", "0"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env)
    try:
        give_up = time.monotonic() + 60
        while (match := re.search(r"live view: (http://127\.0\.0\.1:\d+)/#/run/(\S+)", out.read_text())) is None:
            assert process.poll() is None and time.monotonic() < give_up, out.read_text()
            time.sleep(0.1)
        url, run_id = match.groups()
        seen = asyncio.run(collect(url, run_id, {"hello", "state", "frame"}))
        assert seen["state"][-1]["robots"]["arm1"]["state"] == "ACTIVE" and seen["frame"]
        dash = RunningDashboard(url, runs_dir, process, out)
        assert dash.request("POST", f"/api/runs/{run_id}/stop")[0] == 401
        assert dash.request("GET", f"/api/runs/{run_id}")[1]["controllable"] is True
        status, body = dash.request("POST", f"/api/runs/{run_id}/stop", token=TOKEN)
        assert status == 202 and body["stopping"] is True
        assert process.wait(60) == 143
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    events = [json.loads(line) for line in (runs_dir / run_id / "events.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "run_aborted" and "SIGTERM" in events[-1]["reason"]
    assert "stopped: terminated by SIGTERM" in out.read_text()
