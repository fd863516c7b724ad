"""The live feed: what a run's event stream, snapshot and frames become for WebSocket clients."""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from dashboard_helpers import LOCAL_EXPERT, REPO
from fastapi.testclient import TestClient
from PIL import Image
from websockets.sync.client import connect

from testbed.dashboard import Dashboard, create_app
from testbed.dashboard.feed import LiveFeed, RunningMetrics, encode_frame, histogram_edges, latency_histogram
from testbed.dashboard.feed_server import FeedServer
from testbed.dashboard.launcher import announce
from testbed.eval.events import EventStream
from testbed.eval.runner import run_scenario
from testbed.scenario import load


@pytest.fixture
def stream(tmp_path: Path):
    run_dir = tmp_path / "runs" / "live-run"
    run_dir.mkdir(parents=True)
    events = EventStream(run_dir / "events.jsonl")
    yield events
    events.close()


def image(value: int) -> np.ndarray:
    return np.full((8, 8, 3), value, dtype=np.uint8)


def decode(data_url: str) -> Image.Image:
    header, payload = data_url.split(",", 1)
    assert header in ("data:image/jpeg;base64", "data:image/png;base64")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def test_frames_are_wanted_only_while_someone_watches(stream):
    feed = LiveFeed(stream)
    assert not stream.frames_wanted and not stream.frame_due("overhead")
    feed.watch()
    feed.watch()
    assert stream.frames_wanted and stream.frame_due("overhead")
    feed.unwatch()
    assert stream.frames_wanted
    feed.unwatch()
    assert not stream.frames_wanted


def test_a_camera_just_published_is_not_due_again_until_its_period_passed(stream):
    LiveFeed(stream).watch()
    stream.frame_max_hz = 1e-6  # one frame, then none for a long while
    stream.publish_frame("overhead", image(1), 0.0)
    assert not stream.frame_due("overhead") and stream.frame_due("side")


def test_the_feed_encodes_only_the_newest_frame_of_each_camera(stream):
    feed = LiveFeed(stream)
    feed.watch()
    for value in (10, 20, 250):
        stream.publish_frame("overhead", image(value), value / 10, episode=0)
    feed.pump()
    (frame,) = json.loads(feed.tick(frames=True))["frames"]
    assert frame == feed.frames["overhead"]
    assert frame["seq"] == 3 and frame["t"] == 25.0 and frame["episode"] == 0
    assert json.loads(feed.tick(frames=False))["frames"] == []
    pixels = np.asarray(decode(frame["data"]).convert("RGB"))
    assert pixels.shape == (8, 8, 3) and abs(int(pixels.mean()) - 250) <= 3


def test_png_frames_are_lossless(stream):
    picture = np.random.default_rng(0).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(decode(encode_frame(picture, "png"))), picture)


def test_the_feed_takes_events_and_the_latest_state(stream):
    feed = LiveFeed(stream)
    stream.emit("run_start", 0.0, None, run_id="live-run")
    stream.publish_state({"t": 1.0, "episode": 0, "robots": {"arm1": {"joint_pos": [0.1, 0.2]}}, "episode_tally": {}})
    stream.publish_state({"t": 2.0, "episode": 0, "robots": {"arm1": {"joint_pos": [0.3, 0.4]}}, "episode_tally": {},
                          "policy_latency_ms": {"count": 3, "recent": [1.0, 2.0, 3.0]}})
    feed.pump()
    tick = json.loads(feed.tick(frames=True))
    assert tick["type"] == "tick" and [e["kind"] for e in tick["events"]] == ["run_start"]
    assert tick["state"]["t"] == 2.0 and tick["state"]["robots"]["arm1"]["joint_pos"] == [0.3, 0.4]
    assert feed.metrics.latency_message()["count"] == 3
    feed.pump()
    assert feed.tick(frames=True) is None  # nothing new


def test_a_client_that_missed_ticks_catches_up_with_events_and_the_newest_state(stream):
    feed = LiveFeed(stream)
    stream.emit("run_start", 0.0, None)
    feed.pump()
    cursor = feed.event_seq
    for i in range(3):
        stream.emit("pick", float(i), 0, "arm1")
        stream.publish_state({"t": float(i), "episode": 0, "robots": {}, "episode_tally": {}})
        feed.pump()
    message = json.loads(feed.catch_up(cursor, frames=True))
    assert [e["t"] for e in message["events"]] == [0.0, 1.0, 2.0] and message["state"]["t"] == 2.0
    assert message["catch_up"] is True and message["metrics"]["ended"] is None


def test_a_full_event_queue_drops_the_oldest_and_the_metrics_say_so(stream, monkeypatch):
    monkeypatch.setattr("testbed.dashboard.feed.EVENT_QUEUE", 3)
    feed = LiveFeed(stream)
    for i in range(5):
        stream.emit("collision", float(i), 0, "arm1", other=f"thing{i}")
    feed.pump()
    assert [e["other"] for _, e in feed.events] == ["thing2", "thing3", "thing4"]
    assert json.loads(feed.metrics_json())["events_dropped"] == 2


