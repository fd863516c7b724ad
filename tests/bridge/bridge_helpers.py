"""Test helper: an in-process policy server on its own event-loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from testbed.bridge.server import RunningServer, ServerOptions, start_policy_server
from testbed.policies.protocol import Policy


@contextmanager
def running_policy_server(factory: Callable[[], Policy], **options: object) -> Iterator[RunningServer]:
    """Serve ``factory`` on 127.0.0.1 (a free port) until the block ends."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        running = asyncio.run_coroutine_threadsafe(
            start_policy_server(factory, ServerOptions(**options)), loop  # type: ignore[arg-type]
        ).result(10)
        try:
            yield running
        finally:
            asyncio.run_coroutine_threadsafe(running.stop(0.1), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
