"""The run's event stream: ``events.jsonl`` flushed as it happens, plus live subscribers.

Readers (dashboard, ROS 2 bridge) get the same objects through bounded queues
that drop the oldest entry when full, so a slow reader never holds the loop back.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO


class Subscription:
    """A bounded, drop-oldest queue of events for one live reader."""

    def __init__(self, maxlen: int) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._ready = threading.Condition()
        self.dropped = 0

    def _put(self, event: dict[str, Any]) -> None:
        with self._ready:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(event)
            self._ready.notify()

    def get(self, timeout_s: float | None = None) -> dict[str, Any] | None:
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

    def publish_state(self, state: dict[str, Any]) -> None:
        """Replace the latest-state snapshot (joint positions, controller states, running tallies)."""
        self._snapshot = state  # one reference swap: readers never see a half-written snapshot

    def snapshot(self) -> dict[str, Any]:
        """The latest state the run published; readers must not modify it."""
        return self._snapshot

    def subscribe(self, maxlen: int = 1024) -> Subscription:
        """Start receiving every event emitted from now on."""
        sub = Subscription(maxlen)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

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
