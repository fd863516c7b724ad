"""Policies: the protocol model teams implement, the sources the run loop pulls chunks from, built-ins.

A policy has ``spec()``, ``reset(episode)`` and ``act(obs) -> (chunk, action_dim)``. Built-ins:
``testbed.policies.expert.ExpertPolicy`` and ``testbed.policies.bc.BCPolicy``.
"""

from testbed.policies.protocol import ActionKind, Policy, PolicySpec, TensorSpec
from testbed.policies.source import ActionChunk, ActionSource, LocalActionSource

__all__ = ["ActionChunk", "ActionKind", "ActionSource", "LocalActionSource", "Policy", "PolicySpec", "TensorSpec"]
