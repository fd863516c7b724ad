"""testbed.bridge: gRPC between the orchestrator and policies, and between outside callers and the robots.

Entry points: ``GrpcActionSource`` (the run loop's client of a policy server),
``spawn_policy_server`` (start ``testbed serve-policy`` as a child process, its output in a log file),
``merge_chunks`` (overlap rules for asynchronous inference),
``start_policy_server`` / ``ServerOptions`` (serve a policy in-process, synchronously) and
``start_controller_server`` / ``ControlLoopBackend`` (expose a control loop's robots as
``testbed.v1.ControllerService``). Each start function returns a ``ServerHandle``: ``address``/``endpoint``
to dial, ``stop()`` or a ``with`` block to end it. The openpi websocket peer lives in ``testbed.bridge.openpi_source``
(needs the ``openpi`` extra).
"""

from testbed.bridge.client import GrpcActionSource
from testbed.bridge.controller_backend import ControllerBackend, ControlLoopBackend
from testbed.bridge.controller_service import TlsFiles, start_controller_server
from testbed.bridge.handles import ServerHandle
from testbed.bridge.merge import MERGE_RULES, merge_chunks
from testbed.bridge.server import ServerOptions, start_policy_server
from testbed.bridge.spawn import PolicyServerProcess, spawn_policy_server
from testbed.bridge.trajectory_goals import (
    TrajectoryFeedback,
    TrajectoryHandle,
    TrajectoryResult,
    TrajectoryResultCode,
)

__all__ = [
    "MERGE_RULES",
    "ControlLoopBackend",
    "ControllerBackend",
    "GrpcActionSource",
    "PolicyServerProcess",
    "ServerHandle",
    "ServerOptions",
    "TlsFiles",
    "TrajectoryFeedback",
    "TrajectoryHandle",
    "TrajectoryResult",
    "TrajectoryResultCode",
    "merge_chunks",
    "spawn_policy_server",
    "start_controller_server",
    "start_policy_server",
]
