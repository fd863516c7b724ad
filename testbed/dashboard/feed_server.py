"""The live feeds of this process's runs, served on a loopback port for dashboards to relay.

WebSocket only (``/api/runs/<run_id>/live``), read-only, no HTTP API: the run's process does as little as
possible for its viewers. A ``testbed dashboard`` process connects once per run and fans the feed out to
its browsers, so the run's interpreter serves one connection however many people watch. The server runs in
its own thread and event loop (the ``websockets`` library, without the ASGI layers), which also pumps the
feeds (20 Hz) and encodes camera frames: nothing of it runs on the control thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import threading
import traceback
from typing import Any

from testbed.dashboard.feed import HELLO_TIMEOUT_S, PUMP_PERIOD_S, LiveFeed, hello_message, send_end, serve_feed
from testbed.errors import BridgeConfigError

IDLE_PUMP_EVERY = 10  # a feed nobody watches is drained every 10th pump (its event queue holds 4096)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_PATH = re.compile(r"^/api/runs/([A-Za-z0-9][A-Za-z0-9_.-]{0,199})/live$")


def _loop_factory() -> Any:
    """uvloop's event loop where installed (``uvicorn[standard]`` brings it): its socket writes stay in C, so a
    send costs the run's interpreter no extra hand-over of the GIL."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class _Connection:
    """A ``websockets`` server connection as a feed channel."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def send(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._connection.send(text)
        except ConnectionClosed as exc:
            raise ConnectionError(str(exc)) from exc

    async def closed(self) -> None:
        await self._connection.wait_closed()

    async def close(self) -> None:
        await self._connection.close()


class FeedServer:
    """Serves the live feeds of the runs of this process on ``127.0.0.1:<port>``.

    Args:
        image_format: camera frames as ``jpeg`` or ``png``.
    """

    def __init__(self, image_format: str = "jpeg") -> None:
        self.image_format = image_format
        self.feeds: dict[str, LiveFeed] = {}
        self.port = 0
        self.error: BaseException | None = None
        self.ended_early = False
        self._ready = threading.Event()
        self._stopping = False
        self._reported: set[str] = set()
        self.thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)

    def attach(self, stream: Any) -> LiveFeed:
        """Follow a run of this process (the runner's ``events_hook``; called from the run's thread)."""
        feed = LiveFeed(stream, self.image_format)
        self.feeds[feed.run_id] = feed
        return feed

    def start(self) -> None:
        """Start serving; returns once the port is open.

        Raises:
            BridgeConfigError: the server did not start.
        """
        self.thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self.error is not None:
            raise BridgeConfigError(f"dashboard: the live feed server did not start: {self.error!r}")

    def stop(self) -> None:
        """Stop serving and join the thread.

        Raises:
            BridgeConfigError: the thread did not end within 10 s, or it had failed or ended by itself.
        """
        self._stopping = True
        self.thread.join(STOP_TIMEOUT_S)
        if self.thread.is_alive():
            raise BridgeConfigError(f"dashboard: the live feed thread did not stop within {STOP_TIMEOUT_S:.0f} s")
        if self.error is not None:
            raise BridgeConfigError(f"dashboard: the live feed thread failed: {self.error!r}") from self.error
        if self.ended_early:
            raise BridgeConfigError("dashboard: the live feed thread had ended before it was stopped")

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(self._main())
        except BaseException as exc:  # reported below, and by stop()
            self.error = exc
        finally:
            self._ready.set()
            if not self._stopping:  # the thread reports its own death: nobody asked it to end
                self.ended_early = True
                print(f"dashboard: the live feed thread ended unexpectedly: {self.error!r}", file=sys.stderr,
                      flush=True)

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        async with serve(self._handle, "127.0.0.1", 0, compression=None, max_size=1 << 16) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            count = 0
            while not self._stopping:
                self._pump(count)
                count += 1
                await asyncio.sleep(PUMP_PERIOD_S)
            for feed in self.feeds.values():
                feed.wake_all()

    def _pump(self, count: int) -> None:
        for run_id, feed in list(self.feeds.items()):
            if feed.closed or (not feed.viewers and count % IDLE_PUMP_EVERY):
                continue
            try:
                feed.pump()
            except Exception:  # a bug in one feed must not stop the others; it is reported once
                if run_id not in self._reported:
                    self._reported.add(run_id)
                    print(f"dashboard: live feed of {run_id} failed:\n{traceback.format_exc()}", file=sys.stderr,
                          flush=True)

    async def _handle(self, connection: Any) -> None:
        channel = _Connection(connection)
        match = _PATH.match(connection.request.path.split("?", 1)[0])
        try:
            hello = json.loads(await asyncio.wait_for(connection.recv(), HELLO_TIMEOUT_S))
        except Exception:
            await send_end(channel, 'send {"token": null, "frames": true} first')
            return
        feed = self.feeds.get(match.group(1)) if match else None
        if feed is None or feed.closed:
            await send_end(channel, "no such live run in this process")
            return
        with contextlib.suppress(OSError):
            feed.hello = hello_message(feed.run_dir)  # after run_start, which names the policy
        frames = bool(hello.get("frames", True)) if isinstance(hello, dict) else True
        await serve_feed(channel, feed, frames)
