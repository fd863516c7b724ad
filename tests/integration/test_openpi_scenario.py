"""The default factory cell driven by openpi's own WebsocketPolicyServer through OpenPiActionSource.

The first test goes through the launch file (``policy: {endpoint: ws://..., protocol: openpi}``);
the fault test wraps the source the run loop opens so it can kill the server mid-episode.
The server's ``hold`` policy answers the observed joint state as absolute targets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from testbed.bridge.openpi_peer import OpenPiServer
from testbed.bridge.openpi_source import OpenPiActionSource, openpi_spec
from testbed.eval import runner
from testbed.policies.protocol import TensorSpec
from testbed.policies.source import ActionChunk
from testbed.scenario.loader import load

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "factory_cell.yaml"
GP7_JOINTS = 6
STATE = TensorSpec("float32", (GP7_JOINTS + 1,))  # joints + suction, as the cell observes them
OBS_KEYS = {"observation.state": "observation/state"}


def _events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _open_source(endpoint: str, opened: list[OpenPiActionSource]) -> Any:
    def open_action_source(cfg: Any, robot: Any, stack: ExitStack, **_: Any) -> OpenPiActionSource:
        assert robot.model == "gp7"
        spec = openpi_spec(
            available={"observation.state": STATE, "observation.environment_state": TensorSpec("float32", (11,))},
            obs_keys=OBS_KEYS,
            action_dim=GP7_JOINTS + 1,
            chunk_size=10,
            control_hz=10.0,
        )
        source = OpenPiActionSource(endpoint, spec=spec, obs_keys=OBS_KEYS, deadline_s=cfg.deadline_s)
        stack.callback(source.close)
        opened.append(source)
        return source

    return open_action_source


def test_factory_cell_episode_runs_from_openpi_server(tmp_path: Path) -> None:
    expect = {"observation/state": ("float32", (GP7_JOINTS + 1,))}
    with OpenPiServer("hold", chunk=10, action_dim=GP7_JOINTS + 1, expect=expect) as srv:
        policy = (f"policy:={{endpoint: '{srv.endpoint}', protocol: openpi, control_hz: 10, chunk_size: 10, "
                  "obs_keys: {observation.state: observation/state}}")
        loaded = load(LAUNCH, ["episodes:=1", "sim.max_episode_s:=3", policy])
        result = runner.run_scenario(loaded, runs_dir=tmp_path)
    events = _events(result.run_dir)
    kinds = [e["kind"] for e in events]
    assert "policy_timeout" not in kinds
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert events[0]["policy"] == f"openpi@{srv.endpoint}"
    assert result.metrics["safety_stops"] == 0
    assert result.metrics["policy_latency_ms"]["p50"] > 0


class _KillAfter:
    """Delegates to a source; kills the server after ``n`` submits and restarts it on the next reset."""

    def __init__(self, source: OpenPiActionSource, server: OpenPiServer, n: int) -> None:
        self._source, self._server, self._left = source, server, n

    def spec(self) -> Any:
        return self._source.spec()

    def reset(self, episode: int) -> None:
        if episode > 0:
            self._server.start()
        self._source.reset(episode)

    def submit(self, obs: Mapping[str, np.ndarray], step: int) -> None:
        self._left -= 1
        if self._left == 0:
            self._server.kill()
        self._source.submit(obs, step)

    def result(self, timeout_s: float | None) -> ActionChunk | None:
        return self._source.result(timeout_s)

    def close(self) -> None:
        self._source.close()


def test_killed_openpi_server_stops_the_episode_and_the_next_one_reconnects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[OpenPiActionSource] = []
    srv = OpenPiServer("hold", chunk=10, action_dim=GP7_JOINTS + 1)
    srv.start()
    try:
        open_plain = _open_source(srv.endpoint, opened)

        def open_killing(cfg: Any, robot: Any, stack: ExitStack, **kw: Any) -> Any:
            return _KillAfter(open_plain(cfg, robot, stack, **kw), srv, n=10)

        monkeypatch.setattr(runner, "open_action_source", open_killing)
        loaded = load(LAUNCH, ["episodes:=2", "sim.max_episode_s:=3"])
        result = runner.run_scenario(loaded, runs_dir=tmp_path)
    finally:
        srv.stop()
    events = _events(result.run_dir)
    timeouts = [e for e in events if e["kind"] == "policy_timeout"]
    assert timeouts and all(e["episode"] == 0 for e in timeouts)
    assert srv.endpoint in timeouts[0]["reason"]
    ends = {e["episode"]: e for e in events if e["kind"] == "episode_end"}
    assert ends[0]["reason"] == "protective_stop"
    assert ends[1]["reason"] != "protective_stop" and ends[1]["policy_timeouts"] == 0
    assert result.metrics["episodes"] == 2
    assert opened[0].stats().reconnects == 1
