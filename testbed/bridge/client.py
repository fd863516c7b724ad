"""The orchestrator's gRPC policy client: an ``ActionSource`` over one long-lived stream.

A background thread runs an asyncio loop that owns the channel. ``submit`` only
encodes the observation and hands it over, so it never blocks on the network.
At most one request is in flight; a newer submit replaces an observation not yet
sent (latest wins), so a slow model never builds a backlog. ``result`` returns
the newest chunk that arrived; ``ActionChunk.step`` says which step it was
computed for, which may be earlier than the last submitted one.

Transport failures put the source in a disconnected state: ``result`` raises
``PolicyUnavailable`` while it lasts, and the background loop reconnects with
exponential backoff, re-fetches the spec (a changed spec raises ``SpecMismatch``)
and replays ``reset`` for the current episode before streaming again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar
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

        self._cond = threading.Condition()
        self._spec: PolicySpec | None = None
        self._episode = 0
        self._needs_reset = False
        self._pending: common_pb2.Observation | None = None
        self._in_flight_sent: float | None = None
        self._ready: ActionChunk | None = None
        self._failure: TestbedError | None = None  # raised once by result()
        self._unavailable: PolicyUnavailable | None = None  # raised while disconnected
        self._closed = False

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-policy-client", daemon=True)
        self._thread.start()
        self._wake: asyncio.Event = self._call(self._make_event())
        self._channel: grpc.aio.Channel = self._call(self._open_channel())
        self._stub = policy_pb2_grpc.PolicyServiceStub(self._channel)
        self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop)

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
        with self._cond:
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

    def submit(self, obs: Mapping[str, np.ndarray], step: int) -> None:
        """Queue ``obs`` (taken at policy step ``step``) for the policy; returns at once."""
        with self._cond:
            msg = codec.encode_observation(obs, episode=self._episode, step=int(step))
            self._pending = msg
        self._loop.call_soon_threadsafe(self._wake.set)

    def result(self, timeout_s: float | None) -> ActionChunk | None:
        """The newest chunk that arrived, waiting at most ``timeout_s`` (None: forever).

        Raises:
            SpecMismatch: the server refused the observation or its policy gave a bad chunk.
            PolicyUnavailable: the server is unreachable (reconnection continues in the background),
                or its policy raised.
        """
        end = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        with self._cond:
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
                self._cond.wait(remaining)

    def close(self) -> None:
        """Close the stream and the channel and stop the background thread."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._task.cancel()
        with contextlib.suppress(Exception):
            self._call(self._channel.close(), timeout_s=2.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> GrpcActionSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- background loop -----------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = 10.0) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except TimeoutError as exc:
            future.cancel()
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
        with self._cond:
            episode = self._episode
        try:
            await self._stub.Reset(
                policy_pb2.ResetRequest(episode=episode), timeout=self._deadline_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, self.endpoint, f"Reset(episode={episode})") from exc
        with self._cond:
            if self._episode == episode:
                self._needs_reset = False

    async def _connect(self) -> None:
        """Probe the server: spec (must not change), then the pending reset."""
        spec = await self._fetch_spec()
        with self._cond:
            if self._spec is not None and spec != self._spec:
                self._failure = SpecMismatch(
                    f"{self.endpoint}: the server's spec changed after reconnecting "
                    f"(was {self._spec.model_name} {self._spec.model_version}, "
                    f"now {spec.model_name} {spec.model_version})"
                )
                self._cond.notify_all()
            self._spec = self._spec or spec
            needs_reset = self._needs_reset
        if needs_reset:
            await self._send_reset()
        with self._cond:
            self._unavailable = None
            self._cond.notify_all()

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
                with self._cond:
                    self._failure = exc
                    self._cond.notify_all()
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
        with self._cond:
            self._unavailable = error
            self._needs_reset = True  # a restarted server has a fresh policy instance
            self._in_flight_sent = None
            self._cond.notify_all()

    def _take_pending(self) -> common_pb2.Observation | None:
        with self._cond:
            if self._in_flight_sent is not None or self._pending is None:
                return None
            msg, self._pending = self._pending, None
            if msg.episode != self._episode:
                return None
            self._in_flight_sent = time.perf_counter()
            return msg

    async def _stream(self) -> None:
        call = self._stub.StreamAct(metadata=self._metadata)

        async def send() -> None:
            while True:
                await self._wake.wait()
                self._wake.clear()
                msg = self._take_pending()
                if msg is not None:
                    await call.write(msg)

        sender = asyncio.ensure_future(send())
        try:
            self._wake.set()  # something may have been submitted while disconnected
            while True:
                result = await call.read()
                if result is grpc.aio.EOF:
                    raise PolicyUnavailable(f"{self.endpoint}: the server closed the stream")
                self._deliver(result)
        finally:
            sender.cancel()
            call.cancel()

    async def _unary(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            msg = self._take_pending()
            if msg is None:
                continue
            try:
                chunk = await self._stub.Act(msg, timeout=self._deadline_s, metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    raise
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # a late answer is just None
                    with self._cond:
                        self._failure = translate(exc, self.endpoint, f"Act(step={msg.step})")
                        self._failure.__cause__ = exc
                        self._cond.notify_all()
                with self._cond:
                    self._in_flight_sent = None
                self._wake.set()
                continue
            self._deliver(policy_pb2.ActResult(chunk=chunk))

    def _deliver(self, result: policy_pb2.ActResult) -> None:
        """Hand one server answer to ``result()`` (called on the loop thread)."""
        now = time.perf_counter()
        with self._cond:
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
            self._cond.notify_all()
        self._wake.set()  # the next pending observation may go now


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _read(path: Path | None, name: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BridgeConfigError(f"policy {name} {path}: cannot read ({exc})") from exc
