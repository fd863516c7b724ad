"""The run's event stream: ``events.jsonl`` flushed as it happens, plus live subscribers.

Readers (dashboard, ROS 2 bridge) get the same objects through bounded queues
that drop the oldest entry when full, so a slow reader never holds the loop back.
Camera frames for live views are published the same way, only while someone watches
(``frames_wanted``) and at most ``frame_max_hz`` per camera in wall time.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

import numpy as np

T = TypeVar("T")
FRAME_MAX_HZ = 8.0  # wall-clock cap on frames per camera (each costs a render); real-time runs use the policy rate


@dataclass(frozen=True)
class Frame:
    """One camera image for live views.

    Args:
        camera: the camera's name in the cell.
        rgb: ``(height, width, 3)`` uint8; handed over by the publisher and never modified afterwards.
        t: sim seconds.
        episode: the episode it belongs to.
        seq: increases with every frame the stream publishes.
    """

    camera: str
    rgb: np.ndarray
    t: float
    episode: int | None
    seq: int


class Subscription(Generic[T]):
    """A bounded, drop-oldest queue of events (or frames) for one live reader."""

    def __init__(self, maxlen: int) -> None:
        self._items: deque[T] = deque(maxlen=maxlen)
        self._ready = threading.Condition()
        self.dropped = 0

    def _put(self, event: T) -> None:
        with self._ready:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(event)
            self._ready.notify()

    def get(self, timeout_s: float | None = None) -> T | None:
        """The oldest waiting event, or None after ``timeout_s``."""
        with self._ready:
            if not self._items and not self._ready.wait(timeout_s):
                return None
            return self._items.popleft() if self._items else None


class EventStream:
    """Writes events to ``events.jsonl`` and fans them out to subscribers.

    Args:
        path: the jsonl file, opened for append and flushed after every event.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO = path.open("a", encoding="utf-8")
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self._frame_subscribers: list[Subscription[Frame]] = []
        self._frame_last: dict[str, float] = {}  # camera -> monotonic time of its last frame
        self._frame_seq = 0
        self.frame_max_hz = FRAME_MAX_HZ
        self.frames_wanted = False  # a plain attribute: the loop reads it without a call or a lock
        self.state_wanted = False  # while anyone subscribes to events, the loop publishes state snapshots

    def publish_state(self, state: dict[str, Any]) -> None:
        """Replace the latest-state snapshot (joint positions, controller states, running tallies).

        The run publishes one while ``state_wanted``: a live viewer subscribes to the events and reads both.
        """
        self._snapshot = state  # one reference swap: readers never see a half-written snapshot

    def snapshot(self) -> dict[str, Any]:
        """The latest state the run published; readers must not modify it."""
        return self._snapshot

    def subscribe(self, maxlen: int = 1024) -> Subscription[dict[str, Any]]:
        """Start receiving every event emitted from now on."""
        sub: Subscription[dict[str, Any]] = Subscription(maxlen)
        with self._lock:
            self._subscribers.append(sub)
            self.state_wanted = True
        return sub

    def subscribe_frames(self, maxlen: int = 2) -> Subscription[Frame]:
        """Start receiving camera frames; while any frame subscription exists, ``frames_wanted`` is true."""
        sub: Subscription[Frame] = Subscription(maxlen)
        with self._lock:
            self._frame_subscribers.append(sub)
            self.frames_wanted = True
        return sub

    def unsubscribe(self, sub: Subscription[Any]) -> None:
        """Stop an event or frame subscription (unknown ones are ignored)."""
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)
                self.state_wanted = bool(self._subscribers)
            if sub in self._frame_subscribers:
                self._frame_subscribers.remove(sub)
                self.frames_wanted = bool(self._frame_subscribers)

    def frame_due(self, camera: str) -> bool:
        """True while someone watches and ``camera`` had no frame for ``1 / frame_max_hz`` wall seconds."""
        if not self.frames_wanted:
            return False
        return time.monotonic() - self._frame_last.get(camera, -math.inf) >= 1.0 / self.frame_max_hz

    def publish_frame(self, camera: str, rgb: np.ndarray, t: float, episode: int | None = None) -> None:
        """Hand a camera image to the frame subscribers (encoding is theirs, off the control thread).

        Args:
            camera: the camera's name.
            rgb: ``(height, width, 3)`` uint8, not modified afterwards by the caller.
            t: sim seconds.
            episode: the episode it belongs to.
        """
        self._frame_last[camera] = time.monotonic()
        self._frame_seq += 1
        frame = Frame(camera, rgb, round(t, 6), episode, self._frame_seq)
        with self._lock:
            subscribers = list(self._frame_subscribers)
        for sub in subscribers:
            sub._put(frame)

    def emit(self, kind: str, t: float, episode: int | None, robot: str | None = None, **fields: Any) -> None:
        """Record one event: ``{"t", "wall", "episode", "kind", "robot", ...fields}``."""
        event = {"t": round(t, 6), "wall": time.time(), "episode": episode, "kind": kind, "robot": robot, **fields}
        self._file.write(json.dumps(event, separators=(",", ":"), default=_jsonable) + "\n")
        self._file.flush()
        self.counts[kind] = self.counts.get(kind, 0) + 1
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub._put(event)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
