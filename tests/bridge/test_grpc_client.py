"""GrpcActionSource against an in-process server: streaming, unary, faults, alignment."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Mapping

import numpy as np
import pytest
from bridge_helpers import running_policy_server

from testbed.bridge.client import GrpcActionSource, parse_endpoint
from testbed.bridge.reference import HoldPolicy
from testbed.errors import BridgeConfigError, PolicyClientFailed, PolicyUnavailable, SpecMismatch


def _obs(value: float) -> dict[str, np.ndarray]:
    return {"observation.state": np.full(7, value, np.float32)}


def _endpoint(running: object) -> str:
    return f"grpc://127.0.0.1:{running.port}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["stream", "unary"])
def test_chunks_come_back_for_the_step_they_were_computed_for(mode: str) -> None:
    with running_policy_server(HoldPolicy) as server, GrpcActionSource(_endpoint(server), mode=mode) as source:
        assert source.spec().action_dim == 7
        source.reset(0)
        for step in range(20):
            source.submit(_obs(step / 10), step)
            chunk = source.result(5.0)
            assert chunk is not None and chunk.step == step
            assert chunk.actions.shape == (10, 7)
            np.testing.assert_allclose(chunk.actions[:, 0], step / 10, rtol=1e-6)
            assert chunk.latency_ms > 0


def test_result_returns_none_when_nothing_arrives_in_time() -> None:
    with running_policy_server(lambda: HoldPolicy(sleep_s=0.5)) as server, \
            GrpcActionSource(_endpoint(server), deadline_s=0.2) as source:
        source.reset(0)
        source.submit(_obs(0.0), 0)
        assert source.result(0.05) is None
        late = source.result(5.0)
        assert late is not None and late.step == 0


def test_unary_deadline_exceeded_gives_none_not_an_error() -> None:
    with running_policy_server(lambda: HoldPolicy(sleep_s=0.4)) as server, \
            GrpcActionSource(_endpoint(server), deadline_s=0.1, mode="unary") as source:
        source.reset(0)
        source.submit(_obs(0.0), 0)
        assert source.result(1.0) is None


def test_newer_submit_replaces_an_unsent_observation() -> None:
    with running_policy_server(lambda: HoldPolicy(sleep_s=0.2)) as server, \
            GrpcActionSource(_endpoint(server)) as source:
        source.reset(0)
        source.submit(_obs(0.0), 0)
        time.sleep(0.05)  # step 0 is in flight now
        for step in (1, 2, 3):
            source.submit(_obs(float(step)), step)
        steps = []
        while not steps or steps[-1] != 3:
            chunk = source.result(5.0)
            assert chunk is not None
            steps.append(chunk.step)
        assert steps == [0, 3]


@pytest.mark.parametrize(("fault", "error"), [("nan", SpecMismatch), ("shape", SpecMismatch),
                                              ("raise", PolicyUnavailable)])
def test_faulty_policy_answers_are_refused_and_the_stream_survives(fault: str, error: type) -> None:
    with running_policy_server(lambda: HoldPolicy(fault=fault)) as server, \
            GrpcActionSource(_endpoint(server)) as source:
        source.reset(0)
        for step in range(2):  # the stream stays usable after an error result
            source.submit(_obs(0.0), step)
            with pytest.raises(error, match=f"step {step}"):
                source.result(5.0)


def test_observation_that_does_not_fit_the_spec_is_refused_naming_the_field() -> None:
    with running_policy_server(HoldPolicy) as server, GrpcActionSource(_endpoint(server)) as source:
        source.reset(0)
        source.submit({"observation.state": np.zeros(6, np.float32)}, 0)
        with pytest.raises(SpecMismatch, match=r"INVALID_ARGUMENT.*observation\['observation.state'\]"):
            source.result(5.0)


def test_wrong_token_is_refused_with_unauthenticated() -> None:
    with running_policy_server(HoldPolicy, token="s3cret") as server:
        with GrpcActionSource(_endpoint(server), token="wrong") as source, \
                pytest.raises(PolicyUnavailable, match="UNAUTHENTICATED"):
            source.spec()
        with GrpcActionSource(_endpoint(server), token="s3cret") as source:
            assert source.spec().model_name == "hold"


def test_unreachable_server_raises_policy_unavailable() -> None:
    with running_policy_server(HoldPolicy) as server:
        endpoint = _endpoint(server)
    with GrpcActionSource(endpoint, deadline_s=0.3) as source:
        with pytest.raises(PolicyUnavailable, match=endpoint):
            source.spec()
        source.submit(_obs(0.0), 0)
        with pytest.raises(PolicyUnavailable):
            source.result(0.5)


class _BlockingPolicy(HoldPolicy):
    """Blocks in act until released when the state's first entry is negative."""

    release = threading.Event()

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        if obs["observation.state"][0] < 0:
            self.release.wait(10)
        return super().act(obs)


