"""The run's side of its ROS 2 node: the node's process, the feed to it and the requests from it.

The node (``testbed.ros2.process``) runs in a child process so rclpy never takes the control loop's
interpreter time. Here, in the run's process, two threads of the bridge do the rest:

- the feed thread, at ``rate_hz`` on the wall clock, reads what the run publishes (the latest-state
  snapshot and the events of ``testbed.eval.events.EventStream``; camera frames when the stream offers
  them and a ROS 2 subscriber watches the images, since the run renders them for viewers) and the
  controller backend's states, and sends them in one ``Tick``;
- the request thread waits on the pipe for what the graph sends: trajectories (checked and queued
  through the controller backend, the ControllerService's hand-off) and lifecycle requests (applied the
  same way, answered once the control loop took them).

The control loop's thread calls nothing here but ``Outbox.drain`` and ``commanding``, which never wait.
``close`` ends the node (its last events acknowledged), joins both threads and the process, and raises
if one of them does not end; one that died while the run went on said so when it happened.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import TimeoutError
from dataclasses import dataclass
from typing import Any

from testbed.errors import ControllerError, FeatureUnavailable, InvalidCommand, TestbedError
from testbed.ros2.commands import TrajectoryCommands
from testbed.ros2.names import TopicNames
from testbed.ros2.outbox import Outbox
from testbed.ros2.spec import CellSpec

EVENTS_QUEUE = 4096  # events kept for the feed between two ticks (drop-oldest beyond)
START_TIMEOUT_S = 60.0  # the node's process imports rclpy and builds every publisher first
JOIN_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 2.0  # a lifecycle request waits this long for the control loop to apply it
NODE_NAMESPACE = "/testbed"

_REQUIRED = ("rclpy", "rclpy.lifecycle", "std_msgs.msg", "sensor_msgs.msg", "trajectory_msgs.msg",
             "geometry_msgs.msg", "rosgraph_msgs.msg", "lifecycle_msgs.msg", "visualization_msgs.msg",
             "diagnostic_msgs.msg", "std_srvs.srv", "tf2_msgs.msg")


def require_ros2() -> None:
    """Check that rclpy and every message package the node uses import (the node's process needs them all).

    Raises:
        FeatureUnavailable: one line naming what is missing and how to get it.
    """
    import importlib

    for module in _REQUIRED:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            if module.startswith("tf2_msgs"):
                fix = "build it with `make venv` (or: python scripts/build_ros2_msgs.py, which needs cmake)"
            else:
                fix = "install the ROS 2 extra: pip install -e '.[ros2]' (make venv does)"
            raise FeatureUnavailable(f"ros2.enabled: {module} does not import ({exc}); {fix}") from exc


@dataclass(frozen=True)
class Ros2Settings:
    """The node's settings (the launch file's ``ros2`` section, without ``enabled``).

    ``discovery_range`` is the node process's ``ROS_AUTOMATIC_DISCOVERY_RANGE`` (``localhost``: only this
    machine reaches the node; ``subnet``: any host on the network, for a node that only publishes).
    """

    domain_id: int | None = None
    namespace: str = "/cell"
    rate_hz: float = 50.0
    images: bool = True
    discovery_range: str = "localhost"

    @classmethod
    def of(cls, section: Any) -> Ros2Settings:
        """The settings of a launch file's ``ros2`` section (``testbed.scenario.schema.Ros2Config``)."""
        return cls(domain_id=section.domain_id, namespace=section.namespace, rate_hz=section.rate_hz,
                   images=section.images, discovery_range=section.discovery_range)

    @property
    def loopback(self) -> bool:
        """True when only this machine can reach the node (the graph may then send it commands)."""
        return self.discovery_range == "localhost"


