"""A user-space TCP relay that makes a loopback connection behave like a link between sites.

Real-time runs dial the relay instead of the policy server; the relay dials the server and forwards
bytes both ways, each direction through its own ``LinkDirection``: every chunk read is released to the
far side at its drawn delivery time (one-way delay, jitter, TCP retransmission waits for lost segments,
serialization at the link's bandwidth), never before the chunk ahead of it. It relays bytes, so gRPC
(HTTP/2), websockets and TLS pass through unchanged.

This kernel has no netem qdisc, and the proxies on the package indexes that add latency sleep in line
(a delay that adds up per chunk instead of pipelining), drop bytes out of a TCP stream, or draw from an
unseeded global generator; toxiproxy is a separate Go service with no Debian package. Hence this one,
small: per connection, a reader and a writer thread per direction.

Not modelled: the TCP handshake's extra round trip (the relay accepts and dials at once), and a
receive window (a direction buffers up to ``max_buffer_bytes``, then stops reading, which the sender
sees as a full window).
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import numpy as np

from testbed.errors import BridgeConfigError, TestbedError
from testbed.sites.links import DelayModel, LinkDirection, LinkFigures

READ_BYTES = 16 * 1024  # per read: a release unit; small enough that a rate limit releases smoothly
POLL_S = 0.1  # how often a blocked thread looks for close(): every socket wait is bounded by it


class LinkRelayFailed(TestbedError):
    """A link relay's own thread failed or did not end; ``__cause__`` is the original error."""


@dataclass(frozen=True)
class DirectionStats:
    """What one direction of a relay carried.

    Args:
        bytes: bytes read from the sending side.
        chunks: reads that carried them (TCP has no messages: a chunk is what one read returned).
    """

    bytes: int
    chunks: int


@dataclass(frozen=True)
class RelayStats:
    """What a relay carried since it started.

    Args:
        up: client to upstream (toward the policy server).
        down: upstream to client (toward the run).
        connections: client connections accepted.
        failed_connects: accepted connections whose dial to the upstream failed (the client was closed).
        resets: connections ended by an error on either side (reset, broken pipe, a stalled peer).
    """

    up: DirectionStats
    down: DirectionStats
    connections: int
    failed_connects: int
    resets: int


class _Closed(Exception):
    """The connection or the relay is closing: a thread stops quietly."""


class _Counter:
    def __init__(self) -> None:
        self.bytes = 0
        self.chunks = 0

    def snapshot(self) -> DirectionStats:
        return DirectionStats(self.bytes, self.chunks)


