"""testbed.bridge: gRPC between the orchestrator and policies (and outside callers and the cell).

Entry points: ``GrpcActionSource`` (the run loop's client of a policy server),
``spawn_policy_server`` (start ``testbed serve-policy`` as a child process),
``merge_chunks`` (overlap rules for asynchronous inference),
``start_policy_server`` / ``ServerOptions`` (serve a policy in-process) and
``start_controller_server`` / ``ControllerBackend`` (expose the cell's robots).
"""

from testbed.bridge.client import GrpcActionSource
from testbed.bridge.merge import MERGE_RULES, merge_chunks
from testbed.bridge.server import ServerOptions, start_policy_server
from testbed.bridge.spawn import PolicyServerProcess, spawn_policy_server

__all__ = [
    "MERGE_RULES",
    "GrpcActionSource",
    "PolicyServerProcess",
    "ServerOptions",
    "merge_chunks",
    "spawn_policy_server",
    "start_policy_server",
]
