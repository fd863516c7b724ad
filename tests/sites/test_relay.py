"""The link relay on loopback: the delay it adds, order, rate limit, gRPC through it, and its threads."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from testbed.bridge import GrpcActionSource, ServerOptions, start_policy_server
from testbed.bridge.reference import HoldPolicy
from testbed.errors import BridgeConfigError, PolicyUnavailable
from testbed.sites import relay as relay_module
from testbed.sites.links import DelayModel, LinkSpec
from testbed.sites.relay import LinkRelay, LinkRelayFailed, connection_generators

RECORD = struct.Struct("<I12x")  # a sequence number padded to 16 bytes
IO_TIMEOUT_S = 10.0


class _EchoServer:
    """Echoes every byte of one connection back at once; notes when each record arrived (perf_counter)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(IO_TIMEOUT_S)
        self.port = self._listener.getsockname()[1]
        self.arrivals: dict[int, float] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="echo-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
            with conn:
                conn.settimeout(IO_TIMEOUT_S)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                pending = b""
                while data := conn.recv(65536):
                    now = time.perf_counter()
                    pending += data
                    whole = len(pending) - len(pending) % RECORD.size
                    for offset in range(0, whole, RECORD.size):
                        self.arrivals[RECORD.unpack_from(pending, offset)[0]] = now
                    pending = pending[whole:]
                    conn.sendall(data)
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self._thread.join(IO_TIMEOUT_S)
        self._listener.close()
        assert not self._thread.is_alive(), "echo server thread did not end"
        if self.error is not None:
            raise self.error


@contextmanager
def _echo_server() -> Iterator[_EchoServer]:
    server = _EchoServer()
    try:
        yield server
    finally:
        server.close()


