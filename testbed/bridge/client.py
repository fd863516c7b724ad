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

A server that stops answering is dropped rather than waited on: a request unanswered
for ``hang_s`` makes ``result`` raise ``PolicyUnavailable``, and so does ``reset`` find
one unanswered for longer than the deadline; either way the source opens a new
stream under a new session id (the server serialises a session's calls, so the
old session stays stuck behind the hung one) and replays ``reset`` there. An
unexpected exception in the supervisor (a bug, or a library error of a kind not
handled here) is raised once by ``result`` as ``PolicyClientFailed`` with the
original error as its ``__cause__``; the supervisor then reconnects. If the
supervisor task ends anyway, every call raises that error until ``reset`` starts
a new one.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import grpc
import numpy as np

from testbed import interrupts
from testbed.bridge import codec
from testbed.bridge.generated import policy_pb2, policy_pb2_grpc
from testbed.bridge.server import DEFAULT_MAX_MESSAGE_BYTES, SESSION_HEADER, channel_options
from testbed.errors import BridgeConfigError, PolicyClientFailed, PolicyUnavailable, SpecMismatch, TestbedError
from testbed.policies.protocol import PolicySpec
from testbed.policies.source import ActionChunk

T = TypeVar("T")
MODES = ("stream", "unary")
HUNG_AFTER_DEADLINES = 5.0  # default hang_s, in deadlines (at least MIN_HANG_S)
MIN_HANG_S = 2.0
_SETTLE_S = 1.0  # close() waits this long at most for gRPC's own tasks of cancelled calls to finish
_SERVICE = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"]

# grpc.aio has one completion queue per process: each finished operation goes to the loop that
# started it, through call_soon_threadsafe, from whichever loop runs next. Operations of calls
# cancelled by close() can finish after it returns, so closing the private loop there made the
# next source's loop raise "Event loop is closed" tracebacks. A closed source's loop is kept,
# open, for the next source instead (a late completion then runs there and does nothing).
_idle_loops: list[asyncio.AbstractEventLoop] = []
_idle_loops_lock = threading.Lock()


def _take_loop() -> asyncio.AbstractEventLoop:
    with _idle_loops_lock:
        if _idle_loops:
            return _idle_loops.pop()
    return asyncio.new_event_loop()


def _keep_loop(loop: asyncio.AbstractEventLoop) -> None:
    with _idle_loops_lock:
        _idle_loops.append(loop)


@atexit.register
def _close_idle_loops() -> None:
    with _idle_loops_lock:
        loops = list(_idle_loops)
        _idle_loops.clear()
    for loop in loops:
        loop.close()


