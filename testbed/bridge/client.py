"""The orchestrator's gRPC policy client: an ``ActionSource`` over one long-lived stream.

The source owns a private asyncio loop that only runs inside its own methods, in
the caller's thread (no background thread). ``submit`` encodes the observation
and turns the loop for a few non-blocking iterations, which starts the write in
gRPC's C core; the bytes then travel, and the answer arrives and is buffered,
without any Python thread needing the GIL. ``result`` runs the loop until the
answer is read. Why: the run loop steps pybullet (holding the GIL) between
``submit`` and ``result``; a background Python thread could not get the GIL to
send the request until ``result`` blocked, so the round trip never overlapped
the physics (measured: the whole latency was spent waiting inside ``result``).

At most one request is in flight; a newer submit replaces an observation not yet
sent (latest wins), so a slow model never builds a backlog. ``result`` returns
the newest chunk that arrived; ``ActionChunk.step`` says which step it was
computed for, which may be earlier than the last submitted one.

Transport failures put the source in a disconnected state: ``result`` raises
``PolicyUnavailable`` while it lasts, and the source's supervisor task reconnects
with exponential backoff (progressing whenever the caller is inside ``submit`` or
``result``), re-fetches the spec (a changed spec raises ``SpecMismatch``) and
replays ``reset`` for the current episode before streaming again. Methods may be
called from any thread (one at a time, under a lock), including a thread that
runs an asyncio loop of its own (the private loop then turns in a helper thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import grpc
import numpy as np

from testbed.bridge import codec
from testbed.bridge.generated import common_pb2, policy_pb2, policy_pb2_grpc
from testbed.bridge.server import DEFAULT_MAX_MESSAGE_BYTES, SESSION_HEADER, channel_options
from testbed.errors import BridgeConfigError, PolicyUnavailable, SpecMismatch, TestbedError
from testbed.policies.protocol import PolicySpec
from testbed.policies.source import ActionChunk

T = TypeVar("T")
MODES = ("stream", "unary")
_SERVICE = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"]


def _method_path(name: str) -> str:
    return f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name[name].name}"


@dataclass(frozen=True, slots=True)
class _Request:
    """An observation ready to send: its episode and step, and its ``Observation`` wire bytes."""

    episode: int
    step: int
    payload: bytes


def parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """Split ``grpc://host:port`` / ``grpcs://host:port`` / ``host:port`` into (target, tls).

    Raises:
        BridgeConfigError: another scheme, or no port.
    """
    text = endpoint if "://" in endpoint else f"grpc://{endpoint}"
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError as exc:
        raise BridgeConfigError(f"policy endpoint {endpoint!r}: bad port ({exc})") from exc
    if parts.scheme not in ("grpc", "grpcs") or not parts.hostname or port is None:
        raise BridgeConfigError(f"policy endpoint {endpoint!r}: expected grpc://host:port or grpcs://host:port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", parts.scheme == "grpcs"


def translate(exc: grpc.RpcError, endpoint: str, what: str) -> TestbedError:
    """Map a gRPC failure to the testbed family (callers ``raise ... from exc``)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return SpecMismatch(f"{endpoint} {what}: {name}: {details}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return PolicyUnavailable(f"{endpoint} {what}: refused (UNAUTHENTICATED: {details}); check the token")
    return PolicyUnavailable(f"{endpoint} {what}: {name}: {details}")


class GrpcActionSource:
    """``ActionSource`` talking to a ``testbed serve-policy`` server.

    Args:
        endpoint: ``grpc://host:port`` (plaintext) or ``grpcs://host:port`` (TLS).
        token: bearer token sent with every call.
        deadline_s: deadline for unary calls (spec, reset, unary act) and the default wait in ``spec``.
        tls_ca: PEM CA to trust; giving it turns TLS on for a ``grpc://`` endpoint too.
        tls_cert: PEM client certificate for mutual TLS (with ``tls_key``).
        tls_key: PEM private key of ``tls_cert``.
        mode: ``stream`` (one StreamAct stream, the fast path) or ``unary`` (one Act call per step).
        backoff_s: (first, max) seconds between reconnect attempts; doubles with jitter.
        max_message_bytes: cap on messages either way.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        token: str | None = None,
        deadline_s: float = 1.0,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        mode: str = "stream",
        backoff_s: tuple[float, float] = (0.05, 2.0),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if mode not in MODES:
            raise BridgeConfigError(f"policy mode {mode!r}: expected one of {', '.join(MODES)}")
        if deadline_s <= 0:
            raise BridgeConfigError(f"policy deadline_s {deadline_s}: expected a positive number of seconds")
        self.endpoint = endpoint
        self._target, tls = parse_endpoint(endpoint)
        if (tls_cert is None) != (tls_key is None):
            raise BridgeConfigError("policy tls_cert and tls_key must be given together")
        self._credentials: grpc.ChannelCredentials | None = None
        if tls or tls_ca is not None:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca, "tls_ca"),
                private_key=_read(tls_key, "tls_key"),
                certificate_chain=_read(tls_cert, "tls_cert"),
            )
        self._metadata: tuple[tuple[str, str], ...] = ((SESSION_HEADER, uuid.uuid4().hex),)
        if token:
            self._metadata += (("authorization", f"Bearer {token}"),)
        self._deadline_s = deadline_s
        self._mode = mode
        self._backoff_s = backoff_s
        self._options = channel_options(max_message_bytes)

        # one caller at a time drives the private loop; RLock: helpers nest under the public methods
        self._cond = threading.RLock()
        self._spec: PolicySpec | None = None
        self._episode = 0
        self._needs_reset = False
        self._pending: _Request | None = None
        self._encode = codec.ObservationEncoder()
        self._in_flight_sent: float | None = None
        self._ready: ActionChunk | None = None
        self._failure: TestbedError | None = None  # raised once by result()
        self._unavailable: PolicyUnavailable | None = None  # raised while disconnected
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None  # what result() waits on, resolved by _notify

        self._loop = asyncio.new_event_loop()
        with self._cond:
            self._wake: asyncio.Event = self._call(self._make_event())
            self._sending: asyncio.Event = self._call(self._make_event())  # connected, the sender waits
            self._channel: grpc.aio.Channel = self._call(self._open_channel())
            self._stub = policy_pb2_grpc.PolicyServiceStub(self._channel)
            # observations go as wire bytes from ObservationEncoder: no message objects, one copy
            self._stream_act = self._channel.stream_stream(
                _method_path("StreamAct"), response_deserializer=policy_pb2.ActResult.FromString)
            self._act = self._channel.unary_unary(
                _method_path("Act"), response_deserializer=common_pb2.ActionChunk.FromString)
            self._task = self._loop.create_task(self._run())
            self._pump(1)

    # ----- public ActionSource surface -------------------------------------------------------

    def spec(self) -> PolicySpec:
        """The server's spec, fetched once.

        Raises:
            PolicyUnavailable: the server cannot be reached within the deadline.
            SpecMismatch: the server's spec is malformed.
        """
        with self._cond:
            if self._spec is not None:
                return self._spec
            spec = self._call(self._fetch_spec(), timeout_s=self._deadline_s + 1.0)
            self._spec = self._spec or spec
            return self._spec

    def reset(self, episode: int) -> None:
        """Start ``episode``: drop pending and in-flight work, reset the server-side policy.

        If the server cannot be reached the reset is remembered and replayed on reconnect.

        Raises:
            PolicyUnavailable: the Reset call failed; the source stays usable.
        """
        with self._cond:
            self._episode = int(episode)
            self._pending = None
            self._ready = None
            self._failure = None
            self._needs_reset = True
            self._call(self._send_reset(), timeout_s=self._deadline_s + 1.0)
            # let the supervisor finish connecting now, so that the first submit goes out at once
            self._drive(self._wait_event(self._sending, self._deadline_s))

    def submit(self, obs: Mapping[str, np.ndarray], step: int) -> None:
        """Queue ``obs`` (taken at policy step ``step``) for the policy; returns at once."""
        with self._cond:
            if self._closed:
                return
            step = int(step)
            self._pending = _Request(self._episode, step, self._encode(obs, episode=self._episode, step=step))
            self._wake.set()
            # the sender task starts the write now, in the C core; unary mode needs a turn more
            self._pump(1 if self._mode == "stream" else 2)

    def result(self, timeout_s: float | None) -> ActionChunk | None:
        """The newest chunk that arrived, waiting at most ``timeout_s`` (None: forever).

        Raises:
            SpecMismatch: the server refused the observation or its policy gave a bad chunk.
            PolicyUnavailable: the server is unreachable (reconnection continues in the background),
                or its policy raised.
        """
        end = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            if (self._ready is not None or self._failure is not None or self._unavailable is not None
                    or (timeout_s is not None and timeout_s <= 0)):
                # collect what arrived while the caller worked: a newer chunk, or news of the connection.
                # Otherwise waiting below does the collecting, without two loop turns spent first.
                self._pump(2)
            while True:
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    raise failure
                if self._ready is not None:
                    chunk, self._ready = self._ready, None
                    return chunk
                remaining = None if end is None else end - time.monotonic()
                if remaining is None and self._unavailable is not None:
                    raise PolicyUnavailable(str(self._unavailable)) from self._unavailable.__cause__
                if remaining is not None and remaining <= 0:
                    if self._unavailable is not None:
                        raise PolicyUnavailable(str(self._unavailable)) from self._unavailable.__cause__
                    return None
                if self._closed:
                    raise PolicyUnavailable(f"{self.endpoint}: the policy client is closed")
                self._await_arrival(remaining)

    def close(self) -> None:
        """Close the stream and the channel and stop the background thread."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._task.cancel()
            with contextlib.suppress(Exception):
                self._call(self._channel.close(), timeout_s=2.0)
            with contextlib.suppress(Exception):
                self._drive(asyncio.gather(self._task, return_exceptions=True))
            self._loop.close()

    def __enter__(self) -> GrpcActionSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- background loop -----------------------------------------------------------------

    def _drive(self, awaitable: Awaitable[T]) -> T:
        """Run the private loop until ``awaitable`` is done (caller holds ``_cond``)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no loop runs in this thread
            return self._loop.run_until_complete(awaitable)
        with ThreadPoolExecutor(1, thread_name_prefix="grpc-policy-client") as helper:
            return helper.submit(self._loop.run_until_complete, awaitable).result()

    def _pump(self, iterations: int) -> None:
        """Turn the private loop ``iterations`` times without blocking (caller holds ``_cond``).

        One turn takes a woken sender from ``Event.wait`` to a started C-core write; two
        take an answer the C core holds through the reader task into ``_deliver``.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            for _ in range(iterations):
                self._loop.call_soon(self._loop.stop)  # run_forever stops after this one turn
                self._loop.run_forever()
            return
        self._drive(self._turns(iterations))

    @staticmethod
    async def _turns(iterations: int) -> None:
        for _ in range(iterations):
            await asyncio.sleep(0)

    def _await_arrival(self, timeout_s: float | None) -> None:
        """Turn the private loop until ``_notify`` or ``timeout_s`` passes (caller holds ``_cond``).

        A bare future rather than ``wait_for(event.wait())``: the latter costs two more tasks
        and as many loop turns after the answer is read, on every round trip.
        """
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = None if timeout_s is None else self._loop.call_later(timeout_s, _resolve, waiter)
        try:
            self._drive(waiter)
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _notify(self) -> None:
        """Wake ``result()`` if it waits: an answer, a failure or a connection change arrived."""
        _resolve(self._waiter)

    @staticmethod
    async def _wait_event(event: asyncio.Event, timeout_s: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)

    def _call(self, awaitable: Awaitable[T], timeout_s: float | None = 10.0) -> T:
        async def bounded() -> T:
            return await asyncio.wait_for(awaitable, timeout_s)

        try:
            return self._drive(bounded())
        except TimeoutError as exc:
            raise PolicyUnavailable(f"{self.endpoint}: no answer within {timeout_s:.1f} s") from exc

    async def _make_event(self) -> asyncio.Event:
        return asyncio.Event()

    async def _open_channel(self) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(self._target, options=self._options)
        return grpc.aio.secure_channel(self._target, self._credentials, options=self._options)

    async def _fetch_spec(self) -> PolicySpec:
        try:
            msg = await self._stub.GetSpec(
                policy_pb2.GetSpecRequest(), timeout=self._deadline_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.endpoint, "GetSpec") from exc
        return codec.decode_spec(msg)

    async def _send_reset(self) -> None:
        episode = self._episode
        try:
            await self._stub.Reset(
                policy_pb2.ResetRequest(episode=episode), timeout=self._deadline_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.endpoint, f"Reset(episode={episode})") from exc
        if self._episode == episode:
            self._needs_reset = False

    async def _connect(self) -> None:
        """Probe the server: spec (must not change), then the pending reset."""
        spec = await self._fetch_spec()
        if self._spec is not None and spec != self._spec:
            self._failure = SpecMismatch(
                f"{self.endpoint}: the server's spec changed after reconnecting "
                f"(was {self._spec.model_name} {self._spec.model_version}, "
                f"now {spec.model_name} {spec.model_version})"
            )
            self._notify()
        self._spec = self._spec or spec
        needs_reset = self._needs_reset
        if needs_reset:
            await self._send_reset()
        self._unavailable = None
        self._notify()

    async def _run(self) -> None:
        backoff = self._backoff_s[0]
        while not self._closed:
            try:
                await self._connect()
                backoff = self._backoff_s[0]
                if self._mode == "stream":
                    await self._stream()
                else:
                    await self._unary()
            except (grpc.aio.AioRpcError, PolicyUnavailable) as exc:
                self._mark_unavailable(exc)
            except asyncio.CancelledError:
                raise
            except TestbedError as exc:  # e.g. a malformed spec from the server
                self._failure = exc
                self._notify()
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2.0, self._backoff_s[1])

    def _mark_unavailable(self, exc: BaseException) -> None:
        if isinstance(exc, grpc.aio.AioRpcError):
            error = translate(exc, self.endpoint, "StreamAct" if self._mode == "stream" else "Act")
        else:
            error = exc if isinstance(exc, TestbedError) else PolicyUnavailable(str(exc))
        if not isinstance(error, PolicyUnavailable):
            error = PolicyUnavailable(str(error))
        error.__cause__ = exc if exc is not error else exc.__cause__
        self._unavailable = error
        self._needs_reset = True  # a restarted server has a fresh policy instance
        self._in_flight_sent = None
        self._notify()

    def _take_pending(self) -> _Request | None:
        if self._in_flight_sent is not None or self._pending is None:
            return None
        request, self._pending = self._pending, None
        if request.episode != self._episode:
            return None
        self._in_flight_sent = time.perf_counter()
        return request

    async def _stream(self) -> None:
        call = self._stream_act(metadata=self._metadata)

        async def send() -> None:
            while True:
                await self._wake.wait()
                self._wake.clear()
                request = self._take_pending()
                if request is not None:
                    await call.write(request.payload)

        await call.wait_for_connection()  # headers sent: the first write goes out on the next turn
        sender = asyncio.ensure_future(send())
        try:
            self._wake.set()  # something may have been submitted while disconnected
            self._sending.set()
            while True:
                result = await call.read()
                if result is grpc.aio.EOF:
                    raise PolicyUnavailable(f"{self.endpoint}: the server closed the stream")
                self._deliver(result)
        finally:
            self._sending.clear()
            sender.cancel()
            call.cancel()

    async def _unary(self) -> None:
        self._sending.set()
        try:
            await self._unary_calls()
        finally:
            self._sending.clear()

    async def _unary_calls(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            request = self._take_pending()
            if request is None:
                continue
            try:
                chunk = await self._act(request.payload, timeout=self._deadline_s, metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    raise
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # a late answer is just None
                    self._failure = translate(exc, self.endpoint, f"Act(step={request.step})")
                    self._failure.__cause__ = exc
                    self._notify()
                self._in_flight_sent = None
                self._wake.set()
                continue
            self._deliver(policy_pb2.ActResult(chunk=chunk))

    def _deliver(self, result: policy_pb2.ActResult) -> None:
        """Hand one server answer to ``result()`` (runs on the private loop)."""
        now = time.perf_counter()
        sent = self._in_flight_sent
        self._in_flight_sent = None
        latency_ms = 0.0 if sent is None else (now - sent) * 1e3
        if result.HasField("error"):
            error = result.error
            code = _CODE_NAMES.get(error.code, str(error.code))
            message = f"{self.endpoint} step {error.step}: {code}: {error.message}"
            failure: TestbedError = (
                SpecMismatch(message) if code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION")
                else PolicyUnavailable(message)
            )
            self._failure = failure
        elif result.chunk.episode == self._episode and self._spec is not None:
            try:
                chunk = codec.decode_chunk(result.chunk, self._spec, latency_ms=latency_ms)
            except SpecMismatch as exc:
                where = f"{self.endpoint} step {result.chunk.step}"
                self._failure = SpecMismatch(f"{where}: bad chunk: {exc}")
            else:
                if self._ready is None or chunk.step >= self._ready.step:
                    self._ready = chunk
        self._notify()
        if self._pending is not None:
            self._wake.set()  # the next pending observation may go now


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _read(path: Path | None, name: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BridgeConfigError(f"policy {name} {path}: cannot read ({exc})") from exc
