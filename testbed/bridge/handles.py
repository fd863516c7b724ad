"""One handle for every server the bridge starts: address it, stop it, or leave a ``with`` block to stop it.

``GrpcServerHandle`` holds a ``grpc.Server`` running in this process (the policy
server, the controller service); ``testbed.bridge.spawn.PolicyServerProcess`` holds a
``testbed serve-policy`` child process. Both stop at most once, from any thread.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from typing import Generic, Self, TypeVar

import grpc

ServicerT = TypeVar("ServicerT")


def format_address(host: str, port: int) -> str:
    """``host:port`` with IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class ServerHandle(abc.ABC):
    """A running server: ``address`` to dial, ``stop()`` to end it; a context manager that stops it on exit.

    Args:
        host: the address it listens on.
        port: the bound port.
        grace_s: how long ``stop()`` without an argument gives running calls.
    """

    def __init__(self, host: str, port: int, *, grace_s: float) -> None:
        self.host = host
        self.port = port
        self.grace_s = grace_s
        self._stop_lock = threading.Lock()
        self._stopped = False

    @property
    def address(self) -> str:
        """``host:port`` to dial."""
        return format_address(self.host, self.port)

    @property
    def endpoint(self) -> str:
        """``grpc://host:port``, as a launch file's ``policy.endpoint`` takes it."""
        return f"grpc://{self.address}"

    @property
    def stopped(self) -> bool:
        """True once ``stop()`` has run."""
        return self._stopped

    def stop(self, grace_s: float | None = None) -> None:
        """Stop the server, giving running calls ``grace_s`` (default: the handle's); later calls do nothing."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            self._shutdown(self.grace_s if grace_s is None else grace_s)

    def close(self, grace_s: float | None = None) -> None:
        """Same as ``stop()`` (for ``contextlib.closing`` and callers that close resources)."""
        self.stop(grace_s)

    @abc.abstractmethod
    def _shutdown(self, grace_s: float) -> None:
        """Stop the server for good; called once."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GrpcServerHandle(ServerHandle, Generic[ServicerT]):
    """A ``grpc.Server`` serving ``servicer`` in this process.

    Args:
        server: the started server.
        servicer: what it serves (tests read its counters).
        host: bind address.
        port: bound port.
        grace_s: default grace for ``stop()``.
        on_stop: called once after the server has stopped (e.g. close the served policies).
    """

    def __init__(self, server: grpc.Server, servicer: ServicerT, host: str, port: int, *, grace_s: float,
                 on_stop: Callable[[], object] | None = None) -> None:
        super().__init__(host, port, grace_s=grace_s)
        self.server = server
        self.servicer = servicer
        self._on_stop = on_stop

    def _shutdown(self, grace_s: float) -> None:
        # stop() returns an event that is set once running calls ended or were cancelled after the grace
        self.server.stop(grace_s).wait()
        if self._on_stop is not None:
            self._on_stop()