def test_a_finished_feed_lets_go_of_the_stream_after_taking_what_is_left(stream):
    feed = LiveFeed(stream)
    feed.watch()
    stream.emit("run_end", 5.0, None, success_rate=1.0)
    feed.finish()
    assert not feed.closed
    feed.pump()
    assert feed.closed and not stream.frames_wanted
    assert [e["kind"] for _, e in feed.events] == ["run_end"]
    assert json.loads(feed.metrics_json())["ended"] == "run_end"


def test_running_metrics_tally_episodes_parts_and_stops():
    metrics = RunningMetrics()
    for event in (
        {"kind": "place", "correct": True, "cycle_time_s": 2.0},
        {"kind": "place", "correct": False, "cycle_time_s": 9.0},
        {"kind": "protective_stop"}, {"kind": "collision"}, {"kind": "policy_timeout"},
        {"kind": "episode_end", "episode": 0, "success": True, "placed": 3, "parts": 3, "t": 30.0},
        {"kind": "episode_end", "episode": 1, "success": False, "placed": 1, "parts": 3, "t": 30.0},
    ):
        metrics.add_event(event)
    message = metrics.as_message({"t": 0.0, "episode_tally": {"placed": 0}})
    assert message["episodes_done"] == 2 and message["success_rate"] == 0.5 and message["parts_placed"] == 4
    assert message["parts_per_min"] == 4.0 and message["cycle_time_s"] == 2.0
    assert (message["safety_stops"], message["collisions"], message["policy_timeouts"]) == (1, 1, 1)
    assert [e["success"] for e in message["episode_results"]] == [True, False]


def test_latencies_are_counted_once_however_often_the_snapshot_is_read():
    metrics = RunningMetrics()
    metrics.add_latencies({"count": 2, "recent": [1.0, 2.0]})
    metrics.add_latencies({"count": 2, "recent": [1.0, 2.0]})
    metrics.add_latencies({"count": 4, "recent": [1.0, 2.0, 3.0, 40.0]})
    message = metrics.latency_message()
    assert message["count"] == 4 and sum(message["counts"]) == 4
    assert message["edges"][0] <= 1.0 and message["edges"][-1] >= 40.0
    assert 1.5 <= message["p50"] <= 2.6 and 30 <= message["p99"] <= 50  # to a bin


def test_histograms_share_edges_that_hold_every_sample():
    fast, slow = np.array([0.02, 0.03, 0.05]), np.array([10.0, 80.0])
    edges = histogram_edges([fast, slow], bins=8)
    assert edges[0] <= 0.02 and edges[-1] >= 80.0 and np.all(np.diff(edges) > 0)
    assert sum(latency_histogram(fast, edges)["counts"]) == 3 and sum(latency_histogram(slow, edges)["counts"]) == 2


# ------------------------------------------------------------------ the runner's side


def test_the_run_renders_no_frame_while_nobody_watches(tmp_path, monkeypatch):
    renders = []
    monkeypatch.setattr("testbed.sim.cell.Cell.render", lambda self, i: renders.append(i) or image(0))
    states = []
    run_scenario(load(REPO / "launch" / "factory_cell.yaml", [*LOCAL_EXPERT, "episodes:=1"]), runs_dir=tmp_path,
                 events_hook=lambda stream: states.append(stream) or stream.subscribe())  # a viewer of events
    assert renders == []
    snapshot = states[0].snapshot()
    assert len(snapshot["tcp_xyz"]["arm1"]) == 3 and len(snapshot["robots"]["arm1"]["joint_pos"]) == 6
    assert snapshot["policy_latency_ms"]["count"] > 0


def test_the_run_publishes_camera_frames_while_someone_watches(tmp_path):
    frames = []

    def watch(stream: EventStream) -> None:
        stream.frame_max_hz = 1e6  # every monitor step: the test counts frames, not wall time
        sub = stream.subscribe_frames(maxlen=100000)
        frames.append(sub)

    run_scenario(load(REPO / "launch" / "factory_cell.yaml", [*LOCAL_EXPERT, "episodes:=1"]), runs_dir=tmp_path,
                 events_hook=watch)
    got = []
    while (frame := frames[0].get(0)) is not None:
        got.append(frame)
    assert len(got) > 100 and {f.camera for f in got} == {"overhead"}
    assert got[0].rgb.shape == (96, 96, 3) and got[0].rgb.dtype == np.uint8
    assert [f.seq for f in got] == sorted(f.seq for f in got)
    assert not all(np.array_equal(got[0].rgb, f.rgb) for f in got)  # the scene moves