def _ping(port: int, count: int, gap_s: float) -> tuple[dict[int, float], dict[int, float], list[int]]:
    """Send ``count`` records ``gap_s`` apart without waiting for answers; return send and echo times and order."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent: dict[int, float] = {}
        echoed: dict[int, float] = {}
        order: list[int] = []
        failure: list[BaseException] = []

        def receive() -> None:
            pending = b""
            try:
                while data := conn.recv(65536):
                    now = time.perf_counter()
                    pending += data
                    whole = len(pending) - len(pending) % RECORD.size
                    for offset in range(0, whole, RECORD.size):
                        seq = RECORD.unpack_from(pending, offset)[0]
                        echoed[seq] = now
                        order.append(seq)
                    pending = pending[whole:]
            except BaseException as exc:
                failure.append(exc)

        receiver = threading.Thread(target=receive, name="ping-receiver", daemon=True)
        receiver.start()
        for seq in range(count):
            sent[seq] = time.perf_counter()
            conn.sendall(RECORD.pack(seq))
            if gap_s:
                time.sleep(gap_s)
        conn.shutdown(socket.SHUT_WR)
        receiver.join(IO_TIMEOUT_S)
        assert not receiver.is_alive(), "ping receiver did not end"
        if failure:
            raise failure[0]
    return sent, echoed, order


def _one_way_ms(count: int, gap_s: float, relay_link: LinkSpec | None) -> tuple[np.ndarray, np.ndarray]:
    """Up (client to server) and down (server to client) one-way times in ms, through a relay or direct."""
    with _echo_server() as server:
        if relay_link is None:
            sent, echoed, _ = _ping(server.port, count, gap_s)
        else:
            with LinkRelay(("127.0.0.1", server.port), relay_link, seed=3) as relay:
                sent, echoed, _ = _ping(relay.port, count, gap_s)
    assert len(echoed) == count
    up = np.array([server.arrivals[seq] - sent[seq] for seq in range(count)]) * 1e3
    down = np.array([echoed[seq] - server.arrivals[seq] for seq in range(count)]) * 1e3
    return up, down


def _relay_threads_alive(port: int) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"link-relay-{port}-") and t.is_alive()]


# ----- what the link does to the bytes --------------------------------------------------------


def test_added_one_way_delay_p50_is_within_1ms_of_a_60ms_target() -> None:
    count, gap_s, target_ms = 300, 0.005, 60.0
    base_up, base_down = _one_way_ms(count, gap_s, None)
    up, down = _one_way_ms(count, gap_s, LinkSpec(rtt_ms=2 * target_ms, jitter_ms=0.0))
    for name, through, direct in (("up", up, base_up), ("down", down, base_down)):
        added = float(np.median(through) - np.median(direct))
        assert abs(added - target_ms) <= 1.0, (
            f"{name}: the relay added a median {added:.3f} ms one way (target {target_ms} ms +- 1 ms) over "
            f"{count} records; through it p50 {np.median(through):.3f} p99 {np.percentile(through, 99):.3f} ms, "
            f"direct p50 {np.median(direct):.3f} ms")


def test_bytes_keep_their_order_under_heavy_jitter() -> None:
    count = 3000
    with _echo_server() as server, \
            LinkRelay(("127.0.0.1", server.port), LinkSpec(rtt_ms=20, jitter_ms=10), seed=4) as relay:
        _, _, order = _ping(relay.port, count, 0.0002)
        stats = relay.stats()
    assert order == list(range(count))
    assert stats.up.bytes == stats.down.bytes == count * RECORD.size
    assert stats.connections == 1 and stats.resets == 0


def test_each_round_trip_pays_the_delays_drawn_from_the_seed_retransmissions_included() -> None:
    link, seed, count = LinkSpec(rtt_ms=20, loss=0.2), 5, 20
    measured_ms = []
    with _echo_server() as server, LinkRelay(("127.0.0.1", server.port), link, seed=seed) as relay, \
            socket.create_connection(("127.0.0.1", relay.port), timeout=IO_TIMEOUT_S) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for seq in range(count):  # one record at a time: each crossing is one chunk, one draw
            start = time.perf_counter()
            conn.sendall(RECORD.pack(seq))
            assert conn.recv(RECORD.size) == RECORD.pack(seq)
            measured_ms.append((time.perf_counter() - start) * 1e3)
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(1) == b""
    model = DelayModel(link)
    up, down = connection_generators(seed, 0)
    expected_ms = [(model.propagation_s(up, RECORD.size) + model.propagation_s(down, RECORD.size)) * 1e3
                   for _ in range(count)]
    assert max(expected_ms) >= link.rtt_ms + link.rto_s * 1e3, "seed 5 should draw at least one loss"
    late_ms = np.array(measured_ms) - np.array(expected_ms)
    assert late_ms.min() >= -1.0, f"a round trip came early: measured {measured_ms}, drawn {expected_ms}"
    # each round trip paid its own draw, not another's: a lost chunk's retransmission (+220 ms here) shows in
    # that round trip and no other (the margin is for a loaded machine, not a timing figure)
    assert late_ms.max() < 100.0, f"round trips later than drawn: measured {measured_ms}, drawn {expected_ms}"


def test_transfer_time_follows_the_bandwidth() -> None:
    size, mbps = 500_000, 8.0
    expected_s = size * 8 / (mbps * 1e6)
    received = 0
    with _echo_server() as server, \
            LinkRelay(("127.0.0.1", server.port), LinkSpec(rtt_ms=0, bandwidth_mbps=mbps), seed=6) as relay, \
            socket.create_connection(("127.0.0.1", relay.port), timeout=IO_TIMEOUT_S) as conn:
        start = time.perf_counter()
        conn.sendall(bytes(size))
        conn.shutdown(socket.SHUT_WR)
        while received < size:  # the echo crosses the link too: both directions are limited, pipelined
            data = conn.recv(65536)
            assert data, f"connection closed after {received} of {size} bytes"
            received += len(data)
        elapsed_s = time.perf_counter() - start
        stats = relay.stats()
    assert stats.up.bytes == stats.down.bytes == size
    assert expected_s * 0.97 <= elapsed_s <= expected_s * 1.3 + 0.1, (
        f"{size} bytes at {mbps} Mbit/s took {elapsed_s:.3f} s through the relay, expected about {expected_s:.3f} s")


# ----- gRPC through the relay ------------------------------------------------------------------


def test_a_policy_call_through_the_relay_works_and_pays_the_round_trip() -> None:
    rtt_ms = 40.0
    server = start_policy_server(HoldPolicy, ServerOptions())
    try:
        with LinkRelay(server.address, LinkSpec(rtt_ms=rtt_ms), seed=7) as relay, \
                GrpcActionSource(f"grpc://{relay.address}", deadline_s=2.0) as source:
            assert source.spec().action_dim == 7
            source.reset(0)
            for step in range(5):
                source.submit({"observation.state": np.full(7, step / 10, np.float32)}, step)
                chunk = source.result(5.0)
                assert chunk is not None and chunk.step == step
                np.testing.assert_allclose(chunk.actions[:, 0], step / 10, rtol=1e-6)
                assert chunk.latency_ms >= rtt_ms - 1.0
            stats = relay.stats()
        assert stats.up.bytes > 0 and stats.down.bytes > 0
    finally:
        server.stop(0.1)


def test_a_grpc_deadline_shorter_than_the_link_delay_still_fires() -> None:
    server = start_policy_server(HoldPolicy, ServerOptions())
    try:
        with LinkRelay(server.address, LinkSpec(rtt_ms=600), seed=8) as relay, \
                grpc.insecure_channel(relay.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=0.2)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # the path works: a deadline longer than the round trip gets the answer
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5.0)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(0.1)


def test_the_policy_client_reports_its_deadline_when_the_link_is_slower() -> None:
    server = start_policy_server(HoldPolicy, ServerOptions())
    try:
        with LinkRelay(server.address, LinkSpec(rtt_ms=600), seed=9) as relay, \
                GrpcActionSource(f"grpc://{relay.address}", deadline_s=0.25, mode="unary") as source, \
                pytest.raises(PolicyUnavailable, match=r"Reset\(episode=0\): DEADLINE_EXCEEDED"):
            source.reset(0)
    finally:
        server.stop(0.1)


# ----- lifecycle -------------------------------------------------------------------------------


def test_close_joins_every_thread() -> None:
    with _echo_server() as server:
        relay = LinkRelay(("127.0.0.1", server.port), LinkSpec(rtt_ms=10), seed=10)
        conn = socket.create_connection(("127.0.0.1", relay.port), timeout=IO_TIMEOUT_S)
        conn.sendall(RECORD.pack(1))
        assert conn.recv(RECORD.size) == RECORD.pack(1)
        assert len(_relay_threads_alive(relay.port)) == 5  # accept + a reader and a writer each way
        relay.close()  # with the connection still open
        assert _relay_threads_alive(relay.port) == []
        assert conn.recv(1) == b""
        conn.close()
        relay.close()  # a second close does nothing


def test_close_reports_a_thread_that_did_not_end() -> None:
    relay = LinkRelay(("127.0.0.1", 9), LinkSpec(rtt_ms=10), seed=11)
    relay._start_thread("stuck", lambda: time.sleep(1.0))
    with pytest.raises(LinkRelayFailed, match=r"thread\(s\) link-relay-\d+-stuck did not end within 0.2 s"):
        relay.close(timeout_s=0.2)
    for thread in threading.enumerate():
        if thread.name.endswith("-stuck"):
            thread.join(5.0)


def test_a_dead_worker_thread_surfaces_on_the_next_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: object, sent_s: float, size_bytes: int) -> float:
        raise RuntimeError("schedule broke")

    monkeypatch.setattr(relay_module.LinkDirection, "deliver_at", broken)
    with _echo_server() as server:
        relay = LinkRelay(("127.0.0.1", server.port), LinkSpec(rtt_ms=10), seed=12)
        with socket.create_connection(("127.0.0.1", relay.port), timeout=IO_TIMEOUT_S) as conn:
            conn.sendall(b"x")
            assert conn.recv(1) == b""  # the connection ends with its failed thread
        with pytest.raises(LinkRelayFailed, match=r"thread conn1-up-read failed: RuntimeError: schedule broke"):
            relay.stats()
        with pytest.raises(LinkRelayFailed, match="schedule broke"):
            relay.close()
        assert _relay_threads_alive(relay.port) == []


def test_an_unreachable_upstream_closes_the_client_and_is_counted() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]  # a port nothing listens on once closed
    with LinkRelay(("127.0.0.1", port), LinkSpec(rtt_ms=10), seed=13) as relay:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=IO_TIMEOUT_S) as conn:
            assert conn.recv(1) == b""
        deadline = time.monotonic() + IO_TIMEOUT_S
        while relay.stats().failed_connects == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert relay.stats().failed_connects == 1


@pytest.mark.parametrize("upstream", ["localhost", "127.0.0.1:http", "127.0.0.1:0", ":50051"])
def test_a_malformed_upstream_is_refused(upstream: str) -> None:
    with pytest.raises(BridgeConfigError, match=r"link relay upstream .*expected host:port"):
        LinkRelay(upstream, LinkSpec(rtt_ms=10))
