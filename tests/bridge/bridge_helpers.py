"""Test helper: an in-process policy server on background threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from testbed.bridge.server import RunningServer, ServerOptions, start_policy_server
from testbed.policies.protocol import Policy


@contextmanager
def running_policy_server(factory: Callable[[], Policy], **options: object) -> Iterator[RunningServer]:
    """Serve ``factory`` on 127.0.0.1 (a free port) until the block ends."""
    running = start_policy_server(factory, ServerOptions(**options))  # type: ignore[arg-type]
    try:
        yield running
    finally:
        running.stop(0.1)
