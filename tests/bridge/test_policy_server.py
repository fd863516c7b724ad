"""The in-process policy server closes the policies it made: on eviction, at stop, and past a failing close()."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import grpc
import numpy as np
import pytest
from bridge_helpers import running_policy_server

from testbed.bridge import GrpcActionSource
from testbed.bridge.generated import policy_pb2, policy_pb2_grpc
from testbed.bridge.handles import GrpcServerHandle, ServerHandle, format_address
from testbed.bridge.reference import HoldPolicy
from testbed.bridge.server import ServerOptions, start_policy_server


class _Tracked(HoldPolicy):
    """A HoldPolicy that records every instance, and whether a call was inside it when it was closed."""

    made: ClassVar[list[_Tracked]] = []
    made_lock = threading.Lock()

    def __init__(self) -> None:
        super().__init__()
        self.busy = False
        self.closed_while_busy = False
        with self.made_lock:
            self.made.append(self)

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        self.busy = True
        try:
            if obs["observation.state"][0] < 0:
                time.sleep(0.3)
            return super().act(obs)
        finally:
            self.busy = False

    def close(self) -> None:
        self.closed_while_busy = self.busy
        super().close()


class _FailingClose(_Tracked):
    """The first session's instance (the first one the server closes at stop) raises in close()."""

    def close(self) -> None:
        super().close()
        if self is self.made[1]:
            raise RuntimeError("GPU already gone")


@pytest.fixture(autouse=True)
def _fresh_instances() -> None:
    _Tracked.made = []


def _obs(value: float) -> dict[str, np.ndarray]:
    return {"observation.state": np.full(7, value, np.float32)}


def _endpoint(server: ServerHandle) -> str:
    return f"grpc://127.0.0.1:{server.port}"


def _act(source: GrpcActionSource, value: float, step: int) -> None:
    source.submit(_obs(value), step)
    chunk = source.result(10.0)
    assert chunk is not None and chunk.step == step


def test_an_evicted_session_has_its_policy_closed() -> None:
    with running_policy_server(_Tracked, max_sessions=1) as server, \
            GrpcActionSource(_endpoint(server)) as first, GrpcActionSource(_endpoint(server)) as second:
        first.reset(0)
        _act(first, 1.0, 0)
        first_policy = _Tracked.made[-1]
        second.reset(0)  # a second session beyond max_sessions evicts the first
        assert first_policy.closed
        assert not _Tracked.made[-1].closed
        _act(first, 1.0, 1)  # the evicted client is served by a fresh instance
        assert not _Tracked.made[-1].closed


def test_eviction_waits_for_the_call_inside_the_evicted_policy() -> None:
    with running_policy_server(_Tracked, max_sessions=1) as server, \
            GrpcActionSource(_endpoint(server)) as slow, GrpcActionSource(_endpoint(server)) as other:
        slow.reset(0)
        slow_policy = _Tracked.made[-1]
        slow.submit(_obs(-1.0), 0)  # sleeps inside act
        deadline = time.monotonic() + 5
        while not slow_policy.busy and time.monotonic() < deadline:
            time.sleep(0.005)
        assert slow_policy.busy
        other.reset(0)
        assert slow_policy.closed and not slow_policy.closed_while_busy
        chunk = slow.result(5.0)
        assert chunk is not None and chunk.step == 0


def test_stop_closes_every_policy_instance() -> None:
    with running_policy_server(_Tracked) as server:
        for _ in range(3):
            with GrpcActionSource(_endpoint(server)) as source:
                source.reset(0)
                _act(source, 1.0, 0)
        assert len(_Tracked.made) == 4  # the default instance and one per session
        assert not any(p.closed for p in _Tracked.made)
    assert all(p.closed for p in _Tracked.made)


def test_a_close_that_raises_does_not_keep_the_others_open(caplog: pytest.LogCaptureFixture) -> None:
    server = start_policy_server(_FailingClose, ServerOptions())
    for _ in range(2):
        with GrpcActionSource(_endpoint(server)) as source:
            source.reset(0)
    with caplog.at_level(logging.ERROR, logger="testbed.bridge.server"):
        server.stop(0.1)
    assert len(_Tracked.made) == 3 and all(p.closed for p in _Tracked.made)
    assert "_FailingClose close() raised RuntimeError: GPU already gone" in caplog.text


def test_calls_after_stop_are_refused_not_served_by_a_closed_policy() -> None:
    server = start_policy_server(_Tracked, ServerOptions())
    servicer = server.servicer
    servicer.close_policies()
    with grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Reset(policy_pb2.ResetRequest(episode=0), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    server.stop(0.1)


def test_stop_is_idempotent_and_runs_on_stop_once() -> None:
    calls = []
    server = grpc.server(ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with GrpcServerHandle(server, None, "127.0.0.1", port, grace_s=0.1, on_stop=lambda: calls.append(1)) as handle:
        assert handle.endpoint == f"grpc://127.0.0.1:{port}"
        handle.stop()
        assert handle.stopped
    handle.close()
    assert calls == [1]


def test_ipv6_addresses_are_bracketed() -> None:
    assert format_address("::1", 5) == "[::1]:5"
    assert format_address("[::1]", 5) == "[::1]:5"
    assert format_address("127.0.0.1", 5) == "127.0.0.1:5"
