"""A small reference policy for conformance checks, benchmarks and fault drills.

``HoldPolicy`` answers every observation with a chunk that holds the observed
joint positions (the first ``joints`` entries of ``observation.state``) and the
gripper bit. Its ``fault`` argument makes it misbehave on purpose, the way a
broken model would, so the bridge's defences can be exercised with a real server:
``testbed serve-policy testbed.bridge.reference:HoldPolicy --arg fault=nan``. Its
``print_bytes`` argument makes it print like a chatty model team's code does.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping

import numpy as np

from testbed.errors import SpecMismatch
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec

FAULTS = ("none", "nan", "shape", "raise")
_FLOAT32 = np.dtype(np.float32)


class HoldPolicy:
    """Hold the observed joints; optionally slow or faulty.

    Args:
        joints: arm joints; ``observation.state`` is ``joints + 1`` floats (joints, gripper).
        chunk_size: rows per chunk.
        image: side of a square uint8 RGB ``observation.images.overhead`` to require, 0 for none.
        environment: length of ``observation.environment_state`` to require, 0 for none.
        sleep_s: seconds to sleep in every ``act`` (a slow model).
        fault: ``none``, ``nan`` (NaN actions), ``shape`` (one column too many) or ``raise``.
        print_bytes: bytes to print to stdout in every ``act`` (newline included), 0 for none.
        close_message: a line printed to stdout when ``close()`` is called, "" for none.
    """

    def __init__(
        self,
        joints: int = 6,
        chunk_size: int = 10,
        image: int = 0,
        environment: int = 0,
        sleep_s: float = 0.0,
        fault: str = "none",
        print_bytes: int = 0,
        close_message: str = "",
    ) -> None:
        if fault not in FAULTS:
            raise SpecMismatch(f"HoldPolicy fault: expected one of {', '.join(FAULTS)}, got {fault!r}")
        if int(print_bytes) < 0:
            raise SpecMismatch(f"HoldPolicy print_bytes: expected 0 or more, got {print_bytes}")
        observation = {"observation.state": TensorSpec("float32", (int(joints) + 1,))}
        if environment:
            observation["observation.environment_state"] = TensorSpec("float32", (int(environment),))
        if image:
            observation["observation.images.overhead"] = TensorSpec("uint8", (int(image), int(image), 3))
        self._spec = PolicySpec(
            observation=observation,
            action_kind=ActionKind.JOINT_POSITIONS,
            action_dim=int(joints) + 1,
            chunk_size=int(chunk_size),
            control_hz=10.0,
            model_name="hold",
            model_version="1",
        )
        self._sleep_s = float(sleep_s)
        self._fault = fault
        self._chatter = "#" * (int(print_bytes) - 1) + "\n" if int(print_bytes) else ""
        self._close_message = close_message
        self._state_shape = (self._spec.action_dim,)
        self._chunk_shape = (self._spec.chunk_size, self._spec.action_dim)
        self._misbehaves = bool(self._chatter or self._sleep_s or fault != "none")
        self.episode = -1
        self.closed = False

    def spec(self) -> PolicySpec:
        """The spec built from the constructor arguments."""
        return self._spec

    def reset(self, episode: int) -> None:
        """Remember the episode (the policy has no other state)."""
        self.episode = episode

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Return ``chunk_size`` copies of the observed state, float32 ``(chunk, joints + 1)``.

        The chunk is a new read-only array the caller may keep.
        """
        state = obs["observation.state"]
        if (not self._misbehaves and state.__class__ is np.ndarray and state.dtype is _FLOAT32
                and state.shape == self._state_shape):
            # the rows as one bytes object: two calls, each on code the server's decode and encode
            # run anyway (a policy server's thread is woken for every request, with cold caches,
            # where each distinct numpy routine costs microseconds)
            return np.ndarray(self._chunk_shape, _FLOAT32, state.tobytes() * self._chunk_shape[0])
        return self._act_slowly(obs)

    def _act_slowly(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """``act`` for any state array (or sequence), and with the faults and chatter asked for."""
        if self._chatter:
            sys.stdout.write(self._chatter)
        if self._sleep_s:
            time.sleep(self._sleep_s)
        if self._fault == "raise":
            raise RuntimeError("HoldPolicy was told to fail")
        state = np.asarray(obs["observation.state"], dtype=np.float32)
        chunk = np.repeat(state[None, :], self._spec.chunk_size, axis=0)
        if self._fault == "nan":
            chunk[0, 0] = np.nan
        elif self._fault == "shape":
            chunk = np.concatenate([chunk, np.zeros((chunk.shape[0], 1), np.float32)], axis=1)
        return chunk

    def close(self) -> None:
        """Note that the server closed it (``closed``, and ``close_message`` on stdout)."""
        self.closed = True
        if self._close_message:
            print(self._close_message, flush=True)


def sample_observation(spec: PolicySpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A plausible observation for ``spec``: floats in [-1, 1), images as random uint8, ints small."""
    obs: dict[str, np.ndarray] = {}
    for key, ts in spec.observation.items():
        dtype = np.dtype(ts.dtype)
        if dtype.kind == "f":
            obs[key] = rng.uniform(-1.0, 1.0, ts.shape).astype(dtype)
        elif dtype == np.uint8:
            obs[key] = rng.integers(0, 256, ts.shape, dtype=np.uint8)
        elif dtype.kind == "b":
            obs[key] = rng.integers(0, 2, ts.shape).astype(bool)
        else:
            obs[key] = rng.integers(0, 10, ts.shape).astype(dtype)
    return obs
