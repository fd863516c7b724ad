"""Runs started from the dashboard, and runs live in other processes.

A run started from the page is a child process, ``python -m testbed.cli launch FILE ... --dashboard
--dashboard-port 0``, with its output in ``<runs>/.launches/<launch_id>.log`` (never an unread pipe), so the
server stays responsive whatever the run does, and a stop is a SIGTERM (the launch command records
``run_aborted`` and exits 143). The child serves its own live feed on a loopback port and says so in
``<run_dir>/live.json``; the dashboard relays that feed to its browsers. A run launched by hand with
``testbed launch --dashboard`` is found the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from testbed.dashboard.records import LIVE_FILE, BadName, RecordNotFound, check_name
from testbed.errors import ScenarioError, TestbedError
from testbed.scenario import Scenario, load
from testbed.scenario.overrides import dotted

TOKEN_ENV = "TESTBED_DASHBOARD_TOKEN"
LAUNCH_LOGS = ".launches"
START_TIMEOUT_S = 120.0
STOP_WAIT_S = 10.0

# Settings that name code to import, files to read or ports to open, and every setting that lets a party outside
# the run command a robot or choose the host whose policy drives them, stay in the launch files the operators put
# in launch/: a dashboard token lets a user start those scenarios, not run arbitrary code or hand the robots to the
# network. Setting -> why it is protected. ROS 2: enabling it and widening `commands` open an unauthenticated
# joint_trajectory path; `domain_id` and `namespace` choose whose trajectories reach the robots (another cell's
# namespace or domain would drive this cell's arms); `discovery_range` lets the whole network reach the node (even
# one that only publishes); `rate_hz` and `images` only shape what is published.
PROTECTED: dict[str, str] = {
    "policy.builtin": "it names code to run",
    "policy.serve": "it names code to run",
    "policy.args": "it is passed to code the policy runs",
    "policy.token_env": "it names a secret to read",
    "policy.endpoint": "it picks the host whose policy drives the robots",
    "policy.protocol": "it picks how the robots' policy host is spoken to",
    "workload.orders": "it names files to read",
    "sites.profiles": "it names files to read",
    "sites.sites[*].key_file": "it names files to read",
    "cell.robots[*].job": "it names files to read",
    "cell.robots[*].external": "it hands the robot to ControllerService or ROS 2 clients on the network",
    "controller_service": "it opens a port that commands the robots",
    "ros2.enabled": "it opens an unauthenticated ROS 2 command path to the robots",
    "ros2.commands": "it lets ROS 2 clients on the network command more robots",
    "ros2.domain_id": "it picks which ROS 2 network may command the robots",
    "ros2.namespace": "it picks whose ROS 2 trajectories reach the robots",
    "ros2.discovery_range": "it lets hosts on the network reach the ROS 2 node",
}
# values a protected setting may still be changed to: each removes or narrows what the launch file allowed
SAFE_VALUES: dict[str, tuple[Any, ...]] = {
    "policy.builtin": (None, "expert"), "policy.serve": (None, "expert"), "policy.endpoint": (None,),
    "policy.protocol": ("testbed",),  # only valid without an endpoint or with the launch file's grpc:// one
    "cell.robots[*].external": (False,), "ros2.enabled": (False,), "ros2.commands": ("external",),
    "ros2.discovery_range": ("localhost",),
}


class LaunchRefused(TestbedError):
    """A dashboard launch request names a launch file or an override it may not use (HTTP 422)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class LaunchFailed(TestbedError):
    """A run started from the dashboard exited before it began; the message carries its log's end."""


@dataclass(frozen=True)
class LiveInfo:
    """A run serving its own live feed: ``live.json`` in its directory.

    Args:
        run_id: the run.
        pid: its process.
        port: its loopback port.
    """

    run_id: str
    pid: int
    port: int


