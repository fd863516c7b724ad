"""The policy server: serves any ``Policy`` over ``testbed.v1.PolicyService`` (synchronous grpc).

Concurrency: a synchronous ``grpc.server`` whose handler threads decode, call the
policy and encode in place. An open ``StreamAct`` stream owns one thread, so its
observations are answered without any hand-off between threads (an asyncio server
plus an executor hop measured ~0.1 ms slower per round trip here). Unary calls
share ``max_workers`` more threads; streams beyond ``max_streams`` are refused with
``RESOURCE_EXHAUSTED`` rather than left waiting. Each client session (metadata
header ``testbed-session``) gets its own policy instance, guarded by its own lock,
so episode state is never shared between clients and a slow request of one client
never blocks another's. Calls without the header share one default instance.
Sessions beyond ``max_sessions`` evict the least recently used one. ``Act`` and
``StreamAct`` are served on wire bytes (``PolicyServicer.add_to_server``), and the
request counters are per handler thread: no lock is taken per request but the session's.

Closing: a policy with a ``close()`` method has it called once, when its session is
evicted (by the request thread that evicts it, after any call running on that policy
has returned, holding no lock a request waits on) and when the server stops. A
``close()`` that raises is logged and the other policies are closed all the same.

Safety: observations are checked against the policy's spec before the policy
sees them (``INVALID_ARGUMENT`` naming the field); answers are checked before
they are sent (a NaN or misshapen chunk answers ``FAILED_PRECONDITION``, a policy
exception ``INTERNAL``); message sizes are capped; an optional bearer token is
checked by an interceptor (``UNAUTHENTICATED``); optional TLS, mutual when a
client CA is given. The health service needs no token.
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from testbed.bridge import codec
from testbed.bridge.generated import common_pb2, policy_pb2, policy_pb2_grpc
from testbed.bridge.handles import GrpcServerHandle, format_address
from testbed.bridge.lifeline import LIFELINE_ENV
from testbed.errors import BridgeConfigError, SpecMismatch
from testbed.policies.protocol import ClosablePolicy, Policy, PolicySpec

SESSION_HEADER = "testbed-session"
SERVICE_NAME = "testbed.v1.PolicyService"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_HEALTH_PREFIX = "/grpc.health.v1.Health/"
PARENT_PID_ENV = "TESTBED_PARENT_PID"
PARENT_PIPE_ENV = LIFELINE_ENV
PARENT_GONE_EXIT_S = 30.0  # a server whose parent is gone exits this long after, stopped cleanly or not
CLOSE_WAIT_S = 10.0  # at stop, how long a policy still inside a call may keep its close() waiting

PolicyFactory = Callable[[], Policy]
_T = TypeVar("_T")
_log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerOptions:
    """How a policy server listens.

    Args:
        host: bind address; anything but loopback requires ``token``.
        port: TCP port, 0 for any free one.
        token: bearer token every call must carry, or None.
        tls_cert: PEM server certificate (with ``tls_key``) to serve TLS.
        tls_key: PEM private key of ``tls_cert``.
        tls_client_ca: PEM CA that client certificates must chain to (mutual TLS).
        max_message_bytes: cap on received and sent messages.
        max_workers: threads for unary calls (spec, reset, act, stats) at once.
        max_sessions: policy instances kept; the least recently used is dropped beyond it.
        max_streams: ``StreamAct`` streams open at once (each holds its own thread).
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_workers: int = 8
    max_sessions: int = 64
    max_streams: int = 32

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise BridgeConfigError(
                f"serve-policy --host {self.host}: refusing to listen beyond loopback without a token; "
                "pass --token-env VAR (and preferably --tls-cert/--tls-key), or use --host 127.0.0.1"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise BridgeConfigError("serve-policy: --tls-cert and --tls-key must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise BridgeConfigError("serve-policy: --tls-client-ca needs --tls-cert and --tls-key")
        for flag, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key),
                           ("--tls-client-ca", self.tls_client_ca)):
            if path is not None and not Path(path).is_file():
                raise BridgeConfigError(f"serve-policy {flag} {path}: file not found")
        if not 0 <= self.port <= 65535:
            raise BridgeConfigError(f"serve-policy --port {self.port}: expected 0..65535 (0 for any free port)")
        size = self.max_message_bytes
        # gRPC takes a 32-bit signed size: 2 GiB and above overflowed deep inside grpc.server, and a float or
        # bool cap was passed on as a size of its own (0.5 -> no message fits)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size < 2**31:
            shown = f"{size / 2**20:g}" if isinstance(size, int | float) and not isinstance(size, bool) else "?"
            raise BridgeConfigError(f"serve-policy --max-message-mb {shown} (max_message_bytes={size!r}): expected "
                                    "a whole number of bytes, more than 0 and under 2048 MiB (2**31)")
        if min(self.max_workers, self.max_sessions, self.max_streams) <= 0:
            raise BridgeConfigError("serve-policy: workers, sessions and streams must be positive")

    def credentials(self) -> grpc.ServerCredentials | None:
        """TLS server credentials, or None for plaintext."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        pair = (_read_file("--tls-key", self.tls_key), _read_file("--tls-cert", self.tls_cert))
        client_ca = _read_file("--tls-client-ca", self.tls_client_ca) if self.tls_client_ca else None
        return grpc.ssl_server_credentials([pair], root_certificates=client_ca,
                                           require_client_auth=client_ca is not None)


def _read_file(flag: str, path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BridgeConfigError(f"serve-policy {flag} {path}: cannot read it ({exc.strerror or exc})") from exc


class _Session:
    """One policy instance and the lock that serialises calls to it; ``closed`` is set under the lock."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.lock = threading.Lock()
        self.closed = False