def _method_path(name: str) -> str:
    return f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name[name].name}"


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
        hang_s: a request unanswered for this long means the server hangs: the stream and the
            session are dropped and a new one is opened. Default: 5 deadlines, at least 2 s.
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
        hang_s: float | None = None,
    ) -> None:
        if mode not in MODES:
            raise BridgeConfigError(f"policy mode {mode!r}: expected one of {', '.join(MODES)}")
        if deadline_s <= 0:
            raise BridgeConfigError(f"policy deadline_s {deadline_s}: expected a positive number of seconds")
        if hang_s is not None and hang_s < deadline_s:
            raise BridgeConfigError(f"policy hang_s {hang_s}: expected at least deadline_s ({deadline_s})")
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
        self._auth: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._metadata = self._new_session()
        self._deadline_s = deadline_s
        self._hang_s = hang_s if hang_s is not None else max(HUNG_AFTER_DEADLINES * deadline_s, MIN_HANG_S)
        self._mode = mode
        self._backoff_s = backoff_s
        self._backoff_next_s = backoff_s[0]  # the supervisor's next wait; back to the first once connected
        self._options = channel_options(max_message_bytes)

        # one caller at a time drives the private loop; RLock: helpers nest under the public methods
        self._cond = threading.RLock()
        self._spec: PolicySpec | None = None
        self._episode = 0
        self._needs_reset = False
        self._pending: bytes | None = None  # the next observation's wire bytes, not sent yet
        self._pending_episode = 0
        self._pending_step = 0
        self._encode = codec.ObservationEncoder()
        self._chunks: codec.ChunkDecoder | None = None  # made with the spec
        self._in_flight_sent: float | None = None
        self._in_flight_step = 0
        # since when this session owes an answer (perf_counter); None when it owes none
        self._owed_since: float | None = None
        self._ready: ActionChunk | None = None
        self._failure: TestbedError | None = None  # raised once by result()
        self._unavailable: PolicyUnavailable | None = None  # raised while disconnected
        self._dead: PolicyClientFailed | None = None  # raised by every call once the supervisor ended
        self._closed = False
        self._waiting = False  # result() is turning the loop until _notify stops it
        self._timer: asyncio.TimerHandle | None = None  # stops the loop at _timer_at (loop.time()), see _await_arrival
        self._timer_at = 0.0
        self._next: asyncio.Future[None] | None = None  # the sender task waits on it for a submit
        self._session_task: asyncio.Task[None] | None = None

        self._loop = _take_loop()
        with self._cond, self._signals_held():
            self._sending: asyncio.Event = self._call(self._make_event())  # connected, the sender waits
            self._channel: grpc.aio.Channel = self._call(self._open_channel())
            self._stub = policy_pb2_grpc.PolicyServiceStub(self._channel)
            # wire bytes both ways: observations from ObservationEncoder (no message objects, one
            # copy), answers read by ChunkDecoder (a message only for errors and odd layouts)
            self._stream_act = self._channel.stream_stream(_method_path("StreamAct"))
            self._act = self._channel.unary_unary(_method_path("Act"))
            self._task = self._start_supervisor()
            self._pump(1)

    # ----- public ActionSource surface -------------------------------------------------------

    def spec(self) -> PolicySpec:
        """The server's spec, fetched once.

        Raises:
            PolicyUnavailable: the server cannot be reached within the deadline.
            SpecMismatch: the server's spec is malformed.
        """
        with self._cond, self._signals_held():
            if self._spec is not None:
                return self._spec
            spec = self._call(self._fetch_spec(), timeout_s=self._deadline_s + 1.0)
            self._keep_spec(spec)
            return self._spec or spec

    def reset(self, episode: int) -> None:
        """Start ``episode``: drop pending and in-flight work, reset the server-side policy.

        If the server cannot be reached the reset is remembered and replayed on reconnect.

        A request of the previous episode still unanswered after the deadline means the server
        hangs on it: the session is dropped and the reset goes to a new one (a new policy instance
        on the server). A supervisor that ended is started again.

        Raises:
            PolicyUnavailable: the Reset call failed; the source stays usable.
        """
        with self._cond, self._signals_held():
            self._episode = int(episode)
            self._pending = None
            self._ready = None
            self._failure = None
            self._needs_reset = True
            if self._dead is not None and not self._closed:
                self._dead = None
                self._task = self._start_supervisor()
            if self._owed_since is not None and time.perf_counter() - self._owed_since > self._deadline_s:
                self._abandon_session()
            self._call(self._send_reset(), timeout_s=self._deadline_s + 1.0)
            # let the supervisor finish connecting now, so that the first submit goes out at once
            self._drive(self._wait_event(self._sending, self._deadline_s))

    def submit(self, obs: Mapping[str, np.ndarray], step: int) -> None:
        """Queue ``obs`` (taken at policy step ``step``) for the policy; returns at once."""
        with self._cond, self._signals_held():
            if self._closed:
                return
            if self._dead is not None:
                raise self._dead
            step = int(step)
            self._pending = self._encode(obs, episode=self._episode, step=step)
            self._pending_episode = self._episode
            self._pending_step = step
            self._wake_sender()
            # the sender task starts the write now, in the C core; unary mode needs a turn more
            self._pump(1 if self._mode == "stream" else 2)

    def result(self, timeout_s: float | None) -> ActionChunk | None:
        """The newest chunk that arrived, waiting at most ``timeout_s`` (None: until one arrives or fails).

        Even with ``timeout_s`` None the wait ends, with ``PolicyUnavailable``, once the request in
        flight has been unanswered for ``hang_s``.

        Raises:
            SpecMismatch: the server refused the observation or its policy gave a bad chunk.
            PolicyUnavailable: the server is unreachable (reconnection continues in the background),
                its policy raised, or a request went unanswered for ``hang_s`` (a new session is opened).
            PolicyClientFailed: the client itself failed (raised once; every time if its supervisor ended).
        """
        end = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        with self._cond, self._signals_held():
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
                if self._dead is not None:
                    raise self._dead
                owed = self._owed_since
                if owed is not None and time.perf_counter() - owed > self._hang_s:
                    step = self._in_flight_step
                    self._abandon_session()
                    raise PolicyUnavailable(
                        f"{self.endpoint}: no answer to step {step} for {self._hang_s:.1f} s (hang_s); "
                        "dropped the stream, reconnecting under a new session")
                remaining = None if end is None else end - time.monotonic()
                if remaining is None and self._unavailable is not None:
                    raise PolicyUnavailable(str(self._unavailable)) from self._unavailable.__cause__
                if remaining is not None and remaining <= 0:
                    if self._unavailable is not None:
                        raise PolicyUnavailable(str(self._unavailable)) from self._unavailable.__cause__
                    return None
                if self._closed:
                    raise PolicyUnavailable(f"{self.endpoint}: the policy client is closed")
                if remaining is None:
                    # no wait is without a deadline: wake when the owed answer is hang_s late (checked
                    # above), or after hang_s to look again (a request may go out meanwhile)
                    owed = self._owed_since
                    remaining = self._hang_s if owed is None else max(0.0, owed + self._hang_s - time.perf_counter())
                    remaining += 0.001  # past the due time, so that the check above sees it late
                self._await_arrival(remaining)

    def close(self) -> None:
        """Close the stream and the channel and stop the supervisor task.

        Raises:
            PolicyClientFailed: the supervisor task did not end (the loop is then not reused).
        """
        with self._cond, self._signals_held():
            if self._closed:
                return
            self._closed = True
            self._task.cancel()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            with contextlib.suppress(Exception):
                self._call(self._channel.close(), timeout_s=2.0)
            with contextlib.suppress(Exception):
                self._call(asyncio.gather(self._task, return_exceptions=True), timeout_s=2.0)
            if not self._task.done():
                raise PolicyClientFailed(f"{self.endpoint}: the policy client's supervisor task did not end "
                                         "within 2 s of close()")
            with contextlib.suppress(Exception):
                self._drive(self._settle())
            _keep_loop(self._loop)

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

    def _run_loop(self) -> None:
        """Run the private loop until it is stopped (caller holds ``_cond``)."""
        if asyncio._get_running_loop() is None:  # the usual case: no loop runs in this thread
            self._loop.run_forever()
            return
        with ThreadPoolExecutor(1, thread_name_prefix="grpc-policy-client") as helper:
            helper.submit(self._loop.run_forever).result()

    def _signals_held(self) -> interrupts.Held:
        """SIGTERM and Ctrl-C kept for the length of a call, then raised (the caller holds ``_cond``).

        Raised in the middle of an asyncio call (``call_soon``, a gRPC callback) they would lose a
        task's wake-up or be dropped; a wait for an answer ends early instead (``_end_wait``).
        """
        return interrupts.Held(self._end_wait)

    def _end_wait(self) -> None:
        """Called by a signal handler: end a wait in ``_await_arrival`` (a no-op if none is on)."""
        if self._waiting:
            self._loop.call_soon_threadsafe(self._notify)

    def _pump(self, iterations: int) -> None:
        """Turn the private loop ``iterations`` times without blocking (caller holds ``_cond``).

        One turn takes a woken sender to a started C-core write; two take an answer the C core
        holds through the reader task into ``_deliver``.
        """
        for _ in range(iterations):
            self._loop.stop()  # stopped before it runs: run_forever polls once, runs what is ready, returns
            self._run_loop()

    def _await_arrival(self, timeout_s: float | None) -> None:
        """Turn the private loop until ``_notify`` or ``timeout_s`` passes (caller holds ``_cond``).

        ``_notify`` stops the loop itself, in the turn that delivers: no future to resolve and
        no turn more to notice it. The timeout is a timer kept from call to call while it is
        due no later than this call's (it may then end the wait early; ``result`` waits again):
        the run loop asks with the same timeout every step, and a timer made and cancelled
        per call was several Python calls in every round trip.
        """
        loop = self._loop
        if timeout_s is not None:
            when = loop.time() + timeout_s
            if self._timer is None or self._timer_at > when:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(when, self._timer_fired)
                self._timer_at = when
        self._waiting = True
        try:
            self._run_loop()
        finally:
            self._waiting = False

    def _timer_fired(self) -> None:
        self._timer = None
        self._notify()

    def _notify(self) -> None:
        """Wake ``result()`` if it waits: an answer, a failure or a connection change arrived."""
        if self._waiting:
            self._waiting = False
            self._loop.stop()  # run_forever returns after this turn

    def _wake_sender(self) -> None:
        """Let the sender task look at ``_pending`` again, if it waits for a submit."""
        waiter = self._next
        if waiter is not None:
            self._next = None
            if not waiter.done():
                waiter.set_result(None)

    def _keep_spec(self, spec: PolicySpec) -> None:
        """Remember the server's first spec (the one answers are checked against)."""
        if self._spec is None:
            self._spec = spec
            self._chunks = codec.ChunkDecoder(spec)

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
        self._keep_spec(spec)
        needs_reset = self._needs_reset
        if needs_reset:
            await self._send_reset()
        self._unavailable = None
        self._backoff_next_s = self._backoff_s[0]
        self._notify()

    @staticmethod
    async def _settle() -> None:
        """Let gRPC's own tasks of the cancelled calls finish, so the loop is kept clean."""
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=_SETTLE_S)

    def _new_session(self) -> tuple[tuple[str, str], ...]:
        """Call metadata naming a new session (a policy instance of its own on the server)."""
        return ((SESSION_HEADER, uuid.uuid4().hex), *self._auth)

    def _abandon_session(self) -> None:
        """Drop the stream of a server that hangs; the supervisor reconnects under a new session at once."""
        self._metadata = self._new_session()
        self._in_flight_sent = None
        self._owed_since = None
        self._needs_reset = True
        self._sending.clear()
        if self._session_task is not None:
            self._session_task.cancel()

    def _start_supervisor(self) -> asyncio.Task[None]:
        task = self._loop.create_task(self._run())
        task.add_done_callback(self._supervisor_ended)
        return task

    def _supervisor_ended(self, task: asyncio.Task[None]) -> None:
        """Report the supervisor's end, unless close() ended it: every call raises it from now on."""
        if self._closed or task is not self._task:
            return
        cause = None if task.cancelled() else task.exception()
        if cause is not None:
            what = f"raised {type(cause).__name__}: {cause}"
        else:
            what = "was cancelled" if task.cancelled() else "returned"
        dead = PolicyClientFailed(f"{self.endpoint}: the policy client's supervisor task stopped: it {what}; "
                                  "reset() starts a new one")
        dead.__cause__ = cause
        self._dead = dead
        self._notify()

    async def _run(self) -> None:
        while not self._closed:
            session = self._session_task = asyncio.ensure_future(self._session())
            try:
                await session
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if self._closed or (current is not None and current.cancelling()):
                    raise
                continue  # _abandon_session() ended it: reconnect at once
            except (grpc.aio.AioRpcError, PolicyUnavailable) as exc:
                self._mark_unavailable(exc)
            except TestbedError as exc:  # e.g. a malformed spec from the server
                self._failure = exc
                self._notify()
            except Exception as exc:  # a bug or an unexpected library error: report it, then reconnect
                self._report_failure(exc)
            finally:
                self._session_task = None
            await asyncio.sleep(self._backoff_next_s * random.uniform(0.8, 1.2))
            self._backoff_next_s = min(self._backoff_next_s * 2.0, self._backoff_s[1])

    async def _session(self) -> None:
        """Connect, then stream (or call) until the connection fails."""
        self._in_flight_sent = self._owed_since = None  # answers to an earlier stream never come on this one
        await self._connect()
        if self._mode == "stream":
            await self._stream()
        else:
            await self._unary()

    def _report_failure(self, exc: Exception) -> None:
        failure = PolicyClientFailed(
            f"{self.endpoint}: the policy client failed: {type(exc).__name__}: {exc}; reconnecting")
        failure.__cause__ = exc
        self._mark_unavailable(failure)
        self._failure = failure
        self._notify()

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
        self._owed_since = None
        self._notify()

    def _take_pending(self) -> bytes | None:
        """The pending observation's bytes, now in flight; None if there is none or one is in flight."""
        payload = self._pending
        if payload is None or self._in_flight_sent is not None:
            return None
        self._pending = None
        if self._pending_episode != self._episode:
            return None
        self._in_flight_sent = sent = time.perf_counter()
        self._in_flight_step = self._pending_step
        if self._owed_since is None:
            self._owed_since = sent
        return payload

    async def _stream(self) -> None:
        call = self._stream_act(metadata=self._metadata)

        async def send() -> None:
            # waits for the next submit itself (or for an answer that lets a pending observation
            # go); the reader below stays posted, so an answer is received by the C core while the
            # caller works, and a broken stream is seen at once
            try:
                while True:
                    payload = self._take_pending()
                    if payload is None:
                        waiter = self._next = self._loop.create_future()
                        await waiter
                    else:
                        await call.write(payload)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return  # the call ended: the reader reports why

        await call.wait_for_connection()  # headers sent: the first write goes out on the next turn
        sender = asyncio.ensure_future(send())  # sends what was submitted while disconnected, too
        try:
            self._sending.set()
            while True:
                result = await call.read()
                if result is grpc.aio.EOF:
                    raise PolicyUnavailable(f"{self.endpoint}: the server closed the stream")
                self._deliver(result)
        finally:
            self._next = None
            self._sending.clear()
            sender.cancel()
            call.cancel()

    async def _unary(self) -> None:
        self._sending.set()
        try:
            await self._unary_calls()
        finally:
            self._next = None
            self._sending.clear()

    async def _unary_calls(self) -> None:
        metadata = grpc.aio.Metadata(*self._metadata)  # converted once, not in every call
        while True:
            payload = self._take_pending()
            if payload is None:
                waiter = self._next = self._loop.create_future()
                await waiter
                continue
            try:
                chunk = await self._act(payload, timeout=self._deadline_s, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    raise
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # a late answer is just None
                    self._owed_since = None  # the server answered, with an error
                    self._failure = translate(exc, self.endpoint, f"Act(step={self._in_flight_step})")
                    self._failure.__cause__ = exc
                    self._notify()
                self._in_flight_sent = None
                continue
            self._deliver(chunk, unary=True)

    def _deliver(self, result: bytes, unary: bool = False) -> None:
        """Hand one server answer to ``result()`` (runs on the private loop).

        Args:
            result: ``ActResult`` wire bytes (``StreamAct``), or ``ActionChunk`` wire bytes with ``unary``.
            unary: ``result`` is a unary ``Act`` answer.
        """
        now = time.perf_counter()
        sent = self._in_flight_sent
        self._in_flight_sent = None
        self._owed_since = None
        latency_ms = 0.0 if sent is None else (now - sent) * 1e3
        chunks = self._chunks
        decoded = (None if chunks is None else chunks.chunk(result, latency_ms=latency_ms) if unary
                   else chunks.result(result, latency_ms=latency_ms))
        if decoded is not None:  # the usual answer: a valid chunk of the full size
            chunk, episode = decoded
            if episode == self._episode and (self._ready is None or chunk.step >= self._ready.step):
                self._ready = chunk
        else:
            self._deliver_message(policy_pb2.ActResult.FromString(codec.act_result_bytes(result) if unary else result),
                                  latency_ms)
        self._notify()
        if self._pending is not None:
            self._wake_sender()  # the next pending observation may go now

    def _deliver_message(self, result: policy_pb2.ActResult, latency_ms: float) -> None:
        """An answer ``ChunkDecoder`` did not read: an error, or a chunk to check (and name what is wrong)."""
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


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _read(path: Path | None, name: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BridgeConfigError(f"policy {name} {path}: cannot read ({exc})") from exc