def announce(run_dir: Path, port: int) -> Path:
    """Write ``live.json`` for this process's run (atomically); returns its path."""
    path = run_dir / LIVE_FILE
    tmp = path.with_name(LIVE_FILE + ".tmp")
    tmp.write_text(json.dumps({"run_id": run_dir.name, "pid": os.getpid(), "port": port}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_live(run_dir: Path) -> LiveInfo | None:
    """The live feed a run announces, if its process still runs."""
    try:
        data = json.loads((run_dir / LIVE_FILE).read_text(encoding="utf-8"))
        info = LiveInfo(str(data["run_id"]), int(data["pid"]), int(data["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if info.run_id != run_dir.name or not 0 < info.port < 65536 or not _alive(info.pid):
        return None
    return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ChildRun:
    """A run this dashboard started."""

    run_id: str
    launch: str
    overrides: tuple[str, ...]
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def running(self) -> bool:
        return self.process.poll() is None


class Launcher:
    """Starts scenarios from ``launch_dir`` as child processes recorded in ``runs_dir``, and stops them.

    Args:
        runs_dir: where the children record their runs.
        launch_dir: the launch files a request may name (by file name only).

    The children run in this process's working directory, where launch files find the datasets they name.
    """

    def __init__(self, runs_dir: Path, launch_dir: Path) -> None:
        self.runs_dir = Path(runs_dir)
        self.launch_dir = Path(launch_dir)
        self.children: dict[str, ChildRun] = {}

    def launch_files(self) -> list[dict[str, Any]]:
        """The launch files a request may start, with their scenario's name and episode count."""
        out = []
        for path in sorted(self.launch_dir.glob("*.yaml")):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(data, dict) and "name" in data:
                out.append({"name": path.name, "scenario": data.get("name"), "episodes": data.get("episodes", 1)})
        return out

    def check(self, launch: str, overrides: Sequence[str]) -> Path:
        """Validate a launch request as the child would, before starting anything.

        Returns:
            the launch file.

        Raises:
            LaunchRefused: an unknown launch file, an invalid override (the message names the field), or an
                override of a setting that names code or files.
        """
        try:
            check_name(launch, "launch file")
        except BadName as exc:
            raise LaunchRefused(str(exc), "launch") from exc
        path = self.launch_dir / launch
        known = [f["name"] for f in self.launch_files()]
        if launch not in known:
            raise LaunchRefused(f"launch: unknown launch file {launch!r} (in {self.launch_dir}/: "
                                f"{', '.join(known) or 'none'})", "launch")
        for item in overrides:
            if item.startswith("-") or ":=" not in item:
                raise LaunchRefused(f"overrides: {item!r} is not key:=value (e.g. episodes:=3)", "overrides")
        try:
            base = load(path).scenario
            loaded = load(path, list(overrides)).scenario
        except ScenarioError as exc:
            raise LaunchRefused(f"overrides: {exc}", "overrides") from exc
        for name, reason in _protected_changes(base, loaded):
            raise LaunchRefused(f"overrides: {name} cannot be changed from the dashboard ({reason}); edit the "
                                "launch file instead", "overrides")
        return path

    async def start(self, launch: str, overrides: Sequence[str]) -> ChildRun:
        """Start a run and return once it has announced its live feed.

        Raises:
            LaunchRefused: see ``check``.
            LaunchFailed: the child exited, or did not announce itself in time.
        """
        path = await asyncio.to_thread(self.check, launch, overrides)
        logs = self.runs_dir / LAUNCH_LOGS
        logs.mkdir(parents=True, exist_ok=True)
        launch_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        log = logs / f"{launch_id}.log"
        before = set(os.listdir(self.runs_dir))
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}  # the child's own feed stays read-only
        command = [sys.executable, "-m", "testbed.cli", "launch", str(path.resolve()), *overrides,
                   "--runs-dir", str(self.runs_dir.resolve()), "--quiet", "--dashboard", "--dashboard-port", "0"]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        give_up = time.monotonic() + START_TIMEOUT_S
        while True:
            for name in set(os.listdir(self.runs_dir)) - before:
                info = read_live(self.runs_dir / name)
                if info is not None and info.pid == process.pid:
                    child = ChildRun(info.run_id, launch, tuple(overrides), process, log)
                    self.children[info.run_id] = child
                    return child
            if process.poll() is not None:
                raise LaunchFailed(f"{launch}: the run exited with code {process.returncode} before it started: "
                                   f"{_tail(log)}")
            if time.monotonic() > give_up:
                await asyncio.to_thread(self._terminate, process)  # up to 10 s: not on the serving loop
                raise LaunchFailed(f"{launch}: the run did not start within {START_TIMEOUT_S:.0f} s: {_tail(log)}")
            await asyncio.sleep(0.1)

    def stop(self, run_id: str) -> ChildRun:
        """Send SIGTERM to a run this dashboard started (it ends its record with ``run_aborted``).

        Raises:
            RecordNotFound: the run was not started by this dashboard.
        """
        child = self.children.get(run_id)
        if child is None:
            raise RecordNotFound(f"run {run_id!r} was not started by this dashboard")
        if child.running:
            child.process.send_signal(signal.SIGTERM)
        return child

    def close(self) -> list[str]:
        """Stop every child still running (SIGTERM, then SIGKILL after 10 s); returns those that had to be killed."""
        running = [c for c in self.children.values() if c.running]
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        killed = []
        for child in running:
            if not self._wait(child.process, STOP_WAIT_S):
                child.process.kill()
                child.process.wait()
                killed.append(child.run_id)
        return killed

    def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGTERM)
        if not self._wait(process, STOP_WAIT_S):
            process.kill()
            process.wait()

    @staticmethod
    def _wait(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def _protected_changes(base: Scenario, new: Scenario) -> list[tuple[str, str]]:
    """The protected settings an override changed to something other than a safe value, with why they are."""
    before, after = base.model_dump(mode="json"), new.model_dump(mode="json")
    changed = []
    for pattern, reason in PROTECTED.items():
        for path in _expand(pattern.replace("[*]", ".*").split("."), before, after):
            old, value = _get(before, path), _get(after, path)
            if old != value and value not in SAFE_VALUES.get(pattern, ()):
                changed.append((dotted(path), reason))
    return changed


def _expand(parts: list[str], *trees: Any) -> list[list[str | int]]:
    """Concrete paths for a pattern whose ``*`` stands for every index of a list in any of ``trees``."""
    paths: list[list[str | int]] = [[]]
    for part in parts:
        if part != "*":
            paths = [[*p, part] for p in paths]
            continue
        grown: list[list[str | int]] = []
        for p in paths:
            size = max((len(v) for t in trees if isinstance(v := _get(t, p), list)), default=0)
            grown.extend([*p, i] for i in range(size))
        paths = grown
    return paths


def _get(tree: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        if isinstance(part, int):
            tree = tree[part] if isinstance(tree, list) and part < len(tree) else None
        else:
            tree = tree.get(part) if isinstance(tree, dict) else None
    return tree
