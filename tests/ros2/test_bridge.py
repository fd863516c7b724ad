"""The bridge's own life: the node's process started, fed, closed; its death reported, never the run's."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from testbed.bridge.controller_backend import ControlLoopBackend, TickerThread
from testbed.control import ControlLoop
from testbed.eval.events import EventStream
from testbed.robots import load_robot
from testbed.ros2 import CellSpec, RobotSpec, Ros2Bridge, Ros2Settings

GP7 = load_robot("gp7")
DOMAIN = 1 + (os.getpid() * 7 + 60) % 100


def test_a_dead_node_process_is_reported_and_the_run_goes_on(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    loop = ControlLoop([GP7], 0.004)
    loop.reset(np.asarray(GP7.home, dtype=np.float64)[None, :].copy())
    backend = ControlLoopBackend(loop, names=["arm1"], job_loader=False)
    spec = RobotSpec("arm1", "gp7", GP7.urdf_path, tuple(GP7.joint_names), GP7.tcp_link, (0.0, 0.0, 0.3),
                     (0.0, 0.0, 0.0), commandable=True)
    events = EventStream(tmp_path / "events.jsonl")
    bridge = Ros2Bridge(Ros2Settings(domain_id=DOMAIN), CellSpec("unit", (spec,)), events, backend)
    with TickerThread(backend):
        bridge.start()
        os.kill(bridge._process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while not bridge.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.wait_cycles(10, timeout_s=5.0)  # the loop never noticed
        bridge.close()  # joins what is left; the death was reported, not raised
    reported: list = []
    bridge.outbox.drain(reported.append)
    assert [e.kind for e in reported] == ["ros2_error"]
    assert "ended unexpectedly (exit code -9)" in reported[0].fields["reason"]
    backend.close()
    events.close()
