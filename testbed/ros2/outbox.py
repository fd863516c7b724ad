"""Events the ROS 2 side has to tell the run (a refused trajectory, a trajectory's end, the node's death).

The node's thread never writes the run's record itself: it leaves events here and the run's
loop emits them into its event stream (``events.jsonl`` and every live reader, the node's own
events topic included). Bounded, drop-oldest: a flood of bad commands never grows memory.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OUTBOX_SIZE = 256


@dataclass(frozen=True)
class RunEvent:
    """One event for the run's stream: its kind, the robot it concerns (or None) and its fields."""

    kind: str
    robot: str | None
    fields: dict[str, Any] = field(default_factory=dict)


class Outbox:
    """A bounded, drop-oldest queue of ``RunEvent`` from the ROS 2 threads to the run's loop."""

    def __init__(self, maxlen: int = OUTBOX_SIZE) -> None:
        self._items: deque[RunEvent] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, kind: str, robot: str | None, **fields: Any) -> None:
        """Leave an event for the run (the oldest waiting one is dropped when full)."""
        with self._lock:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(RunEvent(kind, robot, {"source": "ros2", **fields}))

    def drain(self, emit: Callable[[RunEvent], None]) -> int:
        """Hand every waiting event to ``emit`` (on the caller's thread); returns how many."""
        if not self._items:  # read without the lock: the loop pays one length check when nothing waits
            return 0
        with self._lock:
            items = list(self._items)
            self._items.clear()
        for item in items:
            emit(item)
        return len(items)