def test_a_slow_client_does_not_block_another() -> None:
    _BlockingPolicy.release.clear()
    with running_policy_server(_BlockingPolicy) as server, \
            GrpcActionSource(_endpoint(server)) as slow, GrpcActionSource(_endpoint(server)) as fast:
        slow.reset(0)
        fast.reset(0)
        slow.submit(_obs(-1.0), 0)
        deadline = time.monotonic() + 10  # until the server holds it (a loaded machine may take a while)
        while server.servicer.in_flight != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.servicer.in_flight == 1
        for step in range(5):
            fast.submit(_obs(1.0), step)
            chunk = fast.result(5.0)
            assert chunk is not None and chunk.step == step
        assert slow.result(0.0) is None
        _BlockingPolicy.release.set()
        chunk = slow.result(5.0)
        assert chunk is not None and chunk.actions[0, 0] == -1.0


def test_reset_drops_chunks_of_the_previous_episode() -> None:
    with running_policy_server(lambda: HoldPolicy(sleep_s=0.2)) as server, \
            GrpcActionSource(_endpoint(server)) as source:
        source.reset(0)
        source.submit(_obs(0.0), 5)
        source.reset(1)  # the step-5 answer of episode 0 must not surface
        source.submit(_obs(1.0), 0)
        chunk = source.result(5.0)
        assert chunk is not None and chunk.step == 0 and chunk.actions[0, 0] == 1.0


@pytest.mark.parametrize("endpoint", ["http://h:1", "grpc://host", "grpc://h:notaport"])
def test_bad_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(BridgeConfigError, match="policy endpoint"):
        parse_endpoint(endpoint)


def test_endpoint_forms() -> None:
    assert parse_endpoint("grpc://127.0.0.1:5") == ("127.0.0.1:5", False)
    assert parse_endpoint("grpcs://example:443") == ("example:443", True)
    assert parse_endpoint("[::1]:7") == ("[::1]:7", False)


def test_streams_beyond_max_streams_are_refused_with_resource_exhausted() -> None:
    with running_policy_server(HoldPolicy, max_streams=1) as server, \
            GrpcActionSource(_endpoint(server)) as first, \
            GrpcActionSource(_endpoint(server), backoff_s=(0.5, 1.0)) as second:
        first.reset(0)
        first.submit(_obs(1.0), 0)
        assert first.result(5.0) is not None
        second.reset(0)
        second.submit(_obs(2.0), 0)
        with pytest.raises(PolicyUnavailable, match=r"RESOURCE_EXHAUSTED.*max_streams"):
            second.result(5.0)
        first.submit(_obs(1.0), 1)  # the open stream is unaffected
        chunk = first.result(5.0)
        assert chunk is not None and chunk.step == 1


MANY_SOURCES_IN_A_ROW = """
import numpy as np
from testbed.bridge.client import GrpcActionSource
from testbed.bridge.reference import HoldPolicy
from testbed.bridge.server import ServerOptions, start_policy_server

server = start_policy_server(HoldPolicy, ServerOptions())
try:
    for i in range(20):
        with GrpcActionSource(f"grpc://127.0.0.1:{server.port}") as source:
            source.reset(0)
            source.submit({"observation.state": np.zeros(7, np.float32)}, 0)
            assert source.result(5.0) is not None, i
finally:
    server.stop(0.1)
print("done")
"""


