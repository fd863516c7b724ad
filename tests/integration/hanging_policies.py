"""Policies that hang on one request, served in real ``testbed serve-policy`` processes by the fault tests.

Loaded by the server child through ``PYTHONPATH`` (this directory), never imported by the
testbed itself. The request count is per process, over every session, so a client that
reconnects under a new session gets answers again once the hung request is behind it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping

import numpy as np

from testbed.bridge.reference import HoldPolicy
from testbed.policies.expert import ExpertPolicy

_acts = itertools.count(1)
_acts_lock = threading.Lock()


def _hang_if_due(hang_on: int, hang_s: float) -> None:
    with _acts_lock:
        n = next(_acts)
    if n == hang_on:
        time.sleep(hang_s)


class HangingHoldPolicy(HoldPolicy):
    """``HoldPolicy`` that sleeps ``hang_s`` in the ``hang_on``-th ``act`` this process serves."""

    def __init__(self, hang_on: int = 3, hang_s: float = 30.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._hang_on = int(hang_on)
        self._hang_s = float(hang_s)

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Hold the observed joints, after hanging if this is the chosen request."""
        _hang_if_due(self._hang_on, self._hang_s)
        return super().act(obs)


class HangingExpert(ExpertPolicy):
    """The built-in expert, sleeping ``hang_s`` in the ``hang_on``-th ``act`` this process serves."""

    def __init__(self, hang_on: int = 3, hang_s: float = 30.0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._hang_on = int(hang_on)
        self._hang_s = float(hang_s)

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The expert's chunk, after hanging if this is the chosen request."""
        _hang_if_due(self._hang_on, self._hang_s)
        return super().act(obs)
