"""Serving the dashboard: in the foreground (``testbed dashboard``) or beside a run (``testbed launch --dashboard``)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from testbed.dashboard.access import check_bind
from testbed.dashboard.records import LIVE_FILE
from testbed.errors import BridgeConfigError, FeatureUnavailable

STOP_TIMEOUT_S = 10.0
END_GRACE_S = 10.0  # how long a finished run's relays get to receive its end before the dashboard is told


def _uvicorn() -> Any:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise FeatureUnavailable(f"the dashboard needs its extra: pip install 'testbed[dashboard]' "
                                 f"(missing: {exc.name})") from exc
    return uvicorn


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Raises:
        BridgeConfigError: the address cannot be bound (in use, not this host's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BridgeConfigError(f"dashboard --host {host} --port {port}: cannot listen there "
                                f"({exc.strerror or exc})") from exc
    sock.listen(128)  # connections queue from now on, before uvicorn's loop takes the socket over
    return sock


def _config(app: Any) -> Any:
    uvicorn = _uvicorn()
    # no permessage-deflate: it compressed every client's copy of every frame (JPEG, which hardly shrinks)
    # and was most of the server thread's time with 8 clients
    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws_max_size=1 << 20,
                          ws_per_message_deflate=False, timeout_graceful_shutdown=5)


class DashboardServer:
    """uvicorn serving the app in a thread of this process, on a socket bound before it starts.

    Args:
        app: the ASGI app.
        host: address to listen on.
        port: port (0: any free one; ``port`` tells which).
    """

    def __init__(self, app: Any, host: str, port: int) -> None:
        uvicorn = _uvicorn()
        self.host = host
        self.socket = bind(host, port)
        self.port: int = self.socket.getsockname()[1]
        self.server = uvicorn.Server(_config(app))
        self.error: BaseException | None = None
        self.ended_early = False  # the thread ended without being asked to (uvicorn gave up, e.g. at start-up)
        self._stopping = False
        self.thread = threading.Thread(target=self._run, name="dashboard-server", daemon=True)

    def start(self) -> None:
        """Start serving; returns at once."""
        self.thread.start()

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        except BaseException as exc:  # uvicorn exits (SystemExit) when its start-up fails; reported below
            self.error = exc
        finally:
            if not self._stopping:  # the thread reports its own death: nobody asked it to end
                self.ended_early = True
                detail = f": {self.error!r}" if self.error is not None else ""
                print(f"dashboard: the server thread ended unexpectedly{detail}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        """Stop serving and join the thread.

        Raises:
            BridgeConfigError: the server thread did not end within 10 s, or it had failed or ended by itself.
        """
        self._stopping = True
        self.server.should_exit = True
        self.thread.join(STOP_TIMEOUT_S)
        self.socket.close()
        if self.thread.is_alive():
            raise BridgeConfigError(f"dashboard: the server thread did not stop within {STOP_TIMEOUT_S:.0f} s")
        if self.error is not None:
            raise BridgeConfigError(f"dashboard: the server thread failed: {self.error!r}") from self.error
        if self.ended_early:
            raise BridgeConfigError("dashboard: the server thread had ended before it was stopped (see its log)")


def serve(*, runs_dir: Path, launch_dir: Path, host: str, port: int, token: str | None,
          announce_to: Callable[[str], None] | None = print, fd: int | None = None,
          owner_pid: int | None = None) -> None:
    """Serve the dashboard in the foreground until interrupted (``testbed dashboard``).

    Args:
        fd: a listening socket handed over by the parent (``testbed launch --dashboard``) instead of binding.
        owner_pid: that parent: a stop of its run is a SIGTERM to it, and the dashboard ends when it is gone.

    Raises:
        BridgeConfigError: beyond loopback without a token, or the address cannot be bound.
        FeatureUnavailable: the ``dashboard`` extra is not installed.
    """
    check_bind(host, token)
    uvicorn = _uvicorn()
    from testbed.dashboard.app import Dashboard, create_app

    dashboard = Dashboard(runs_dir, launch_dir, token)
    if owner_pid is not None and owner_pid == os.getppid():
        dashboard.owner_pid = owner_pid
    sock = socket.socket(fileno=fd) if fd is not None else bind(host, port)
    if announce_to is not None:
        mode = "runs can be started and stopped with the token" if token else "read-only: no TESTBED_DASHBOARD_TOKEN"
        announce_to(f"dashboard on http://{_shown(host)}:{sock.getsockname()[1]}/ ({mode}); runs from {runs_dir}/")
    try:
        uvicorn.Server(_config(create_app(dashboard))).run(sockets=[sock])
    finally:
        sock.close()


@contextlib.contextmanager
def serve_live(*, runs_dir: Path, host: str, port: int, token: str | None, launch_dir: Path = Path("launch"),
               image_format: str = "jpeg", announce_to: Callable[[str], None] = print
               ) -> Iterator[Callable[[Any], None]]:
    """Serve the dashboard while a run of this process is live; yields the runner's ``events_hook``.

    The run's process serves only its live feed, on a loopback port it announces in ``<run_dir>/live.json``;
    the dashboard that browsers use (on ``host:port``) is a ``testbed dashboard`` child process, which relays
    that feed over one connection however many browsers watch: their traffic never competes with the run for
    its interpreter. A stop from the page (with the token) is a SIGTERM to this process (``run_aborted``).

    Args:
        image_format: camera frames as ``jpeg`` or ``png`` (encoded in the feed's thread, never the run's).

    Raises:
        BridgeConfigError: beyond loopback without a token, or ``host:port`` cannot be bound.
        FeatureUnavailable: the ``dashboard`` extra is not installed.
    """
    check_bind(host, token)
    _uvicorn()
    from testbed.dashboard.feed_server import FeedServer
    from testbed.dashboard.launcher import announce

    public = bind(host, port)  # bound here: a busy port is this command's error, and the port is known at once
    stack = contextlib.ExitStack()
    with stack:
        stack.callback(public.close)
        server = FeedServer(image_format)
        server.start()
        stack.callback(server.stop)
        command = [sys.executable, "-m", "testbed.cli", "dashboard", "--host", host, "--port", str(port),
                   "--runs", str(runs_dir), "--launch-dir", str(launch_dir),
                   "--fd", str(public.fileno()), "--owner-pid", str(os.getpid())]
        child = subprocess.Popen(command, pass_fds=(public.fileno(),), stdin=subprocess.DEVNULL)
        stack.callback(_stop_child, child)
        base = f"http://{_shown(host)}:{public.getsockname()[1]}/"
        public.close()  # the child has it now
        announce_to(f"dashboard on {base}")
        feeds: list[Any] = []

        def hook(stream: Any) -> None:
            feed = server.attach(stream)
            feeds.append(feed)
            announce(feed.run_dir, server.port)
            announce_to(f"live view: {base}#/run/{feed.run_id}")

        try:
            yield hook
        finally:
            for feed in feeds:
                feed.finish()
                with contextlib.suppress(OSError):
                    (feed.run_dir / LIVE_FILE).unlink()
            give_up = time.monotonic() + END_GRACE_S
            while (time.monotonic() < give_up and server.thread.is_alive()
                   and any(not f.closed or f.viewers for f in feeds)):
                time.sleep(0.05)
            # the dashboard process passes the end on to its browsers, then exits by itself (else: SIGTERM)
            if child.poll() is not None:
                print(f"dashboard: its server process had exited early (code {child.returncode})", file=sys.stderr)
            else:
                child.send_signal(signal.SIGUSR1)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(STOP_TIMEOUT_S)


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM the dashboard process if it still runs (it stops the runs it started), SIGKILL it after 10 s."""
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        print(f"dashboard: its server process did not stop within {STOP_TIMEOUT_S:.0f} s and was killed",
              file=sys.stderr)


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host
