"""The policy protocol model teams implement, and the specs that describe it.

A policy is any object with ``spec()``, ``reset(episode)`` and ``act(obs)``,
and optionally ``close()`` to release what it holds (a simulator client, a GPU).
The same object runs in-process, behind ``testbed serve-policy`` over gRPC,
or inside an evaluation worker; the orchestrator only ever talks to it
through this protocol.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from testbed.errors import SpecMismatch

SUPPORTED_DTYPES = ("float32", "float64", "uint8", "int32", "int64", "bool")


class ActionKind(enum.StrEnum):
    """What the numbers in an action row mean."""

    JOINT_POSITIONS = "joint_positions"  # absolute joint targets (rad or m) + gripper
    JOINT_DELTAS = "joint_deltas"  # joint increments relative to the current measured position
    CARTESIAN_DELTAS = "cartesian_deltas"  # TCP dx, dy, dz (m), droll, dpitch, dyaw (rad) + gripper


@dataclass(frozen=True)
class TensorSpec:
    """Dtype and shape of one named array.

    Args:
        dtype: numpy dtype name, one of ``SUPPORTED_DTYPES``.
        shape: fixed shape; batch axes are never included.
    """

    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.dtype not in SUPPORTED_DTYPES:
            raise SpecMismatch(f"dtype {self.dtype!r} is not supported (supported: {', '.join(SUPPORTED_DTYPES)})")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 0 for d in self.shape):
            raise SpecMismatch(f"shape {self.shape} has a negative dimension")

    def validate(self, name: str, value: np.ndarray) -> None:
        """Raise ``SpecMismatch`` naming ``name`` unless ``value`` fits this spec."""
        if not isinstance(value, np.ndarray):
            raise SpecMismatch(f"{name}: expected a numpy array, got {type(value).__name__}")
        if value.dtype != np.dtype(self.dtype):
            raise SpecMismatch(f"{name}: expected dtype {self.dtype}, got {value.dtype}")
        if tuple(value.shape) != self.shape:
            raise SpecMismatch(f"{name}: expected shape {self.shape}, got {tuple(value.shape)}")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise SpecMismatch(f"{name}: contains NaN or inf")


@dataclass(frozen=True)
class PolicySpec:
    """What a policy consumes and produces.

    Args:
        observation: observation key -> spec; keys follow LeRobot's names
            (``observation.state``, ``observation.environment_state``,
            ``observation.images.<camera>``).
        action_kind: meaning of each action row.
        action_dim: numbers per action row.
        chunk_size: rows per ``act`` call (the action chunk).
        control_hz: rate at which the policy expects to be asked.
        model_name: free text for records.
        model_version: free text for records.
    """

    observation: Mapping[str, TensorSpec]
    action_kind: ActionKind
    action_dim: int
    chunk_size: int
    control_hz: float
    model_name: str = "unnamed"
    model_version: str = "0"
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action_dim <= 0:
            raise SpecMismatch(f"action_dim must be positive, got {self.action_dim}")
        if self.chunk_size <= 0:
            raise SpecMismatch(f"chunk_size must be positive, got {self.chunk_size}")
        if not self.control_hz > 0:
            raise SpecMismatch(f"control_hz must be positive, got {self.control_hz}")
        object.__setattr__(self, "action_kind", ActionKind(self.action_kind))

    def action_spec(self) -> TensorSpec:
        """The spec an ``act`` result must satisfy: float32 ``(chunk_size, action_dim)``."""
        return TensorSpec("float32", (self.chunk_size, self.action_dim))

    def validate_observation(self, obs: Mapping[str, np.ndarray]) -> None:
        """Raise ``SpecMismatch`` unless every declared key is present and fits."""
        for key, spec in self.observation.items():
            if key not in obs:
                raise SpecMismatch(f"observation is missing {key!r} (has: {', '.join(sorted(obs))})")
            spec.validate(key, obs[key])

    def validate_action(self, action: np.ndarray) -> None:
        """Raise ``SpecMismatch`` unless ``action`` is a finite float32 chunk of the declared shape.

        A chunk may be shorter than ``chunk_size`` but never empty or longer.
        """
        if not isinstance(action, np.ndarray):
            raise SpecMismatch(f"action: expected a numpy array, got {type(action).__name__}")
        if action.dtype != np.float32:
            raise SpecMismatch(f"action: expected dtype float32, got {action.dtype}")
        if action.ndim != 2 or action.shape[1] != self.action_dim or not 1 <= action.shape[0] <= self.chunk_size:
            raise SpecMismatch(
                f"action: expected shape (1..{self.chunk_size}, {self.action_dim}), got {tuple(action.shape)}"
            )
        if not np.all(np.isfinite(action)):
            raise SpecMismatch("action: contains NaN or inf")


@runtime_checkable
class Policy(Protocol):
    """The interface a model team implements."""

    def spec(self) -> PolicySpec:
        """Describe observations consumed and actions produced."""
        ...

    def reset(self, episode: int) -> None:
        """Forget per-episode state before episode ``episode`` starts."""
        ...

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Return an action chunk, float32 ``(chunk, action_dim)``, for one observation."""
        ...


@runtime_checkable
class ClosablePolicy(Policy, Protocol):
    """A policy that holds resources: ``close()`` releases them.

    ``close()`` is optional for a ``Policy``; where it exists, whoever made the policy
    calls it once when done with it (the policy server on eviction and at stop, a run
    at its end), never while a call is inside the policy. It may raise: others are
    closed regardless.
    """

    def close(self) -> None:
        """Release the policy's resources; it is not called again afterwards."""
        ...
