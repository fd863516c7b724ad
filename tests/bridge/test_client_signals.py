"""A signal in the middle of the client's loop turn is raised after the turn, and the client keeps working."""

from __future__ import annotations

import logging
import random
import signal
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from bridge_helpers import running_policy_server

from testbed import interrupts
from testbed.bridge.client import GrpcActionSource
from testbed.bridge.reference import HoldPolicy
from testbed.interrupts import Terminated

SIGNALS = 400  # one-shot timer signals, each at a random instant of a round trip


def _obs(step: int) -> dict[str, np.ndarray]:
    return {"observation.state": np.full(7, float(step), np.float32)}


@pytest.fixture
def alarm_terminates() -> Iterator[None]:
    """SIGALRM handled as the command line handles SIGTERM; the timer is disarmed afterwards."""
    before = signal.signal(signal.SIGALRM, interrupts.raise_terminated)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def test_signals_during_round_trips_are_raised_by_the_call_and_lose_nothing(
        alarm_terminates: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    swallowed: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda hook_args: swallowed.append(hook_args.exc_value))
    caplog.set_level(logging.ERROR, logger="asyncio")
    rng = random.Random(0)
    interrupted = answered = 0
    with running_policy_server(HoldPolicy) as server, GrpcActionSource(server.endpoint, deadline_s=1.0) as source:
        source.reset(0)
        for step in range(SIGNALS):
            try:
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-5, 1.5e-3))
                try:
                    source.submit(_obs(step), step)
                    answered += source.result(2.0) is not None
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except Terminated:
                interrupted += 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        # no task lost its wake-up: every later request is answered at once
        for step in range(SIGNALS, SIGNALS + 20):
            source.submit(_obs(step), step)
            chunk = source.result(2.0)
            assert chunk is not None and chunk.step == step
    assert interrupted > SIGNALS // 8 and answered > 0, (interrupted, answered)
    assert not swallowed, f"a library printed and dropped what the handler raised: {swallowed[:3]}"
    assert "Task was destroyed but it is pending" not in caplog.text
