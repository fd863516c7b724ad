"""`testbed serve-policy` and `testbed policy check` as a model team runs them, in real processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from testbed.bridge import GrpcActionSource, spawn_policy_server
from testbed.errors import PolicyUnavailable

TEAM_POLICY = '''
"""A model team's policy, written outside the testbed package."""
import numpy as np
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec


class MirrorPolicy:
    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain
        self.episode = None

    def spec(self) -> PolicySpec:
        return PolicySpec(
            observation={"observation.state": TensorSpec("float32", (7,)),
                         "observation.images.overhead": TensorSpec("uint8", (96, 96, 3))},
            action_kind=ActionKind.JOINT_POSITIONS, action_dim=7, chunk_size=4, control_hz=10.0,
            model_name="mirror", model_version="0.1",
        )

    def reset(self, episode: int) -> None:
        self.episode = episode

    def act(self, obs):
        row = obs["observation.state"] * np.float32(self.gain)
        return np.repeat(row[None, :], 4, axis=0).astype(np.float32)
'''


@pytest.fixture
def team_dir(tmp_path: Path) -> Path:
    (tmp_path / "team_policy.py").write_text(textwrap.dedent(TEAM_POLICY))
    return tmp_path


def test_policy_written_outside_the_package_is_served_and_drives_the_client(team_dir: Path) -> None:
    with spawn_policy_server("team_policy:MirrorPolicy", {"gain": "2.0"},
                             env={"PYTHONPATH": str(team_dir)}) as server:
        assert server.endpoint.startswith("grpc://127.0.0.1:")
        with GrpcActionSource(server.endpoint) as source:
            spec = source.spec()
            assert (spec.model_name, spec.chunk_size) == ("mirror", 4)
            source.reset(0)
            image = np.zeros((96, 96, 3), np.uint8)
            for step in range(10):
                state = np.full(7, step, np.float32)
                source.submit({"observation.state": state, "observation.images.overhead": image}, step)
                chunk = source.result(10.0)
                assert chunk is not None and chunk.step == step
                np.testing.assert_allclose(chunk.actions[0], 2.0 * state)


def test_policy_check_passes_a_good_server(team_dir: Path) -> None:
    with spawn_policy_server("team_policy:MirrorPolicy", env={"PYTHONPATH": str(team_dir)}) as server:
        out = subprocess.run(
            [sys.executable, "-m", "testbed.cli", "policy", "check", server.endpoint, "--acts", "200"],
            capture_output=True, text=True, timeout=120,
        )
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("health", "spec", "reset", "act stream", "act unary", "malformed: size mismatch",
                 "malformed: missing key", "malformed: NaN", "stats"):
        assert any(line.startswith(name) and "PASS" in line for line in out.stdout.splitlines()), name
    assert "latency stream: p50" in out.stdout
    assert out.stdout.rstrip().endswith("RESULT: PASS")


def test_policy_check_fails_a_server_returning_nan() -> None:
    with spawn_policy_server("testbed.bridge.reference:HoldPolicy", {"fault": "nan"}) as server:
        out = subprocess.run(
            [sys.executable, "-m", "testbed.cli", "policy", "check", server.endpoint, "--acts", "20"],
            capture_output=True, text=True, timeout=120,
        )
    assert out.returncode == 1
    assert "act stream" in out.stdout and "FAILED_PRECONDITION" in out.stdout
    assert "RESULT: FAIL" in out.stdout


def test_serving_beyond_loopback_without_a_token_is_refused() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "serve-policy", "testbed.bridge.reference:HoldPolicy",
         "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert "refusing to listen beyond loopback without a token" in out.stderr
    assert out.stdout == ""


def test_unknown_target_is_reported_in_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "serve-policy", "no_such_team_module:Policy"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert "cannot import module 'no_such_team_module'" in out.stderr
    assert "Traceback" not in out.stderr


def test_spawn_reports_a_child_that_dies_with_its_stderr() -> None:
    with pytest.raises(PolicyUnavailable, match=r"(?s)exited.*cannot import module"):
        spawn_policy_server("no_such_team_module:Policy", startup_timeout_s=30)


def test_team_policy_served_with_serve_policy_drives_a_scenario(team_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from testbed.eval.runner import run_scenario
    from testbed.scenario import load

    monkeypatch.setenv("PYTHONPATH", str(team_dir))  # the served child finds the team's module, we do not import it
    overrides = ["episodes:=1", "sim.max_episode_s:=2", "policy:={serve: 'team_policy:MirrorPolicy'}",
                 "cell.cameras:=[{name: overhead, width: 96, height: 96}]"]
    result = run_scenario(load("launch/factory_cell.yaml", overrides), runs_dir=tmp_path / "runs")
    events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    assert events[0]["policy"] == "mirror"
    kinds = {e["kind"] for e in events}
    assert "policy_timeout" not in kinds and "protective_stop" not in kinds
    assert result.metrics["policy_latency_ms"]["p50"] > 0