def test_a_run_records_every_policy_round_trip(tmp_path):
    result = run_scenario(load(REPO / "launch" / "factory_cell.yaml", [*LOCAL_EXPERT, "episodes:=1"]),
                          runs_dir=tmp_path)
    samples = json.loads((result.run_dir / "policy_latency_ms.json").read_text())
    assert len(samples) > 10 and all(x >= 0 for x in samples)


# ------------------------------------------------------------------ a live run through the app's WebSocket


def read_until_end(ws) -> dict[str, list]:
    """A client's messages by type until ``end``, with the parts of every tick listed by kind too."""
    seen: dict[str, list] = {}
    while True:
        message = ws.receive_json()
        seen.setdefault(message["type"], []).append(message)
        if message["type"] == "tick":
            for kind, part in (("state", message["state"]), ("metrics", message["metrics"])):
                if part:
                    seen.setdefault(kind, []).append(part)
            seen.setdefault("frame", []).extend(message["frames"])
            seen.setdefault("events", []).extend(message["events"])
        if message["type"] == "end":
            return seen


def test_a_live_run_reaches_every_browser_through_one_relayed_connection(tmp_path):
    runs_dir = tmp_path / "runs"
    server = FeedServer()
    server.start()
    attached = threading.Event()
    proceed = threading.Event()
    failure: list[BaseException] = []

    def hook(stream: EventStream) -> None:
        feed = server.attach(stream)
        announce(feed.run_dir, server.port)
        attached.set()
        proceed.wait(60)  # the browsers connect before the first episode

    def run() -> None:
        try:
            run_scenario(load(REPO / "launch" / "factory_cell.yaml", [*LOCAL_EXPERT, "episodes:=2"]),
                         runs_dir=runs_dir, events_hook=hook)
        except BaseException as exc:
            failure.append(exc)
            raise
        finally:
            attached.set()
            for feed in server.feeds.values():
                feed.finish()  # as serve_live does when the run is over

    thread = threading.Thread(target=run, name="test-run")
    thread.start()
    try:
        assert attached.wait(60) and not failure
        (run_id,) = server.feeds
        path = f"/api/runs/{run_id}/live"
        with TestClient(create_app(Dashboard(runs_dir, REPO / "launch")), client=("127.0.0.1", 1)) as client, \
                client.websocket_connect(path) as first, client.websocket_connect(path) as second, \
                client.websocket_connect(path) as third:
            for ws in (first, second, third):
                ws.send_text(json.dumps({"token": None, "frames": ws is not third}))
                assert ws.receive_json()["type"] == "hello"
            assert server.feeds[run_id].viewers == 1  # the dashboard relays one connection to three browsers
            proceed.set()
            seen = [read_until_end(ws) for ws in (first, second, third)]
    finally:
        proceed.set()
        thread.join(120)
        server.stop()
    assert not thread.is_alive() and not failure
    for got in seen:
        assert len(got["state"]) >= 2 and len(got["state"][-1]["robots"]["arm1"]["tcp_xyz"]) == 3
        kinds = [e["kind"] for e in got["events"]]
        assert kinds[0] == "run_start" and kinds[-1] == "run_end" and "place" in kinds
        final = got["metrics"][-1]
        assert final["episodes_done"] == 2 and final["ended"] == "run_end" and final["policy_latency_ms"]["count"] > 0
    assert seen[0]["frame"] and decode(seen[0]["frame"][0]["data"]).size == (96, 96)
    assert seen[2]["frame"] == []  # this browser asked for no frames


def test_the_feed_server_greets_with_the_runs_robots_and_cameras(tmp_path):
    run_dir = tmp_path / "runs" / "a-run"
    run_dir.mkdir(parents=True)
    (run_dir / "scenario.yaml").write_text(load(REPO / "launch" / "factory_cell.yaml").resolved_yaml())
    stream = EventStream(run_dir / "events.jsonl")
    server = FeedServer()
    server.start()
    try:
        server.attach(stream)
        stream.emit("run_start", 0.0, None, scenario="factory_cell", policy="expert-gp7")
        with connect(f"ws://127.0.0.1:{server.port}/api/runs/a-run/live") as ws:
            ws.send(json.dumps({"token": None, "frames": True}))
            hello = json.loads(ws.recv(timeout=30))
        with connect(f"ws://127.0.0.1:{server.port}/api/runs/elsewhere/live") as ws:
            ws.send(json.dumps({"token": None}))
            unknown = json.loads(ws.recv(timeout=30))
    finally:
        server.stop()
        stream.close()
    assert hello["policy"] == "expert-gp7" and hello["cameras"] == ["overhead"]
    assert hello["robots"] == [{"name": "arm1", "model": "gp7", "joint_names": [f"joint_{i}" for i in range(1, 7)]}]
    assert unknown == {"type": "end", "reason": "no such live run in this process"}
