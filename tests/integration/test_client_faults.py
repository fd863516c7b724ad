"""Policy clients under faults, with real server processes: a server that hangs, a client worker that fails.

The gRPC server is ``testbed serve-policy`` running a policy of ``hanging_policies`` (found through
PYTHONPATH, as a model team's module would be); the openpi server is openpi's own
``WebsocketPolicyServer`` from its cached virtualenv. A failing client worker is a fault injected
into the client's own code in this process: the servers and the run are real.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from testbed.bridge import openpi_source as openpi_module
from testbed.bridge import spawn_policy_server
from testbed.bridge.client import GrpcActionSource
from testbed.bridge.openpi_peer import OpenPiServer
from testbed.bridge.openpi_source import OpenPiActionSource
from testbed.errors import PolicyClientFailed, PolicyUnavailable
from testbed.eval.runner import RunResult, run_scenario
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec
from testbed.scenario import load

HERE = Path(__file__).resolve().parent
LAUNCH = HERE.parents[1] / "launch" / "factory_cell.yaml"
GP7_JOINTS = 6
OPENPI_OBS_KEYS = "{observation.state: observation/state}"
SPEC = PolicySpec(
    observation={"observation.state": TensorSpec("float32", (7,))},
    action_kind=ActionKind.JOINT_POSITIONS,
    action_dim=7,
    chunk_size=10,
    control_hz=10.0,
)


def _events(result: RunResult) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]


def _episode_ends(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {e["episode"]: e for e in events if e["kind"] == "episode_end"}


def _openpi_policy(endpoint: str, deadline_s: float = 0.3) -> str:
    return (f"policy:={{endpoint: '{endpoint}', protocol: openpi, control_hz: 10, chunk_size: 10, "
            f"deadline_s: {deadline_s}, obs_keys: {OPENPI_OBS_KEYS}}}")


def _assert_only_the_first_episode_was_hit(result: RunResult, episodes: int) -> list[dict[str, Any]]:
    """The run completed; episode 0 is marked with policy timeouts; every later one ran without any."""
    events = _events(result)
    assert result.metrics["episodes"] == episodes
    ends = _episode_ends(events)
    assert sorted(ends) == list(range(episodes))
    assert ends[0]["policy_timeouts"] > 0
    timeouts = [e for e in events if e["kind"] == "policy_timeout"]
    assert {e["episode"] for e in timeouts} == {0}
    assert timeouts[0]["step"] == 2  # the 3rd request
    for episode in range(1, episodes):
        assert ends[episode]["reason"] != "protective_stop", ends[episode]
        assert ends[episode]["policy_timeouts"] == 0, ends[episode]
    return events


# ----- a server that hangs on its 3rd request ------------------------------------------------------


def test_grpc_server_hanging_on_a_request_stops_that_episode_and_the_next_ones_reconnect(tmp_path: Path) -> None:
    args = {"hang_on": "3", "hang_s": "120"}  # hangs far beyond the run: only a new session gets answers
    with spawn_policy_server("hanging_policies:HangingExpert", args, env={"PYTHONPATH": str(HERE)}) as server:
        scenario = load(LAUNCH, ["episodes:=3", "seed:=4", "policy.serve:=null",
                                 f"policy.endpoint:={server.endpoint}", "policy.deadline_s:=0.3"])
        result = run_scenario(scenario, runs_dir=tmp_path)
    events = _assert_only_the_first_episode_was_hit(result, 3)
    ends = _episode_ends(events)
    assert ends[1]["success"] and ends[2]["success"]
    # past hang_s (5 deadlines, at least 2 s) the source left the hung session for a new one
    reasons = [e["reason"] for e in events if e["kind"] == "policy_timeout"]
    assert any("no answer to step 2 for 2.0 s (hang_s)" in r for r in reasons), reasons


def test_openpi_server_hanging_on_a_request_stops_that_episode_and_the_next_ones_reconnect(tmp_path: Path) -> None:
    # openpi runs the policy on its event loop: the whole server hangs, then comes back
    with OpenPiServer("hold", chunk=10, action_dim=GP7_JOINTS + 1, hang_on=3, hang_s=8.0) as server:
        scenario = load(LAUNCH, ["episodes:=3", "sim.max_episode_s:=3", _openpi_policy(server.endpoint)])
        result = run_scenario(scenario, runs_dir=tmp_path)
    events = _assert_only_the_first_episode_was_hit(result, 3)
    assert _episode_ends(events)[0]["reason"] == "protective_stop"
    assert [e["episode"] for e in events if e["kind"] == "protective_stop"] == [0]
    reasons = [e["reason"] for e in events if e["kind"] == "policy_timeout"]
    assert any("no reply to step 2 within 2.0 s (hang_s)" in r for r in reasons), reasons


def test_openpi_reply_not_received_within_hang_s_is_unavailable_and_the_next_request_reconnects() -> None:
    with OpenPiServer("echo", hang_on=1, hang_s=3.0) as server, \
            OpenPiActionSource(server.endpoint, spec=SPEC, obs_keys={"observation.state": "observation/state"},
                               deadline_s=0.5, hang_s=1.0) as source:
        source.submit({"observation.state": np.zeros(7, np.float32)}, 0)
        with pytest.raises(PolicyUnavailable, match=re.escape("no reply to step 0 within 1.0 s (hang_s)")):
            source.result(timeout_s=10.0)
        chunk = None
        end = time.monotonic() + 30.0
        step = 1
        while chunk is None and time.monotonic() < end:
            source.submit({"observation.state": np.full(7, step, np.float32)}, step)
            try:
                chunk = source.result(timeout_s=0.5)
            except PolicyUnavailable:
                time.sleep(0.1)
            step += 1
        assert chunk is not None
        assert source.stats().reconnects == 1


def test_openpi_reset_drops_a_connection_whose_request_hangs_and_reconnects() -> None:
    with OpenPiServer("echo", hang_on=2, hang_s=3.0) as server, \
            OpenPiActionSource(server.endpoint, spec=SPEC, obs_keys={"observation.state": "observation/state"},
                               deadline_s=0.3, hang_s=60.0) as source:
        source.reset(0)
        source.submit({"observation.state": np.zeros(7, np.float32)}, 0)
        assert source.result(timeout_s=5.0) is not None
        source.submit({"observation.state": np.ones(7, np.float32)}, 1)  # the server hangs on this one
        assert source.result(timeout_s=0.5) is None
        end = time.monotonic() + 30.0
        while True:  # as the run does at an episode start: retry while the server cannot be reached
            try:
                source.reset(1)
                break
            except PolicyUnavailable:
                assert time.monotonic() < end
                time.sleep(0.2)
        source.submit({"observation.state": np.full(7, 2.0, np.float32)}, 0)
        chunk = source.result(timeout_s=5.0)
        assert chunk is not None and chunk.step == 0
        assert source.stats().reconnects == 1


# ----- an unexpected exception inside a client worker ------------------------------------------------
# No deadline is under test here: a deadline long enough for a loaded machine (a late answer is
# a policy_timeout, which would hide whether the client recovered); the fault raises at once.
WORKER_FAULT_DEADLINE_S = 2.0


def _failing_on_third_call(original: Any, error: BaseException) -> Any:
    calls = {"n": 0}
    lock = threading.Lock()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls["n"] += 1
            n = calls["n"]
        if n == 3:
            raise error
        return original(*args, **kwargs)

    return wrapper


def _assert_failure_reported_once_with_cause(result: RunResult, message: str) -> None:
    events = _events(result)
    errors = [e for e in events if e["kind"] == "policy_error"]
    assert len(errors) == 1, errors
    assert errors[0]["episode"] == 0 and errors[0]["cause"] == f"RuntimeError: {message}"
    assert f"RuntimeError: {message}" in errors[0]["error"]
    assert [m for m in result.metrics["policy_errors"] if message in m] == [errors[0]["error"]]
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["policy_errors"] == result.metrics["policy_errors"]
    assert saved["episode_results"][0]["policy_errors"] == [errors[0]["error"]]
    assert saved["episode_results"][1]["policy_errors"] == []
    assert _episode_ends(events)[1]["policy_timeouts"] == 0  # the client recovered


def test_grpc_client_worker_failure_is_reported_with_its_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = "injected fault in the gRPC client worker"
    monkeypatch.setattr(GrpcActionSource, "_deliver",
                        _failing_on_third_call(GrpcActionSource._deliver, RuntimeError(message)))
    with spawn_policy_server("testbed.bridge.reference:HoldPolicy", {"joints": str(GP7_JOINTS)}) as server:
        scenario = load(LAUNCH, ["episodes:=2", "sim.max_episode_s:=3", "policy.serve:=null",
                                 f"policy.endpoint:={server.endpoint}",
                                 f"policy.deadline_s:={WORKER_FAULT_DEADLINE_S}"])
        result = run_scenario(scenario, runs_dir=tmp_path)
    _assert_failure_reported_once_with_cause(result, message)


def test_served_policy_client_worker_failure_is_reported_with_its_cause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # policy.serve (the default launch file's way): the run starts the server and wraps its client
    message = "injected fault in the served policy's client worker"
    monkeypatch.setattr(GrpcActionSource, "_deliver",
                        _failing_on_third_call(GrpcActionSource._deliver, RuntimeError(message)))
    scenario = load(LAUNCH, ["episodes:=2", "sim.max_episode_s:=3", f"policy.deadline_s:={WORKER_FAULT_DEADLINE_S}",
                             "policy.serve:=testbed.bridge.reference:HoldPolicy", "policy.args:={joints: '6'}"])
    result = run_scenario(scenario, runs_dir=tmp_path)
    _assert_failure_reported_once_with_cause(result, message)


def test_openpi_client_worker_failure_is_reported_with_its_cause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = "injected fault in the openpi client worker"
    monkeypatch.setattr(OpenPiActionSource, "_to_chunk",
                        _failing_on_third_call(OpenPiActionSource._to_chunk, RuntimeError(message)))
    with OpenPiServer("hold", chunk=10, action_dim=GP7_JOINTS + 1) as server:
        scenario = load(LAUNCH, ["episodes:=2", "sim.max_episode_s:=3",
                                 _openpi_policy(server.endpoint, WORKER_FAULT_DEADLINE_S)])
        result = run_scenario(scenario, runs_dir=tmp_path)
    _assert_failure_reported_once_with_cause(result, message)


class _WorkerKilled(BaseException):
    """Escapes every ``except Exception``: ends the thread it is raised in."""


def test_openpi_worker_thread_that_ends_is_reported_by_every_call_until_reset_starts_a_new_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OpenPiActionSource, "_to_chunk",
                        _failing_on_third_call(OpenPiActionSource._to_chunk, _WorkerKilled("injected")))
    obs = {"observation.state": np.zeros(7, np.float32)}
    with OpenPiServer("echo") as server, \
            OpenPiActionSource(server.endpoint, spec=SPEC, obs_keys={"observation.state": "observation/state"},
                               deadline_s=2.0) as source:
        for step in range(2):
            source.submit(obs, step)
            assert source.result(timeout_s=5.0) is not None
        source.submit(obs, 2)
        for _ in range(2):
            with pytest.raises(PolicyClientFailed, match="worker thread stopped: _WorkerKilled: injected") as caught:
                source.result(timeout_s=5.0)
            assert isinstance(caught.value.__cause__, _WorkerKilled)
        with pytest.raises(PolicyClientFailed, match="worker thread stopped"):
            source.submit(obs, 3)
        source.reset(1)
        source.submit(obs, 0)
        chunk = source.result(timeout_s=5.0)
        assert chunk is not None and chunk.step == 0


def test_openpi_close_reports_a_worker_thread_that_does_not_end(monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()
    original = OpenPiActionSource._to_chunk

    def stuck(self: OpenPiActionSource, *args: Any) -> Any:
        entered.set()
        release.wait(30.0)
        return original(self, *args)

    monkeypatch.setattr(OpenPiActionSource, "_to_chunk", stuck)
    monkeypatch.setattr(openpi_module, "JOIN_TIMEOUT_S", 0.2)
    with OpenPiServer("echo") as server:
        source = OpenPiActionSource(server.endpoint, spec=SPEC, obs_keys={"observation.state": "observation/state"})
        source.submit({"observation.state": np.zeros(7, np.float32)}, 0)
        assert entered.wait(10.0)
        try:
            with pytest.raises(PolicyClientFailed, match=r"worker thread 'openpi-ws://.*' did not end within 0.2 s"):
                source.close()
        finally:
            release.set()
        thread = source._thread
        thread.join(10.0)
        assert not thread.is_alive()
