"""The live feed of a run in this process: what its event stream and snapshot say, ready to send.

A ``LiveFeed`` is the only reader of the run's ``EventStream`` on the dashboard's side. ``pump()`` runs
on the server's event loop (never on the control thread): it drains a bounded event subscription,
samples the latest-state snapshot, takes the newest camera frame and encodes it (JPEG or PNG), and
keeps ready-made JSON messages that every WebSocket client of the run shares. Clients that fall
behind skip to the newest state and frame; events are kept in a bounded ring, oldest dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from testbed.eval.events import EventStream, Frame, Subscription

EVENT_QUEUE = 4096  # events waiting for the next pump; at 20 Hz pumping this never fills in practice
EVENT_RING = 500  # recent events kept for clients (a newcomer gets them as its backlog)
# live latency histogram: fixed log-spaced bins (1 us .. 100 s, ten a decade), counted as samples arrive
LIVE_LATENCY_EDGES_MS = np.geomspace(1e-3, 1e5, 81)
HISTOGRAM_BINS = 20
METRICS_PERIOD_S = 0.5  # running metrics go out twice a second
PUMP_PERIOD_S = 0.0625  # 16 Hz: state reaches clients at >= 10 Hz even when the run holds the GIL
HELLO_TIMEOUT_S = 10.0
BACKLOG_EVENTS = 200  # events a client gets when it connects
SAFETY_KINDS = ("protective_stop", "emergency_stop")


@dataclass
class RunningMetrics:
    """A run's figures so far, tallied from its events and snapshots."""

    episodes_done: int = 0
    successes: int = 0
    parts_placed: int = 0
    parts_total: int = 0
    parts_dropped: int = 0
    collisions: int = 0
    safety_stops: int = 0
    policy_timeouts: int = 0
    sim_s_done: float = 0.0  # simulated time of the finished episodes
    cycle_times_s: list[float] = field(default_factory=list)
    episode_results: list[dict[str, Any]] = field(default_factory=list)
    latency_counts: np.ndarray = field(default_factory=lambda: np.zeros(LIVE_LATENCY_EDGES_MS.size - 1, np.int64))
    latency_count: int = 0  # round trips the run has reported (some may have been missed between snapshots)
    events_dropped: int = 0
    ended: str | None = None  # run_end or run_aborted
    end_reason: str | None = None

    def add_event(self, event: dict[str, Any]) -> None:
        """Count one event of the run."""
        kind = event.get("kind")
        if kind == "episode_end":
            self.episodes_done += 1
            self.successes += bool(event.get("success"))
            self.parts_placed += int(event.get("placed") or 0)
            self.parts_total += int(event.get("parts") or 0)
            self.parts_dropped += int(event.get("dropped") or 0)
            self.sim_s_done += float(event.get("t") or 0.0)
            self.episode_results.append({"episode": event.get("episode"), "success": bool(event.get("success")),
                                         "placed": event.get("placed"), "parts": event.get("parts"),
                                         "reason": event.get("reason")})
        elif kind == "place" and event.get("correct") and event.get("cycle_time_s") is not None:
            self.cycle_times_s.append(float(event["cycle_time_s"]))
        elif kind == "collision":
            self.collisions += 1
        elif kind in SAFETY_KINDS:
            self.safety_stops += 1
        elif kind == "policy_timeout":
            self.policy_timeouts += 1
        elif kind in ("run_end", "run_aborted"):
            self.ended = kind
            self.end_reason = event.get("reason")

    def add_latencies(self, snapshot_latency: dict[str, Any] | None) -> None:
        """Take the round trips a snapshot's ``policy_latency_ms`` {count, recent} adds to what was seen."""
        if not snapshot_latency:
            return
        count = int(snapshot_latency.get("count", 0))
        recent = list(snapshot_latency.get("recent", ()))
        new = count - self.latency_count
        if new > 0 and recent:
            samples = np.asarray(recent[-new:], dtype=np.float64)  # more than ``recent`` holds were missed
            bins = np.searchsorted(LIVE_LATENCY_EDGES_MS, samples, side="right") - 1
            self.latency_counts += np.bincount(np.clip(bins, 0, self.latency_counts.size - 1),
                                               minlength=self.latency_counts.size)
        self.latency_count = max(count, self.latency_count)

    def latency_message(self) -> dict[str, Any]:
        """Count, percentiles (to a bin: about 26 %) and the histogram of the round trips seen, trimmed to its
        occupied bins."""
        counts = self.latency_counts
        total = int(counts.sum())
        if total == 0:
            return {"count": 0, "p50": None, "p99": None, "edges": [], "counts": []}
        occupied = np.flatnonzero(counts)
        first, last = int(occupied[0]), int(occupied[-1])
        cumulative = np.cumsum(counts)
        centres = np.sqrt(LIVE_LATENCY_EDGES_MS[:-1] * LIVE_LATENCY_EDGES_MS[1:])

        def percentile(q: float) -> float:
            return round(float(centres[int(np.searchsorted(cumulative, q * total))]), 4)

        return {"count": total, "p50": percentile(0.5), "p99": percentile(0.99),
                "edges": [round(float(e), 6) for e in LIVE_LATENCY_EDGES_MS[first: last + 2]],
                "counts": counts[first: last + 1].tolist()}

    def as_message(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """The running metrics: tallies, rates and a latency histogram."""
        tally = snapshot.get("episode_tally") or {}
        sim_s = self.sim_s_done + (float(snapshot.get("t", 0.0)) if self.ended is None else 0.0)
        placed = self.parts_placed + (int(tally.get("placed", 0)) if self.ended is None else 0)
        return {
            "episodes_done": self.episodes_done,
            "success_rate": round(self.successes / self.episodes_done, 6) if self.episodes_done else None,
            "parts_placed": placed,
            "parts_total": self.parts_total,
            "parts_dropped": self.parts_dropped,
            "parts_per_min": round(placed / (sim_s / 60.0), 3) if sim_s > 0 else None,
            "cycle_time_s": round(float(np.mean(self.cycle_times_s)), 4) if self.cycle_times_s else None,
            "collisions": self.collisions,
            "safety_stops": self.safety_stops,
            "policy_timeouts": self.policy_timeouts,
            "sim_s": round(sim_s, 3),
            "episode_results": self.episode_results[-200:],
            "policy_latency_ms": self.latency_message(),
            "events_dropped": self.events_dropped,
            "ended": self.ended,
        }


def latency_histogram(samples: np.ndarray, edges: np.ndarray | None = None,
                      bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Percentiles and a histogram of latencies (ms); ``edges`` shared with other runs when given."""
    if samples.size == 0:
        return {"count": 0, "p50": None, "p99": None, "edges": [], "counts": []}
    if edges is None:
        edges = histogram_edges([samples], bins)
    counts, _ = np.histogram(samples, bins=edges)
    return {"count": int(samples.size), "p50": round(float(np.percentile(samples, 50)), 4),
            "p99": round(float(np.percentile(samples, 99)), 4), "edges": [round(float(e), 4) for e in edges],
            "counts": counts.tolist()}


def histogram_edges(sample_sets: list[np.ndarray], bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Common, logarithmically spaced bin edges (ms) covering every latency of several runs.

    Lockstep round trips take tens of microseconds and a reconnect tens of milliseconds: linear bins
    would put nearly everything into the first one.
    """
    present = [s for s in sample_sets if s.size]
    if not present:
        return np.geomspace(0.01, 100.0, bins + 1)
    everything = np.concatenate(present)
    low = max(float(everything.min()), 1e-4)
    high = max(float(everything.max()), low * 1.01)
    edges = np.geomspace(low, high, bins + 1)
    edges[0], edges[-1] = min(edges[0], float(everything.min())), high  # the extremes land inside
    return edges


def encode_frame(rgb: np.ndarray, image_format: str) -> str:
    """An image as a data URL (``data:image/jpeg;base64,...``) for an ``<img>``."""
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if image_format == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=85)
    mime = "image/png" if image_format == "png" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


class Feed:
    """What the WebSocket clients of one live run receive, prepared once for all of them.

    Each update makes one ``tick`` message: the new events, the newest state (if it changed), the newest
    frame of each camera (if new) and, twice a second, the running metrics. A client that kept up sends it as
    it is; one that missed a tick gets a catch-up message of the same shape instead (the events since it last
    sent, from a bounded ring, and the newest state, frames and metrics). Used on the server's event loop only.

    Args:
        run_id: the run.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.hello: str | None = None  # the first message of every client
        self.viewers = 0
        self.frame_viewers = 0
        self.events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=EVENT_RING)
        self.event_seq = 0
        self.state: dict[str, Any] | None = None  # the newest ``state`` part
        self.frames: dict[str, dict[str, Any]] = {}  # camera -> the newest ``frame`` part
        self.tick_seq = 0
        self.tick_message: str | None = None  # None: the last update had nothing new
        self._tick_parts: dict[str, Any] = {}
        self._tick_without_frames: str | None = None
        self.closed = False
        self._wakes: set[asyncio.Event] = set()  # one per client, set after every update

    def watch(self, frames: bool) -> None:
        """A client connected (wanting camera frames or not)."""
        self.viewers += 1
        self.frame_viewers += frames

    def unwatch(self, frames: bool) -> None:
        """A client left."""
        self.viewers = max(0, self.viewers - 1)
        self.frame_viewers = max(0, self.frame_viewers - frames)

    def pump_if_due(self, period_s: float) -> None:
        """Bring the feed up to date if it pulls from its run (a pushed feed is always up to date)."""

    def running_metrics(self) -> dict[str, Any] | None:
        """The run's figures so far."""
        return None

    def end_reason(self) -> str:
        """Why the feed closed."""
        return "the run ended"

    def waker(self) -> asyncio.Event:
        """An event set after every update, for one client (``drop_waker`` when done)."""
        wake = asyncio.Event()
        self._wakes.add(wake)
        return wake

    def drop_waker(self, wake: asyncio.Event) -> None:
        """Forget a client's event."""
        self._wakes.discard(wake)

    def wake_all(self) -> None:
        """Tell every client that something changed."""
        for wake in self._wakes:
            wake.set()

    def events_after(self, seq: int) -> list[dict[str, Any]]:
        """The events kept in the ring whose number is above ``seq``, oldest first."""
        new = []
        for number, event in reversed(self.events):
            if number <= seq:
                break
            new.append(event)
        new.reverse()
        return new

    def tick(self, frames: bool) -> str | None:
        """The last update's message (None if it had nothing new)."""
        if frames or not self._tick_parts.get("frames"):
            return self.tick_message
        if self._tick_without_frames is None:
            self._tick_without_frames = json.dumps({**self._tick_parts, "frames": []})
        return self._tick_without_frames

    def catch_up(self, event_seq: int, frames: bool) -> str:
        """A message with everything a client needs after the event numbered ``event_seq``."""
        return json.dumps({"type": "tick", "seq": self.tick_seq, "catch_up": True,
                           "events": self.events_after(event_seq), "state": self.state,
                           "frames": list(self.frames.values()) if frames else [],
                           "metrics": self.running_metrics(), "ended": self.closed})

    def publish(self, events: list[dict[str, Any]], state: dict[str, Any] | None, frames: list[dict[str, Any]],
                metrics: dict[str, Any] | None, ended: bool, message: str | None = None) -> None:
        """Take one update and wake the clients; ``message`` is its ``tick`` already encoded, if it is at hand."""
        for event in events:
            self.event_seq += 1
            self.events.append((self.event_seq, event))
        if state:
            self.state = state
        for frame in frames:
            self.frames[frame["camera"]] = frame
        self.tick_seq += 1
        self._tick_without_frames = None
        if events or state or frames or metrics or ended:
            self._tick_parts = {"type": "tick", "seq": self.tick_seq, "events": events, "state": state,
                                "frames": frames, "metrics": metrics, "ended": ended}
            self.tick_message = message if message is not None else json.dumps(self._tick_parts)
        else:
            self._tick_parts, self.tick_message = {}, None
        if ended:
            self.closed = True
        self.wake_all()


class LiveFeed(Feed):
    """The feed of a run in this process, pulled from its ``EventStream`` by ``pump()`` (20 Hz).

    Frames are asked of the run only while a client wants them.

    Args:
        stream: the run's event stream (the runner's ``events_hook`` hands it over before the first event).
        image_format: ``jpeg`` or ``png`` for camera frames.
    """

    def __init__(self, stream: EventStream, image_format: str = "jpeg") -> None:
        super().__init__(stream.path.parent.name)
        self.stream = stream
        self.run_dir: Path = stream.path.parent
        self.image_format = image_format
        self._events: Subscription[dict[str, Any]] = stream.subscribe(maxlen=EVENT_QUEUE)
        self._frames: Subscription[Frame] | None = None
        self.metrics = RunningMetrics()
        self._metrics: dict[str, Any] | None = None
        self._metrics_at = 0.0
        self._finishing = False
        self._snapshot: dict[str, Any] | None = None
        self._last_pump = 0.0

    def watch(self, frames: bool = True) -> None:
        """A client connected; one that wants frames makes the run render them."""
        super().watch(frames)
        if self.frame_viewers and self._frames is None and not self.closed:
            self._frames = self.stream.subscribe_frames(maxlen=2)

    def unwatch(self, frames: bool = True) -> None:
        """A client left; with the last one wanting frames gone, the run stops rendering them for the dashboard."""
        super().unwatch(frames)
        if self.frame_viewers == 0 and self._frames is not None:
            self.stream.unsubscribe(self._frames)
            self._frames = None

    def finish(self) -> None:
        """The run is over (callable from any thread): the next pump takes what is left and lets go of the stream."""
        self._finishing = True

    def end_reason(self) -> str:
        return self.metrics.ended or "the run ended"

    def running_metrics(self, max_age_s: float = METRICS_PERIOD_S) -> dict[str, Any]:
        """The running metrics, recomputed at most every ``max_age_s`` (the histogram costs ~0.1 ms)."""
        now = time.monotonic()
        if self._metrics is None or now - self._metrics_at >= max_age_s:
            self._metrics_at = now
            self._metrics = self.metrics.as_message(self._snapshot or {})
        return self._metrics

    def metrics_json(self, max_age_s: float = METRICS_PERIOD_S) -> str:
        """``running_metrics`` as JSON."""
        return json.dumps(self.running_metrics(max_age_s))

    def pump_if_due(self, period_s: float) -> None:
        """``pump()`` unless it ran within ``period_s``."""
        if time.monotonic() - self._last_pump >= period_s:
            self.pump()

    def pump(self) -> None:
        """Take what the run published since the last pump and publish it to the clients as one tick."""
        self._last_pump = time.monotonic()
        if self.closed:
            self.wake_all()
            return
        finishing = self._finishing  # read first: whatever the run published before it finished is taken below
        self.metrics.events_dropped = self._events.dropped
        new_events = []
        while (event := self._events.get(0)) is not None:
            self.metrics.add_event(event)
            new_events.append(event)
        state = None
        snapshot = self.stream.snapshot()
        if snapshot and snapshot is not self._snapshot:
            self._snapshot = snapshot
            self.metrics.add_latencies(snapshot.get("policy_latency_ms"))
            state = _state(snapshot)
        new_frames = []
        if self._frames is not None:
            newest: dict[str, Frame] = {}
            while (frame := self._frames.get(0)) is not None:
                newest[frame.camera] = frame
            new_frames = [{"camera": f.camera, "t": f.t, "episode": f.episode, "seq": f.seq,
                           "data": encode_frame(f.rgb, self.image_format)} for f in newest.values()]
        metrics_due = finishing or time.monotonic() - self._metrics_at >= METRICS_PERIOD_S
        metrics = self.running_metrics(0.0 if finishing else METRICS_PERIOD_S) if metrics_due else None
        if finishing:
            self.stream.unsubscribe(self._events)
            if self._frames is not None:
                self.stream.unsubscribe(self._frames)
                self._frames = None
        self.publish(new_events, state, new_frames, metrics, finishing)


class RelayedFeed(Feed):
    """The feed of a run in another process, taken from the feed that process serves on this host's loopback.

    One upstream connection serves every client of this dashboard, so the run's process sends each tick
    once however many browsers watch. ``follow()`` runs while the feed has clients.

    Args:
        run_id: the run.
        port: the loopback port its process announced in ``live.json``.
    """

    def __init__(self, run_id: str, port: int) -> None:
        super().__init__(run_id)
        self.port = port
        self.ready = asyncio.Event()  # set once the upstream said hello (or failed)
        self.task: asyncio.Task[None] | None = None
        self._metrics: dict[str, Any] | None = None
        self._end_reason = "the run's live feed closed"
        self.stopping = False  # the last client left: the upstream connection is closing

    def running_metrics(self) -> dict[str, Any] | None:
        return self._metrics

    def end_reason(self) -> str:
        return self._end_reason

    def unwatch(self, frames: bool = True) -> None:
        """A client left; with the last one gone the upstream connection closes (the run stops its frames)."""
        super().unwatch(frames)
        if self.viewers == 0 and self.task is not None:
            self.stopping = True
            self.task.cancel()

    def ingest(self, raw: str) -> None:
        """Take one message of the upstream feed."""
        message = json.loads(raw)
        kind = message.get("type")
        if kind == "hello":
            self.hello = raw
            self.ready.set()
        elif kind == "tick":
            if message.get("metrics"):
                self._metrics = message["metrics"]
            self.publish(message.get("events") or [], message.get("state"), message.get("frames") or [],
                         message.get("metrics"), bool(message.get("ended")),
                         None if message.get("catch_up") else raw)
        elif kind in ("end", "error"):
            self._end_reason = str(message.get("reason") or message.get("detail") or self._end_reason)
            self.publish([], None, [], None, True)

    async def follow(self) -> None:
        """Read the upstream feed until it ends, the connection fails, or the last client leaves."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        url = f"ws://127.0.0.1:{self.port}/api/runs/{self.run_id}/live"
        try:
            async with connect(url, open_timeout=10, max_size=2**24, compression=None) as upstream:
                await upstream.send(json.dumps({"token": None, "frames": True}))
                async for raw in upstream:
                    self.ingest(raw if isinstance(raw, str) else raw.decode())
                    if self.closed:
                        return
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ValueError) as exc:
            self._end_reason = f"the run's live feed closed ({type(exc).__name__})"
        finally:
            if not self.closed:
                self.publish([], None, [], None, True)
            self.ready.set()


def _state(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The snapshot's fields a live view shows, each robot's TCP position with its joints (latency samples
    travel in ``metrics``); the snapshot itself is shared with other readers and left as it is."""
    tcp = snapshot.get("tcp_xyz") or {}
    robots = {name: {**fields, "tcp_xyz": tcp.get(name)} for name, fields in (snapshot.get("robots") or {}).items()}
    return {"t": snapshot.get("t"), "episode": snapshot.get("episode"), "robots": robots,
            "episode_tally": snapshot.get("episode_tally", {})}


class Channel(Protocol):
    """One client's WebSocket, whichever server holds it; ``send`` raises ``ConnectionError`` once it is gone."""

    async def send(self, text: str) -> None: ...
    async def closed(self) -> None: ...  # returns when the client has gone
    async def close(self) -> None: ...


async def send_end(channel: Channel, reason: str) -> None:
    """Tell a client the feed is over, and close."""
    with contextlib.suppress(ConnectionError):
        await channel.send(json.dumps({"type": "end", "reason": reason}))
        await channel.close()


async def serve_feed(channel: Channel, feed: Feed, frames: bool) -> None:
    """Send one client its run's ``tick`` after each update; one that fell behind gets a catch-up instead.

    The client's ``hello`` comes first, then a catch-up with the recent events. A client too slow for every
    tick skips to the newest state and frames; its events come from a bounded ring (the oldest dropped), so
    nothing it does reaches the run.
    """
    feed.watch(frames)
    wake = feed.waker()
    gone = False

    async def listen() -> None:
        nonlocal gone
        with contextlib.suppress(Exception):
            await channel.closed()
        gone = True
        wake.set()

    listener = asyncio.create_task(listen())
    try:
        if isinstance(feed, RelayedFeed):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feed.ready.wait(), HELLO_TIMEOUT_S)
        if feed.hello is not None:
            await channel.send(feed.hello)
        feed.pump_if_due(PUMP_PERIOD_S)
        sent_tick, cursor = feed.tick_seq, feed.event_seq
        await channel.send(feed.catch_up(max(0, cursor - BACKLOG_EVENTS), frames))
        while not gone and not feed.closed:
            await wake.wait()
            wake.clear()
            if gone or feed.tick_seq == sent_tick:
                continue
            message = feed.tick(frames) if feed.tick_seq == sent_tick + 1 else feed.catch_up(cursor, frames)
            sent_tick, cursor = feed.tick_seq, feed.event_seq
            if message is not None:
                await channel.send(message)
        if not gone:
            await send_end(channel, feed.end_reason())
    except ConnectionError:
        return  # the client left mid-send
    finally:
        feed.drop_waker(wake)
        listener.cancel()
        feed.unwatch(frames)