def test_sources_created_and_closed_in_a_row_leave_no_traceback() -> None:
    # gRPC completes the cancelled calls of a closed source after close() returns; a closed loop
    # then made the next source's loop print "Event loop is closed" tracebacks
    out = subprocess.run([sys.executable, "-c", MANY_SOURCES_IN_A_ROW], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert "Traceback" not in out.stderr and "Event loop is closed" not in out.stderr, out.stderr


class _HangsOnce(HoldPolicy):
    """Sleeps ``hang_s`` in the ``hang_on``-th act served by this process (all sessions counted)."""

    count = 0
    count_lock = threading.Lock()
    hang_on, hang_s = 3, 5.0

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        with self.count_lock:
            type(self).count += 1
            n = type(self).count
        if n == self.hang_on:
            time.sleep(self.hang_s)
        return super().act(obs)


@pytest.fixture
def hangs_once() -> type[_HangsOnce]:
    _HangsOnce.count = 0
    return _HangsOnce


@pytest.mark.parametrize("mode", ["stream", "unary"])
def test_a_request_unanswered_for_hang_s_is_unavailable_and_a_new_session_answers(
        mode: str, hangs_once: type[_HangsOnce]) -> None:
    with running_policy_server(hangs_once) as server, \
            GrpcActionSource(_endpoint(server), deadline_s=0.2, hang_s=0.6, mode=mode) as source:
        source.reset(0)
        for step in range(2):
            source.submit(_obs(float(step)), step)
            assert source.result(5.0) is not None
        source.submit(_obs(2.0), 2)  # the server hangs on this one, holding its session's lock
        assert source.result(0.3) is None
        with pytest.raises(PolicyUnavailable, match=r"no answer to step 2 for 0.6 s \(hang_s\)"):
            for _ in range(20):
                source.result(0.3)
                source.submit(_obs(2.0), 2)
        chunk = None
        for step in range(3, 40):  # under a new session (a policy instance of its own) answers come again
            source.submit(_obs(float(step)), step)
            try:
                chunk = source.result(0.5)
            except PolicyUnavailable:
                continue
            if chunk is not None and chunk.step == step:
                break
        assert chunk is not None and chunk.step == step


def test_reset_after_a_hung_request_continues_under_a_new_session(hangs_once: type[_HangsOnce]) -> None:
    with running_policy_server(hangs_once) as server, \
            GrpcActionSource(_endpoint(server), deadline_s=0.2, hang_s=30.0) as source:
        source.reset(0)
        for step in range(2):
            source.submit(_obs(float(step)), step)
            assert source.result(5.0) is not None
        source.submit(_obs(2.0), 2)  # hangs for 5 s, holding the session's lock (Reset would wait on it)
        assert source.result(0.4) is None
        source.reset(1)
        source.submit(_obs(1.0), 0)
        # the new session answers long before the hung one would (30 s); a loaded machine may take seconds
        deadline = time.monotonic() + 15.0
        chunk = None
        while chunk is None and time.monotonic() < deadline:
            chunk = source.result(0.5)
        assert chunk is not None and chunk.step == 0


class _WorkerKilled(BaseException):
    """Escapes every ``except Exception``: ends the worker it is raised in."""


def _deliver_failing_once(error: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    original = GrpcActionSource._deliver
    calls = {"n": 0}

    def deliver(self: GrpcActionSource, result: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise error
        original(self, result, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(GrpcActionSource, "_deliver", deliver)


def test_an_unexpected_error_in_the_client_is_raised_once_with_its_cause_and_the_stream_recovers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _deliver_failing_once(RuntimeError("injected fault in the client"), monkeypatch)
    with running_policy_server(HoldPolicy) as server, GrpcActionSource(_endpoint(server)) as source:
        source.reset(0)
        source.submit(_obs(0.0), 0)
        assert source.result(5.0) is not None
        source.submit(_obs(1.0), 1)
        with pytest.raises(PolicyClientFailed, match="RuntimeError: injected fault in the client") as caught:
            source.result(5.0)
        assert isinstance(caught.value.__cause__, RuntimeError)
        chunk = None
        for step in range(2, 40):
            source.submit(_obs(float(step)), step)
            try:
                chunk = source.result(0.5)
            except PolicyUnavailable as exc:
                assert not isinstance(exc, PolicyClientFailed)  # reported once only
                continue
            if chunk is not None:
                break
        assert chunk is not None


def test_a_supervisor_that_ends_is_reported_by_every_call_until_reset_starts_a_new_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _deliver_failing_once(_WorkerKilled("injected"), monkeypatch)
    with running_policy_server(HoldPolicy) as server, GrpcActionSource(_endpoint(server)) as source:
        source.reset(0)
        source.submit(_obs(0.0), 0)
        assert source.result(5.0) is not None
        source.submit(_obs(1.0), 1)
        for _ in range(2):
            with pytest.raises(PolicyClientFailed, match="supervisor task stopped: it raised _WorkerKilled") as caught:
                source.result(5.0)
            assert isinstance(caught.value.__cause__, _WorkerKilled)
        with pytest.raises(PolicyClientFailed):
            source.submit(_obs(1.0), 1)
        source.reset(1)
        source.submit(_obs(2.0), 0)
        chunk = source.result(5.0)
        assert chunk is not None and chunk.step == 0
