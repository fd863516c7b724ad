"""The dashboard's server thread (``testbed launch --dashboard``): it serves, stops when asked, reports its death."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request

import pytest
from dashboard_helpers import REPO
from fastapi import FastAPI
from websockets.sync.client import connect

from testbed.dashboard import Dashboard, DashboardServer, create_app, serve_live
from testbed.errors import BridgeConfigError
from testbed.eval.events import EventStream


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_the_server_thread_serves_until_stopped(tmp_path):
    server = DashboardServer(create_app(Dashboard(tmp_path, REPO / "launch")), "127.0.0.1", 0)
    server.start()
    try:
        assert get(f"http://127.0.0.1:{server.port}/api/runs") == {"total": 0, "offset": 0, "runs": []}
    finally:
        server.stop()
    assert not server.thread.is_alive()


def test_a_server_thread_that_died_on_its_own_is_reported(tmp_path, capfd):
    @contextlib.asynccontextmanager
    async def broken(_: FastAPI):
        raise RuntimeError("start-up failed")
        yield

    server = DashboardServer(FastAPI(lifespan=broken), "127.0.0.1", 0)
    server.start()
    server.thread.join(20)
    assert not server.thread.is_alive()
    assert "dashboard: the server thread ended unexpectedly" in capfd.readouterr().err
    with pytest.raises(BridgeConfigError, match=r"the server thread (failed|had ended)"):
        server.stop()


def test_a_busy_port_is_one_clear_error(tmp_path):
    server = DashboardServer(create_app(Dashboard(tmp_path)), "127.0.0.1", 0)
    try:
        with pytest.raises(BridgeConfigError, match=rf"--port {server.port}: cannot listen there"):
            DashboardServer(create_app(Dashboard(tmp_path)), "127.0.0.1", server.port)
    finally:
        server.socket.close()


def test_serve_live_relays_the_run_through_its_own_dashboard_process(tmp_path):
    lines: list[str] = []
    run_dir = tmp_path / "runs" / "a-run"
    run_dir.mkdir(parents=True)
    stream = EventStream(run_dir / "events.jsonl")
    with serve_live(runs_dir=tmp_path / "runs", host="127.0.0.1", port=0, token=None,
                    announce_to=lines.append) as hook:
        hook(stream)
        stream.emit("run_start", 0.0, None, scenario="x")
        stream.publish_state({"t": 0.5, "episode": 0, "robots": {"arm1": {"joint_pos": [0.1]}}, "episode_tally": {},
                              "tcp_xyz": {"arm1": [0.1, 0.2, 0.3]}})
        live = json.loads((run_dir / "live.json").read_text())
        assert live["run_id"] == "a-run" and live["port"] > 0 and live["pid"] == os.getpid()
        public = lines[0].removeprefix("dashboard on ").rstrip("/")
        assert public != f"http://127.0.0.1:{live['port']}"
        assert get(f"{public}/api/runs/a-run")["status"] == "live"
        with connect(public.replace("http", "ws") + "/api/runs/a-run/live") as ws:
            ws.send(json.dumps({"token": None, "frames": False}))
            hello = json.loads(ws.recv(timeout=30))
            while (tick := json.loads(ws.recv(timeout=30)))["state"] is None:
                assert tick["type"] == "tick"
        assert hello["type"] == "hello" and hello["run_id"] == "a-run"
        assert tick["state"]["robots"]["arm1"]["tcp_xyz"] == [0.1, 0.2, 0.3]
        stream.emit("run_end", 1.0, None, success_rate=1.0)
    stream.close()
    assert not (run_dir / "live.json").exists()
    assert lines[1] == f"live view: {public}/#/run/a-run"
    with pytest.raises(OSError):
        get(f"{public}/api/runs")  # the dashboard process is gone with the run


def test_serve_live_beyond_loopback_needs_a_token(tmp_path):
    with pytest.raises(BridgeConfigError, match="needs a token"), \
            serve_live(runs_dir=tmp_path, host="0.0.0.0", port=0, token=None):
        pass