class LinkRelay:
    """A TCP relay on ``listen_host`` (a free port unless given) to ``upstream`` through an emulated link.

    It starts serving when constructed; ``close()`` or the end of a ``with`` block stops it.
    Connection ``i`` (0 for the first accepted) draws its delays from ``connection_generators(seed, i)``,
    so a run with the same seed and the same connections sees the same delays.

    Args:
        upstream: ``host:port`` (``[v6]:port`` for IPv6) or ``(host, port)`` to forward to.
        link: the link to emulate, the same law each way (a ``LinkSpec`` or the sites profile's model).
        seed: seeds the delays (an int or a ``numpy.random.SeedSequence``).
        listen_host: address to listen on.
        listen_port: port to listen on; 0 picks a free one.
        connect_timeout_s: deadline to dial the upstream for each accepted connection.
        stall_timeout_s: a peer that takes no bytes for this long while some wait for it ends the connection.
        max_buffer_bytes: bytes a direction holds before it stops reading from its sender.

    Raises:
        BridgeConfigError: ``upstream`` is malformed or the listening address cannot be bound.
        ScenarioError: a figure of ``link`` is out of range.
    """

    def __init__(
        self,
        upstream: str | tuple[str, int],
        link: LinkFigures,
        *,
        seed: int | np.random.SeedSequence = 0,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        connect_timeout_s: float = 5.0,
        stall_timeout_s: float = 30.0,
        max_buffer_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.upstream = _parse_upstream(upstream)
        self._model = DelayModel(link)
        self.link = self._model.link
        self._seed = seed
        self._connect_timeout_s = connect_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._max_buffer_bytes = max(int(max_buffer_bytes), READ_BYTES)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._closed = False
        self._failure: LinkRelayFailed | None = None
        self._threads: list[threading.Thread] = []
        self._connections: set[_Connection] = set()
        self._up = _Counter()
        self._down = _Counter()
        self._accepted = 0
        self._failed_connects = 0
        self._resets = 0
        try:
            self._listener = socket.create_server((listen_host, listen_port),
                                                  family=_family(listen_host), backlog=16)
        except OSError as exc:
            raise BridgeConfigError(f"link relay: cannot listen on {listen_host}:{listen_port} "
                                    f"({exc.strerror or exc}); pick another port or 0") from exc
        self._listener.settimeout(POLL_S)
        self.host = listen_host
        self.port: int = self._listener.getsockname()[1]
        self._accept_thread = self._start_thread("accept", self._accept_loop)

    @property
    def address(self) -> str:
        """``host:port`` to dial instead of the upstream."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def stats(self) -> RelayStats:
        """Bytes and chunks carried each way, and connection counts.

        Raises:
            LinkRelayFailed: one of the relay's threads failed.
        """
        self.check()
        with self._lock:
            return RelayStats(self._up.snapshot(), self._down.snapshot(), self._accepted,
                              self._failed_connects, self._resets)

    def check(self) -> None:
        """Raise if one of the relay's threads failed.

        Raises:
            LinkRelayFailed: the first failure, with the original error as ``__cause__``.
        """
        failure = self._failure
        if failure is not None:
            raise failure

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, end every connection, join every thread; later calls do nothing.

        Raises:
            LinkRelayFailed: a thread failed while the relay ran, or did not end within ``timeout_s``.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stopping.set()
        _shutdown(self._listener)
        end = time.monotonic() + timeout_s
        # the accept thread starts every other thread: once it has ended, the list below is complete
        self._accept_thread.join(timeout_s)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.abort()
        for thread in self._all_threads():
            thread.join(max(0.0, end - time.monotonic()))
        self._listener.close()
        stuck = [thread.name for thread in self._all_threads() if thread.is_alive()]
        if stuck:
            raise LinkRelayFailed(f"link relay to {_format(self.upstream)}: thread(s) {', '.join(stuck)} "
                                  f"did not end within {timeout_s} s of close()")
        self.check()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- threads -------------------------------------------------------------------------

    def _all_threads(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    def _start_thread(self, name: str, target: Callable[[], None],
                      on_exit: Callable[[bool], None] | None = None) -> threading.Thread:
        thread = threading.Thread(target=self._guard, args=(name, target, on_exit),
                                  name=f"link-relay-{self.port}-{name}", daemon=True)
        with self._lock:
            # threads that ended did so cleanly or recorded their failure: forget them (not those yet to start)
            self._threads = [t for t in self._threads if t.ident is None or t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

    def _guard(self, name: str, target: Callable[[], None], on_exit: Callable[[bool], None] | None) -> None:
        failed = False
        try:
            target()
        except _Closed:
            pass
        except BaseException as exc:  # a bug in the relay: reported by the next call, never swallowed
            failure = LinkRelayFailed(f"link relay to {_format(self.upstream)}: thread {name} failed: "
                                      f"{type(exc).__name__}: {exc}")
            failure.__cause__ = exc
            with self._lock:
                self._failure = self._failure or failure
            failed = True
        finally:
            if on_exit is not None:
                on_exit(failed)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            self._open(client)

    def _open(self, client: socket.socket) -> None:
        with self._lock:
            self._accepted += 1
            index = self._accepted
        try:
            upstream = socket.create_connection(self.upstream, timeout=self._connect_timeout_s)
        except OSError:
            with self._lock:
                self._failed_connects += 1
            client.close()  # the client sees the refusal as a closed connection
            return
        up_rng, down_rng = connection_generators(self._seed, index - 1)
        connection = _Connection(self, index, client, upstream, up_rng, down_rng)
        with self._lock:
            closed = self._closed
            if not closed:
                self._connections.add(connection)
        if closed:
            connection.discard()
            return
        connection.start()

    def _connection_ended(self, connection: _Connection, reset: bool) -> None:
        with self._lock:
            self._connections.discard(connection)
            if reset:
                self._resets += 1


class _Pipe:
    """One direction of one connection: a reader stamps each chunk with its delivery time, a writer releases it."""

    def __init__(self, connection: _Connection, name: str, source: socket.socket, sink: socket.socket,
                 direction: LinkDirection, counter: _Counter) -> None:
        self.name = name
        self._connection = connection
        self._source = source
        self._sink = sink
        self._direction = direction
        self._counter = counter
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[float, bytes | None]] = collections.deque()  # None: end of stream
        self._queued_bytes = 0
        self.finished = False  # the end of stream went out

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def read_loop(self) -> None:
        relay = self._connection.relay
        while True:
            with self._cond:
                while self._queued_bytes >= relay._max_buffer_bytes:
                    self._connection.raise_if_closing()
                    self._cond.wait(POLL_S)
            self._connection.raise_if_closing()
            try:
                data = self._source.recv(READ_BYTES)
            except TimeoutError:
                continue
            except OSError as exc:
                self._connection.fail(exc)
                return
            now = time.monotonic()
            with self._cond:
                self._queue.append((self._direction.deliver_at(now, len(data)), data or None))
                self._queued_bytes += len(data)
                self._cond.notify_all()
            if not data:
                return
            with relay._lock:
                self._counter.bytes += len(data)
                self._counter.chunks += 1

    def write_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    self._connection.raise_if_closing()
                    if self._queue:
                        wait_s = self._queue[0][0] - time.monotonic()
                        if wait_s <= 0:
                            break
                    else:
                        wait_s = POLL_S
                    self._cond.wait(min(wait_s, POLL_S))
                _, data = self._queue.popleft()
                self._queued_bytes -= len(data or b"")
                self._cond.notify_all()
            if data is None:
                try:
                    self._sink.shutdown(socket.SHUT_WR)
                except OSError as exc:
                    self._connection.fail(exc)
                    return
                self.finished = True
                self._connection.half_closed()
                return
            try:
                self._send_all(data)
            except OSError as exc:
                self._connection.fail(exc)
                return

    def _send_all(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + self._connection.relay._stall_timeout_s
        while view:
            self._connection.raise_if_closing()
            try:
                sent = self._sink.send(view)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: the receiving side took no bytes for "
                                       f"{self._connection.relay._stall_timeout_s} s") from None
                continue
            view = view[sent:]


class _Connection:
    """A client connection and its dial to the upstream, joined by two pipes (four threads)."""

    def __init__(self, relay: LinkRelay, index: int, client: socket.socket, upstream: socket.socket,
                 up_rng: np.random.Generator, down_rng: np.random.Generator) -> None:
        self.relay = relay
        self.index = index
        self._sockets = (client, upstream)
        for sock in self._sockets:
            sock.settimeout(POLL_S)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the link adds the delays, not Nagle
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._reset = False
        self._running = 4
        model = relay._model
        self._pipes = (
            _Pipe(self, f"conn{index}-up", client, upstream, LinkDirection(model, up_rng), relay._up),
            _Pipe(self, f"conn{index}-down", upstream, client, LinkDirection(model, down_rng), relay._down),
        )

    def start(self) -> None:
        for pipe in self._pipes:
            self.relay._start_thread(f"{pipe.name}-read", pipe.read_loop, self._thread_ended)
            self.relay._start_thread(f"{pipe.name}-write", pipe.write_loop, self._thread_ended)

    def raise_if_closing(self) -> None:
        if self._closing.is_set() or self.relay._stopping.is_set():
            raise _Closed

    def fail(self, exc: OSError) -> None:
        """A socket error on either side ends the whole connection, as a reset would."""
        if not self._closing.is_set() and not self.relay._stopping.is_set():
            with self._lock:
                self._reset = True
        self.abort()

    def half_closed(self) -> None:
        if all(pipe.finished for pipe in self._pipes):
            self.abort()

    def abort(self) -> None:
        self._closing.set()
        for sock in self._sockets:
            _shutdown(sock)
        for pipe in self._pipes:
            pipe.wake()

    def discard(self) -> None:
        """Close a connection whose threads never started."""
        self.abort()
        for sock in self._sockets:
            sock.close()

    def _thread_ended(self, failed: bool) -> None:
        if failed:  # the relay recorded the failure; the rest of this connection stops with it
            self.abort()
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            for sock in self._sockets:
                sock.close()
            self.relay._connection_ended(self, self._reset)


def connection_generators(seed: int | np.random.SeedSequence,
                          index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The generators (up, down) that connection ``index`` of a relay seeded with ``seed`` draws from.

    They are the children ``2*index`` and ``2*index + 1`` of ``SeedSequence(seed)``: a replay of a run can
    redraw the delays a connection saw.
    """
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    children = (np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, 2 * index + way),
                                       pool_size=root.pool_size) for way in (0, 1))
    up, down = (np.random.default_rng(child) for child in children)
    return up, down


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _format(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_upstream(upstream: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(upstream, tuple):
        host, port = upstream
    else:
        text = upstream.split("://", 1)[-1]
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit():
            raise BridgeConfigError(f"link relay upstream {upstream!r}: expected host:port (e.g. 127.0.0.1:50051)")
        port = int(port_text)
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not 0 < int(port) < 65536:
        raise BridgeConfigError(f"link relay upstream {upstream!r}: expected host:port with a port in 1..65535")
    return host, int(port)