def node_environment(settings: Ros2Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The node process's environment: ``base`` (the run's, by default) with the settings' discovery range.

    ROS 2 has no authentication (this install's Fast DDS has no SROS2 security), so on loopback the static
    peers a caller's environment may name are dropped too: they would reach the node from other hosts.
    """
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = settings.discovery_range.upper()
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; the range says it
    if settings.loopback:
        env.pop("ROS_STATIC_PEERS", None)
    return env


def node_name(scenario: str) -> str:
    """The run node's name: the scenario's name with characters ROS 2 refuses replaced by ``_``."""
    name = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in scenario)
    return name if name[:1].isalpha() else f"run_{name}"


class Ros2Bridge:
    """The run as a ROS 2 node; ``start`` it, then ``close`` it when the run ends.

    Args:
        settings: domain, namespace, rate, images.
        cell: what the node describes (robots, fixed boxes, cameras, part shapes).
        events: the run's event stream (``subscribe``, ``snapshot``; ``subscribe_frames`` if it offers it).
        backend: the run's controller backend (``ControlLoopBackend``): states, lifecycle, trajectories.

    Raises:
        FeatureUnavailable: rclpy or a message package is missing (``start``).
        TestbedError: the node's process did not start (``start``; the message says why).
    """

    def __init__(self, settings: Ros2Settings, cell: CellSpec, events: Any, backend: Any) -> None:
        if settings.discovery_range not in ("localhost", "subnet"):
            raise TestbedError(f"ros2.discovery_range: expected localhost or subnet, got {settings.discovery_range!r}")
        takers = [r.name for r in cell.robots if r.commandable]
        if not settings.loopback and takers:
            raise TestbedError(f"ros2.discovery_range: subnet would let any host on the network command "
                               f"{', '.join(takers)} (ROS 2 has no authentication here); commands stay on loopback")
        self.settings = settings
        self.cell = cell
        self.names = TopicNames(settings.namespace)
        self.outbox = Outbox()
        self.commands = TrajectoryCommands(cell.robots, backend, self.outbox)
        self.errors: list[str] = []
        self._events = events
        self._backend = backend
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._process: Any = None
        self._conn: Any = None
        self._send_lock = threading.Lock()
        self._closed = threading.Event()  # the node said it closed (or the pipe broke)
        self._event_sub: Any = None
        self._frame_sub: Any = None
        self._last_snapshot: Any = None

    # ------------------------------------------------------------------ life
    def start(self) -> Ros2Bridge:
        """Start the node's process, wait until it is up, then the feed and request threads."""
        require_ros2()
        from multiprocessing.connection import Connection

        # a fresh interpreter (never a fork of one that runs threads), not multiprocessing's spawn, which
        # would import the caller's __main__ again
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen([sys.executable, "-m", "testbed.ros2.process", str(theirs.fileno())],
                                             pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, env=node_environment(self.settings))
        self._conn = Connection(ours.detach())
        try:
            self._send("start", self.settings, self.cell)
            self._await_ready()
        except BaseException:
            self._kill()
            raise
        self._event_sub = self._events.subscribe(maxlen=EVENTS_QUEUE)
        self._threads = [threading.Thread(target=self._guarded, args=(name, body), name=name, daemon=True)
                         for name, body in (("ros2-feed", self._feed), ("ros2-requests", self._requests))]
        for thread in self._threads:
            thread.start()
        return self

    def _await_ready(self) -> None:
        if not self._conn.poll(START_TIMEOUT_S):
            raise TestbedError(f"ros2: the node's process did not start within {START_TIMEOUT_S:g} s")
        try:
            message = self._conn.recv()
        except EOFError as exc:
            raise TestbedError(f"ros2: the node's process ended while starting (exit code "
                               f"{self._process.wait(JOIN_TIMEOUT_S)})") from exc
        if message[0] != "ready":
            raise TestbedError(f"ros2: {message[1] if len(message) > 1 else message}")

    def close(self, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """End the node (its last events acknowledged first), join both threads and its process.

        A thread or the node's process that died while the run went on was reported when it happened
        (stderr and a ``ros2_error`` event: the run's record is kept, the node is not worth the run); the
        reports stay in ``errors``.

        Raises:
            TestbedError: a thread or the process did not end within ``timeout_s``.
        """
        if self._process is None:
            return
        self._stop.set()
        feed = self._threads[0] if self._threads else None
        if feed is not None:
            feed.join(timeout_s)  # the last tick (run_end) goes out before the close request
        try:
            self._send("close")
        except (BrokenPipeError, OSError):
            self._closed.set()
        stuck = [] if self._closed.wait(timeout_s) else ["the node's process (no answer to close)"]
        for thread in self._threads:
            thread.join(timeout_s)
            if thread.is_alive():
                stuck.append(f"thread {thread.name}")
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            stuck.append("the node's process")
            self._kill()
        for sub in (self._event_sub, self._frame_sub):
            if sub is not None:
                self._events.unsubscribe(sub)
        self._conn.close()
        self._process = None
        if stuck:
            raise TestbedError(f"ros2: {', '.join(stuck)} did not end within {timeout_s:g} s of close()")

    def __enter__(self) -> Ros2Bridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def commanding(self, robot: str) -> bool:
        """True while a trajectory from the ROS 2 graph drives ``robot`` (cheap; any thread)."""
        return self.commands.commanding(robot)

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(JOIN_TIMEOUT_S)

    def _send(self, *message: Any) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _guarded(self, name: str, body: Any) -> None:
        try:
            body()
        except BaseException as exc:  # reported here and raised by close(): a dead thread must not pass silently
            self._report(f"the bridge's {name} thread died: {type(exc).__name__}: {exc}")

    def _report(self, why: str) -> None:
        self.errors.append(why)
        print(f"ros2: {why}", file=sys.stderr, flush=True)
        self.outbox.put("ros2_error", None, reason=why)

    # ------------------------------------------------------------------ the feed thread
    def _feed(self) -> None:
        from testbed.ros2.process import ControllerState, Tick

        period = 1.0 / self.settings.rate_hz
        next_t = time.monotonic()
        final = False
        while not final:
            final = self._stop.is_set()  # one more tick after close() asked: the run's last events
            tick = Tick()
            while (event := self._event_sub.get(0)) is not None:
                tick.events.append(event)
            snap = self._events.snapshot()
            if snap is not self._last_snapshot:  # the run swaps the whole snapshot: identity says it changed
                self._last_snapshot = tick.snapshot = snap
            frames = self._frame_sub
            if frames is not None:
                while (frame := frames.get(0)) is not None:
                    tick.frames.append((frame.camera, frame.t, frame.episode, frame.rgb))
            self.commands.poll()
            for robot in self.cell.robots:
                s = self._backend.snapshot(robot.name)
                tick.controllers[robot.name] = ControllerState(s.lifecycle_state, s.last_error, s.job,
                                                               float(s.speed_scale), self.commanding(robot.name))
            try:
                self._send("tick", tick)
            except (BrokenPipeError, OSError):
                return  # the node's process is gone: the request thread reports it
            next_t += period
            now = time.monotonic()
            if next_t < now:  # late (the machine was busy): skip the ticks missed, never burst
                next_t = now
            self._stop.wait(next_t - now)

    # ------------------------------------------------------------------ the request thread
    def _requests(self) -> None:
        from testbed.bridge.controller_backend import Transition

        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                if not self._closed.is_set():
                    try:
                        code: int | None = self._process.wait(1.0)
                    except subprocess.TimeoutExpired:
                        code = None
                    self._report(f"the node's process ended unexpectedly (exit code {code})")
                self._closed.set()
                return
            kind = message[0]
            if kind == "trajectory":
                self.commands.on_trajectory(*message[1:])
            elif kind == "change_state":
                request, robot, transition = message[1:]
                self._send("reply", request, *self._change_state(robot, Transition[transition]))
            elif kind == "report":
                _, event, robot, fields = message
                self.outbox.put(event, robot, **fields)
            elif kind == "images":
                self._watch_frames(bool(message[1]))
            elif kind == "error":
                self._report(message[1])
            elif kind == "closed":
                if message[1]:
                    self._report(message[1])
                self._closed.set()
                return

    def _watch_frames(self, watched: bool) -> None:
        """Take camera frames from the run only while someone watches the images: the run renders them for us."""
        subscribe_frames = getattr(self._events, "subscribe_frames", None)  # absent: images are not offered
        if watched and self._frame_sub is None and self.settings.images and self.cell.cameras and subscribe_frames:
            self._frame_sub = subscribe_frames(maxlen=2 * len(self.cell.cameras))
        elif not watched and self._frame_sub is not None:
            sub, self._frame_sub = self._frame_sub, None
            self._events.unsubscribe(sub)

    def _change_state(self, robot: str, transition: Any) -> tuple[bool, str, str]:
        """Apply a lifecycle request through the backend; (ok, state after it, why not)."""
        try:
            future = self._backend.change_state(robot, transition)
        except InvalidCommand as exc:
            return False, "", str(exc)
        try:
            return True, str(future.result(COMMAND_TIMEOUT_S)), ""
        except TimeoutError:
            future.cancel()  # a late transition must not happen after the caller was told it failed
            return False, "", (f"the control loop did not apply it within {COMMAND_TIMEOUT_S:g} s (is the run "
                               "between episodes or over?)")
        except ControllerError as exc:
            return False, "", str(exc)
