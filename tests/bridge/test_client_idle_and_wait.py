"""A client stream idle for longer than its keepalive survives; ``result(None)`` still ends on a hung server."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import numpy as np
import pytest
from bridge_helpers import running_policy_server

import testbed.bridge.client as client_module
from testbed.bridge.client import GrpcActionSource
from testbed.bridge.reference import HoldPolicy
from testbed.bridge.server import channel_options
from testbed.errors import PolicyUnavailable

KEEPALIVE_MS = 2_000  # the test client pings this often (a run's client: every 10 s)


def _obs(step: int) -> dict[str, np.ndarray]:
    return {"observation.state": np.full(7, float(step), np.float32)}


def test_a_stream_idle_for_several_keepalive_pings_still_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    # a client that pings every 2 s with no call open: a server that refuses pings that often
    # answers the third with GOAWAY too_many_pings and the stream dies (with the real 10 s
    # keepalive, after ~30 s idle, e.g. between episodes)
    def fast_keepalive(max_message_bytes: int) -> list[tuple[str, int]]:
        options = dict(channel_options(max_message_bytes))
        options["grpc.keepalive_time_ms"] = KEEPALIVE_MS
        options["grpc.keepalive_permit_without_calls"] = 1
        return list(options.items())

    monkeypatch.setattr(client_module, "channel_options", fast_keepalive)
    with running_policy_server(HoldPolicy) as server, GrpcActionSource(server.endpoint, deadline_s=1.0) as source:
        source.reset(0)
        source.submit(_obs(0), 0)
        assert source.result(5.0) is not None
        time.sleep(4.5 * KEEPALIVE_MS / 1000)  # four pings without data
        for step in (1, 2):
            source.submit(_obs(step), step)
            chunk = source.result(2.0)  # raises PolicyUnavailable if the stream was dropped
            assert chunk is not None and chunk.step == step


class _Hangs(HoldPolicy):
    """Answers no act until released."""

    release = threading.Event()

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        self.release.wait(60)
        return super().act(obs)


def test_result_without_timeout_raises_once_the_request_is_unanswered_for_hang_s() -> None:
    _Hangs.release.clear()
    hang_s = 2.0
    try:
        with running_policy_server(_Hangs) as server, \
                GrpcActionSource(server.endpoint, deadline_s=0.5, hang_s=hang_s) as source:
            source.reset(0)
            source.submit(_obs(1), 1)  # result(None) is the first wait: no timer of an earlier one is left
            outcome: list[BaseException | object] = []

            def wait_forever() -> None:
                try:
                    outcome.append(source.result(None))
                except BaseException as exc:
                    outcome.append(exc)

            waiter = threading.Thread(target=wait_forever, daemon=True)
            start = time.monotonic()
            waiter.start()
            waiter.join(4 * hang_s)
            waited, blocked = time.monotonic() - start, waiter.is_alive()
            _Hangs.release.set()  # a blocked result() returns now, and close() can take the lock
            waiter.join(10)
            assert not blocked, f"result(None) still blocked {waited:.1f} s on a hung server"
            assert isinstance(outcome[0], PolicyUnavailable), outcome
            assert "hang_s" in str(outcome[0])
    finally:
        _Hangs.release.set()