@functools.lru_cache(maxsize=32)
def _joint_names(model: str) -> tuple[str, ...]:
    from testbed.robots import load_robot

    return load_robot(model).joint_names


def hello_message(run_dir: Path) -> str:
    """A live run's ``hello``: its scenario, policy, robots with their joint names, and cameras."""
    import yaml

    robots: list[dict[str, Any]] = []
    cameras: list[str] = []
    with contextlib.suppress(OSError, ValueError, yaml.YAMLError, AttributeError):
        scenario = yaml.safe_load((run_dir / "scenario.yaml").read_text(encoding="utf-8")) or {}
        cell = scenario.get("cell") or {}
        cameras = [c.get("name") for c in cell.get("cameras") or []]
        for robot in cell.get("robots") or []:
            try:
                names = list(_joint_names(robot.get("model")))
            except Exception:  # an unreadable description only costs the plot its joint names
                names = []
            robots.append({"name": robot.get("name"), "model": robot.get("model"), "joint_names": names})
    start: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError), (run_dir / "events.jsonl").open("rb") as f:
        first = json.loads(f.readline() or b"{}")
        start = first if isinstance(first, dict) and first.get("kind") == "run_start" else {}
    return json.dumps({"type": "hello", "run_id": run_dir.name, "live": True, "scenario": start.get("scenario"),
                       "policy": start.get("policy"), "robots": robots, "cameras": cameras})