class _Counters:
    """Act requests one handler thread started, finished and answered with an error; only it writes them."""

    __slots__ = ("failed", "finished", "started")

    def __init__(self) -> None:
        self.started = self.finished = self.failed = 0


class _ServerStopping(Exception):
    pass


class _Undecodable(Exception):
    """Request bytes that are no ``Observation``: the call ends as when gRPC's deserializer fails."""

    MESSAGE = "Exception deserializing request!"


def _close_policy(policy: Policy) -> str | None:
    """Call the policy's optional ``close()``; returns what went wrong (also logged), or None."""
    if not isinstance(policy, ClosablePolicy):
        return None
    try:
        policy.close()
    except Exception as exc:
        message = f"policy {type(policy).__name__} close() raised {type(exc).__name__}: {exc}"
        _log.error(message, exc_info=True)
        return message
    return None


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """``PolicyService`` over one policy factory, one instance per client session.

    Every method runs in a gRPC handler thread and may block in the policy.
    """

    def __init__(self, factory: PolicyFactory, *, max_sessions: int = 64, max_streams: int = 32) -> None:
        default = factory()
        self._factory = factory
        self._spec: PolicySpec = default.spec()
        self._spec_msg = codec.encode_spec(self._spec)
        self._decode = codec.ObservationDecoder(self._spec)
        self._parse = self._decode.parse
        self._encode = codec.ChunkEncoder(self._spec)
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        self._default = _Session(default)
        self._sessions_lock = threading.Lock()
        self._stopping = False
        self._max_sessions = max_sessions
        self._max_streams = max_streams
        self._stats_lock = threading.Lock()  # for streams_open and the list of counters
        self._local = threading.local()  # each handler thread's _Counters: no lock per request
        self._counters: list[_Counters] = []
        self.streams_open = 0

    @property
    def spec(self) -> PolicySpec:
        """The served policy's spec (of the default instance)."""
        return self._spec

    @property
    def in_flight(self) -> int:
        """Act requests being handled right now."""
        counters = self._all_counters()
        finished = sum(c.finished for c in counters)  # read first: a request that ends meanwhile is still counted
        return sum(c.started for c in counters) - finished

    @property
    def requests_total(self) -> int:
        """Act requests handled since start (including those in flight)."""
        return sum(c.started for c in self._all_counters())

    @property
    def errors_total(self) -> int:
        """Act requests answered with an error."""
        return sum(c.failed for c in self._all_counters())

    def _all_counters(self) -> list[_Counters]:
        with self._stats_lock:
            return list(self._counters)

    def _thread_counters(self) -> _Counters:
        """Make the calling handler thread's counters (on its first request)."""
        counters = self._local.counters = _Counters()
        with self._stats_lock:
            self._counters.append(counters)
        return counters

    def _session(self, session_id: str) -> _Session:
        if self._stopping:  # set under the dict lock before any policy is closed at stop
            raise _ServerStopping
        if not session_id:
            return self._default
        # every act looks its session up: a known one is found and made the most recent without
        # the dict lock, each OrderedDict operation being atomic under the GIL (one evicted in
        # between raises KeyError and goes the locked way; one closed meanwhile is seen closed by
        # the caller, under the session's lock, which then asks again)
        session = self._sessions.get(session_id)
        if session is not None:
            try:
                self._sessions.move_to_end(session_id)
            except KeyError:
                pass
            else:
                return session
        with self._sessions_lock:
            if self._stopping:
                raise _ServerStopping
            session = self._sessions.get(session_id)
            if session is not None:
                self._sessions.move_to_end(session_id)
                return session
        created = _Session(self._factory())  # may be slow (a model load): outside the dict lock
        evicted: list[_Session] = []
        with self._sessions_lock:
            if self._stopping:
                evicted.append(created)
                session = None
            else:
                session = self._sessions.setdefault(session_id, created)
                if session is not created:
                    evicted.append(created)  # another call of this session won the race
                while len(self._sessions) > self._max_sessions:
                    evicted.append(self._sessions.popitem(last=False)[1])
        for old in evicted:
            self._close_session(old)
        if session is None:
            raise _ServerStopping
        return session

    def _with_policy(self, session_id: str, call: Callable[[Policy], _T]) -> _T:
        """Run ``call`` on the session's policy under its lock; a session closed meanwhile is replaced."""
        while True:
            session = self._session(session_id)
            with session.lock:
                if not session.closed:
                    return call(session.policy)

    @staticmethod
    def _close_session(session: _Session, wait_s: float | None = None) -> str | None:
        """Mark the session closed once no call is inside its policy, then close the policy outside the lock."""
        if not session.lock.acquire(timeout=-1 if wait_s is None else wait_s):
            message = f"policy {type(session.policy).__name__} was still inside a call at stop; not closed"
            _log.error(message)
            return message
        try:
            if session.closed:
                return None
            session.closed = True
        finally:
            session.lock.release()
        return _close_policy(session.policy)

    def close_policies(self, wait_s: float = CLOSE_WAIT_S) -> list[str]:
        """Close every policy instance (sessions and the default) and refuse new sessions.

        Args:
            wait_s: how long to wait for a call still running in a policy before giving up on closing it.

        Returns:
            One message per policy whose ``close()`` raised or could not run (each is also logged).
        """
        with self._sessions_lock:
            self._stopping = True
            sessions = [*self._sessions.values(), self._default]
            self._sessions.clear()
        give_up = time.monotonic() + wait_s  # one wait for all: several stuck policies do not add up
        problems = [self._close_session(s, max(0.0, give_up - time.monotonic())) for s in sessions]
        return [p for p in problems if p is not None]

    @staticmethod
    def _session_id(context: grpc.ServicerContext) -> str:
        for key, value in context.invocation_metadata() or ():
            if key == SESSION_HEADER:
                return str(value)[:128]
        return ""

    def GetSpec(self, request: policy_pb2.GetSpecRequest, context: grpc.ServicerContext) -> common_pb2.PolicySpec:
        return self._spec_msg

    def GetStats(self, request: policy_pb2.GetStatsRequest, context: grpc.ServicerContext
                 ) -> policy_pb2.ServerStats:
        counters = self._all_counters()
        finished = sum(c.finished for c in counters)
        started = sum(c.started for c in counters)
        return policy_pb2.ServerStats(
            in_flight=started - finished,
            requests_total=started,
            errors_total=sum(c.failed for c in counters),
            sessions=len(self._sessions) + 1,
            streams_open=self.streams_open,
        )

    def Reset(self, request: policy_pb2.ResetRequest, context: grpc.ServicerContext) -> policy_pb2.ResetResponse:
        try:
            self._with_policy(self._session_id(context), lambda policy: policy.reset(int(request.episode)))
        except _ServerStopping:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the policy server is stopping")
        except Exception as exc:
            context.abort(grpc.StatusCode.INTERNAL, f"policy reset raised {type(exc).__name__}: {exc}")
        return policy_pb2.ResetResponse()

    def Act(self, request: common_pb2.Observation, context: grpc.ServicerContext) -> common_pb2.ActionChunk:
        """``Act`` with messages, for a server that registers this servicer with the generated code."""
        return common_pb2.ActionChunk.FromString(self.act_bytes(request.SerializeToString(), context))

    def StreamAct(self, request_iterator: Iterator[common_pb2.Observation],
                  context: grpc.ServicerContext) -> Iterator[policy_pb2.ActResult]:
        """``StreamAct`` with messages, for a server that registers this servicer with the generated code."""
        requests = (request.SerializeToString() for request in request_iterator)
        for answer in self.stream_act_bytes(requests, context):
            yield policy_pb2.ActResult.FromString(answer)

    def act_bytes(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """``Act`` on wire bytes: an ``Observation`` in, an ``ActionChunk`` out (what the server registers)."""
        session_id = ""  # ``_session_id`` inline: one frame less on every call
        for key, value in context.invocation_metadata() or ():
            if key == SESSION_HEADER:
                session_id = str(value)[:128]
                break
        try:
            answer = self._act(session_id, request, stream=False)
        except _Undecodable:
            context.abort(grpc.StatusCode.INTERNAL, _Undecodable.MESSAGE)
        if answer.__class__ is not bytes:
            context.abort(_CODES[answer.code], answer.message)  # type: ignore[union-attr]
        return answer  # type: ignore[return-value]

    def stream_act_bytes(self, request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        """``StreamAct`` on wire bytes: ``Observation`` in, ``ActResult`` out (what the server registers)."""
        with self._stats_lock:
            full = self.streams_open >= self._max_streams
            if not full:
                self.streams_open += 1
        if full:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self._max_streams} StreamAct streams are open already (serve-policy max_streams); "
                          "close one or use unary Act")
        try:
            session_id = self._session_id(context)
            for request in request_iterator:
                try:
                    answer = self._act(session_id, request, stream=True)
                except _Undecodable:
                    context.abort(grpc.StatusCode.INTERNAL, _Undecodable.MESSAGE)
                if answer.__class__ is not bytes:
                    answer = policy_pb2.ActResult(error=answer).SerializeToString()  # type: ignore[arg-type]
                yield answer  # type: ignore[misc]
        finally:
            with self._stats_lock:
                self.streams_open -= 1

    def add_to_server(self, server: grpc.Server) -> None:
        """Register ``testbed.v1.PolicyService`` on ``server``, ``Act`` and ``StreamAct`` as wire bytes.

        The observation is read straight from the request bytes and the answer written as bytes
        (``codec.ObservationDecoder.parse``, ``codec.ChunkEncoder``): no message objects on the
        way, which is most of what a request costs a handler thread woken for it. The wire
        format is the generated service's.
        """
        handlers = {
            "GetSpec": grpc.unary_unary_rpc_method_handler(
                self.GetSpec, request_deserializer=policy_pb2.GetSpecRequest.FromString,
                response_serializer=common_pb2.PolicySpec.SerializeToString),
            "Reset": grpc.unary_unary_rpc_method_handler(
                self.Reset, request_deserializer=policy_pb2.ResetRequest.FromString,
                response_serializer=policy_pb2.ResetResponse.SerializeToString),
            "Act": grpc.unary_unary_rpc_method_handler(self.act_bytes),
            "StreamAct": grpc.stream_stream_rpc_method_handler(self.stream_act_bytes),
            "GetStats": grpc.unary_unary_rpc_method_handler(
                self.GetStats, request_deserializer=policy_pb2.GetStatsRequest.FromString,
                response_serializer=policy_pb2.ServerStats.SerializeToString),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)

    def _act(self, session_id: str, request: bytes, *, stream: bool) -> bytes | policy_pb2.ActError:
        """Answer one observation: ``ActResult`` bytes (``stream``) or ``ActionChunk`` bytes, or the error.

        One frame for the whole request (parse, session, policy, encode): the handler thread runs it
        right after it wakes, when every distinct call costs microseconds.

        Raises:
            _Undecodable: the request bytes are no ``Observation``.
        """
        try:
            counters = self._local.counters
        except AttributeError:
            counters = self._thread_counters()
        counters.started += 1
        failed = True
        try:
            parsed = self._parse(request)
            if parsed is None:  # not the expected layout: the message says what is wrong, if anything
                parsed = self._parse_message(request)
                if parsed.__class__ is not tuple:
                    return parsed  # type: ignore[return-value]
            obs, episode, step = parsed  # type: ignore[misc]
            while True:
                if session_id or self._stopping:
                    try:
                        session = self._session(session_id)
                    except _ServerStopping:
                        return _error(grpc.StatusCode.UNAVAILABLE, "the policy server is stopping", step)
                    except Exception as exc:  # the factory failed to make the session's policy
                        return _error(grpc.StatusCode.INTERNAL, f"policy act raised {type(exc).__name__}: {exc}",
                                      step)
                else:  # calls without a session header share the default instance
                    session = self._default
                with session.lock:
                    if session.closed:  # evicted, or stopped, meanwhile: the next lookup says which
                        continue
                    start = time.perf_counter()
                    try:
                        actions = session.policy.act(obs)
                    except Exception as exc:
                        return _error(grpc.StatusCode.INTERNAL, f"policy act raised {type(exc).__name__}: {exc}",
                                      step)
                    compute_ms = (time.perf_counter() - start) * 1e3
                    # encoded (checked, and copied) before the policy is released: it may reuse the
                    # array it returned on its next call
                    try:
                        answer = self._encode(actions if actions.__class__ is np.ndarray else np.asarray(actions),
                                              step=step, episode=episode, compute_ms=compute_ms, act_result=stream)
                    except SpecMismatch as exc:
                        message = f"policy {self._spec.model_name!r} returned a bad chunk for step {step}: {exc}"
                        return _error(grpc.StatusCode.FAILED_PRECONDITION, message, step)
                    failed = False
                    return answer
        finally:
            counters.failed += failed
            counters.finished += 1

    def _parse_message(self, request: bytes) -> tuple[dict[str, np.ndarray], int, int] | policy_pb2.ActError:
        """An observation ``ObservationDecoder.parse`` did not read: ``(obs, episode, step)`` or what is wrong.

        Raises:
            _Undecodable: the request bytes are no ``Observation``.
        """
        try:
            msg = common_pb2.Observation.FromString(request)
        except DecodeError as exc:
            raise _Undecodable from exc
        try:
            return self._decode(msg), msg.episode, msg.step
        except SpecMismatch as exc:
            return _error(grpc.StatusCode.INVALID_ARGUMENT, str(exc), msg.step)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _error(code: grpc.StatusCode, message: str, step: int) -> policy_pb2.ActError:
    return policy_pb2.ActError(code=code.value[0], message=message, step=step)


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` (health checks excepted)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails
                          ) -> grpc.RpcMethodHandler | None:
        if details.method.startswith(_HEALTH_PREFIX):
            return continuation(details)
        presented = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                presented = value.encode() if isinstance(value, str) else bytes(value)
        if hmac.compare_digest(presented, self._expected):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None
        return _deny_handler(handler, "missing authorization" if not presented else "wrong token")


def _deny_handler(handler: grpc.RpcMethodHandler, why: str) -> grpc.RpcMethodHandler:
    message = f"{why}: send metadata 'authorization: Bearer <token>' with the server's token"

    def deny(request_or_iterator: object, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)


KEEPALIVE_TIME_MS = 10_000  # each side pings an idle connection this often
MIN_PING_INTERVAL_MS = 1_000  # pings without data accepted this often (gRPC's default, 300 s, is far above)


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC options shared by servers and clients: size caps and keepalive.

    The clients ping every ``KEEPALIVE_TIME_MS`` even with no call open; a server keeping gRPC's
    default minimum ping interval (5 min) counts each such ping as a strike and, at the third,
    drops the connection with GOAWAY ``too_many_pings`` (an idle stream died after ~30 s). So
    the accepted interval is set well below the keepalive, on every server these options build
    (the policy server and the controller server).
    """
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ]


RunningServer = GrpcServerHandle[PolicyServicer]
"""A started policy server: ``stop()`` (default grace 1 s) ends calls, then closes every policy."""


def start_policy_server(factory: PolicyFactory, options: ServerOptions) -> RunningServer:
    """Build the policy, start serving it on background threads, and return once the port is bound.

    Stopping the returned handle (``stop()`` or leaving a ``with`` block) also closes the policies.

    Raises:
        BridgeConfigError: the port could not be bound.
    """
    servicer = PolicyServicer(factory, max_sessions=options.max_sessions, max_streams=options.max_streams)
    interceptors = [TokenInterceptor(options.token)] if options.token else []
    # every open stream holds a thread; unary calls keep max_workers threads of their own
    threads = options.max_workers + options.max_streams
    server = grpc.server(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="policy"),
                         interceptors=interceptors, options=channel_options(options.max_message_bytes))
    servicer.add_to_server(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = format_address(options.host, options.port)
    credentials = options.credentials()
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise BridgeConfigError(f"serve-policy: cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise BridgeConfigError(f"serve-policy: cannot listen on {address} (address in use or not local?)")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return GrpcServerHandle(server, servicer, options.host, port, grace_s=1.0, on_stop=servicer.close_policies)


def serve(factory: PolicyFactory, options: ServerOptions) -> None:
    """Serve until SIGINT/SIGTERM, printing exactly one ``listening on HOST:PORT`` line once bound.

    On the signal, running calls get a second to finish and every policy is closed. A server
    started by ``spawn_policy_server`` also stops, the same way, once its parent is gone, so a
    run killed with SIGKILL leaves no policy server behind: see ``watch_parent``.
    """
    import signal
    import sys

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if not watch_parent(stop):
        return
    running = start_policy_server(factory, options)
    sys.stdout.write(f"listening on {format_address(running.host, running.port)}\n")
    sys.stdout.flush()
    while not stop.wait(1.0):  # a timed wait keeps the main thread responsive to signals
        pass
    running.stop()


def watch_parent(stop: threading.Event, *, force_exit_after_s: float = PARENT_GONE_EXIT_S) -> bool:
    """Set ``stop`` once the parent named by the environment is gone; False if it is gone already.

    ``spawn_policy_server`` names its pid (``TESTBED_PARENT_PID``) and passes the read end of a
    pipe whose write end only it holds (``TESTBED_PARENT_PIPE_FD``): the read sees end-of-file
    once the parent is gone however it died, even if it died before this was called. A parent
    pid that is not ours any more at startup means the parent is gone already. Both variables
    are removed from the environment, so processes the policy starts do not take them as theirs.
    A watcher thread waits for the end-of-file (or, without a pipe, polls the parent pid), says
    on stderr that the parent is gone and sets ``stop``; if the process is still alive
    ``force_exit_after_s`` later (a model still loading, a close() that hangs) it exits at once.
    A watcher thread that fails says so on stderr and stops the server the same way.
    """
    import sys

    pid_text = os.environ.pop(PARENT_PID_ENV, "")
    fd_text = os.environ.pop(PARENT_PIPE_ENV, "")
    parent_pid = int(pid_text) if pid_text.isdigit() else None
    pipe_fd = int(fd_text) if fd_text.isdigit() else None
    if parent_pid is None and pipe_fd is None:
        return True
    if parent_pid is not None and os.getppid() != parent_pid:  # orphans are re-parented
        sys.stderr.write(f"serve-policy: parent process {parent_pid} is gone; stopping\n")
        sys.stderr.flush()
        return False
    if pipe_fd is not None:
        try:
            os.set_inheritable(pipe_fd, False)  # the policy's own children must not keep it open
        except OSError:
            pipe_fd = None
    what = f"parent process {parent_pid}" if parent_pid is not None else "parent process"

    def wait_for_parent_gone() -> None:
        if pipe_fd is not None:
            while os.read(pipe_fd, 4096):  # nobody writes: only end-of-file (parent gone) returns
                pass
        else:
            while os.getppid() == parent_pid and not stop.wait(0.5):
                pass
            if stop.is_set():
                return

    def watch() -> None:
        try:
            wait_for_parent_gone()
            if stop.is_set():
                return
            sys.stderr.write(f"serve-policy: {what} is gone; stopping\n")
        except BaseException as exc:  # reported, and the server stops all the same
            sys.stderr.write(f"serve-policy: the watcher of {what} failed ({type(exc).__name__}: {exc}); "
                             "stopping\n")
        sys.stderr.flush()
        stop.set()
        time.sleep(force_exit_after_s)
        sys.stderr.write(f"serve-policy: still running {force_exit_after_s:.0f} s after {what} was gone; "
                         "exiting now\n")
        sys.stderr.flush()
        os._exit(3)

    threading.Thread(target=watch, name="parent-watcher", daemon=True).start()
    return True
