"""Where the run loop gets action chunks from: a policy in-process or behind a bridge.

The run loop never calls ``Policy.act`` directly. It submits an observation
for a step and later collects the chunk computed for it, so the same loop
drives an in-process policy, a gRPC client with asynchronous inference, or
an openpi websocket peer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from testbed.errors import PolicyUnavailable, SpecMismatch
from testbed.policies.protocol import Policy, PolicySpec


@dataclass(frozen=True)
class ActionChunk:
    """Actions computed for one observation.

    Args:
        actions: float32 ``(chunk, action_dim)``; row k applies at ``step + k`` policy steps.
        step: the policy step (observation index within the episode) it was computed for.
        compute_ms: time the model spent, as reported by it.
        latency_ms: submit-to-receipt time seen by the caller.
    """

    actions: np.ndarray
    step: int
    compute_ms: float = 0.0
    latency_ms: float = 0.0


class ActionSource(Protocol):
    """A source of action chunks the run loop can drive robots from."""

    def spec(self) -> PolicySpec:
        """The policy's spec, fetched once."""
        ...

    def reset(self, episode: int) -> None:
        """Start episode ``episode``; drops any chunk still in flight."""
        ...

    def submit(self, obs: Mapping[str, np.ndarray], step: int) -> None:
        """Ask for a chunk for observation ``obs`` taken at policy step ``step``; never blocks long."""
        ...

    def result(self, timeout_s: float | None) -> ActionChunk | None:
        """The newest chunk that arrived, waiting at most ``timeout_s``; ``None`` if none did.

        Raises:
            SpecMismatch: the peer answered with an invalid chunk.
            PolicyUnavailable: the peer is gone and cannot be reached.
        """
        ...

    def close(self) -> None:
        """Release connections and processes."""
        ...


class LocalActionSource:
    """Runs a ``Policy`` in this process, synchronously, validating its output."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._spec = policy.spec()
        self._pending: ActionChunk | None = None

    def spec(self) -> PolicySpec:
        return self._spec

    def reset(self, episode: int) -> None:
        self._pending = None
        self._policy.reset(episode)

    def submit(self, obs: Mapping[str, np.ndarray], step: int) -> None:
        started = time.perf_counter()
        try:
            actions = np.asarray(self._policy.act(obs))
        except Exception as exc:  # a crashing policy is a dead policy: the run stops the robot and goes on
            raise PolicyUnavailable(f"policy {self._spec.model_name!r} raised {type(exc).__name__}: {exc}") from exc
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        try:
            self._spec.validate_action(actions)
        except SpecMismatch as exc:
            raise SpecMismatch(f"policy {self._spec.model_name!r} returned a bad chunk: {exc}") from exc
        self._pending = ActionChunk(actions=actions, step=step, compute_ms=elapsed_ms, latency_ms=elapsed_ms)

    def result(self, timeout_s: float | None) -> ActionChunk | None:
        chunk, self._pending = self._pending, None
        return chunk

    def close(self) -> None:
        self._pending = None
        close = getattr(self._policy, "close", None)
        if callable(close):
            close()
