"""Drive robots from a policy served with openpi's websocket protocol.

openpi's protocol: the client opens ``ws://host:port``; the server sends one
metadata frame (a msgpack map); then, strictly in turn, the client sends one
observation frame and the server answers one frame holding a map with the
action chunk under a key (``"actions"`` by convention) and ``server_timing``.
A text frame instead of a binary one carries a traceback from the server's
policy, after which the server closes the connection.

:class:`OpenPiActionSource` adapts that to the run loop's ``ActionSource``:
``submit`` packs the observation and hands it to a background thread that owns
the websocket, so the loop never waits on the network. The protocol allows one
request in flight, so a newer observation replaces one not yet sent (latest
observation wins, as in asynchronous inference).

Every receive has a deadline. A reply not received within ``hang_s`` of its
request means the server hangs: the connection is dropped (answers come strictly
in turn, so a later one would answer the wrong request) and the next request
reconnects; ``reset`` also drops a connection whose request is unanswered past
the deadline, and reconnects at once when the connection is down, raising
``PolicyUnavailable`` while the server cannot be reached, as the gRPC source does.
An unexpected exception in the worker thread is raised once by ``result`` as
``PolicyClientFailed`` with the original error as its ``__cause__``; if the thread
ends anyway, every call raises that error until ``reset`` starts a new one.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import websockets.exceptions
import websockets.sync.client

from testbed.bridge import openpi_codec
from testbed.errors import PolicyClientFailed, PolicyUnavailable, ScenarioError, SpecMismatch, TestbedError
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec
from testbed.policies.source import ActionChunk

# Frames larger than this are refused: a 4-camera 224x224 observation is ~0.6 MB.
MAX_FRAME_BYTES = 64 * 1024 * 1024
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 2.0
HUNG_AFTER_DEADLINES = 5.0  # default hang_s, in deadlines (at least MIN_HANG_S)
MIN_HANG_S = 2.0
JOIN_TIMEOUT_S = 5.0  # close() waits this long for the worker thread
_CONNECT_PARAMETERS = inspect.signature(websockets.sync.client.connect).parameters
# Options newer websockets releases take: never route loopback traffic through an HTTP proxy from
# the environment (>= 15), and keep a connection outside a with-block without a warning (>= 17.1).
_CONNECT_OPTIONS: dict[str, Any] = {
    key: value for key, value in (("proxy", None), ("legacy", True)) if key in _CONNECT_PARAMETERS
}


@dataclass(frozen=True)
class OpenPiStats:
    """Counters of one source since it was created.

    Args:
        sent: observation frames sent.
        received: action frames received and accepted.
        late: action frames that arrived after ``deadline_s`` and were dropped.
        superseded: observations replaced by a newer one before they were sent.
        reconnects: successful connections after the first.
    """

    sent: int = 0
    received: int = 0
    late: int = 0
    superseded: int = 0
    reconnects: int = 0


@dataclass
class _Request:
    generation: int
    step: int
    payload: bytes
    submitted_s: float


def parse_ws_endpoint(endpoint: str) -> str:
    """Check ``endpoint`` is ``ws://host:port`` (or ``wss://``) and return it normalised.

    Raises:
        ScenarioError: naming ``policy.endpoint`` and what was expected.
    """
    parts = urllib.parse.urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError as exc:
        raise ScenarioError(f"policy.endpoint: bad port in {endpoint!r}: {exc}") from exc
    if parts.scheme not in ("ws", "wss") or not parts.hostname or port is None:
        raise ScenarioError(
            f"policy.endpoint: expected ws://host:port for an openpi server, got {endpoint!r}"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}{parts.path}"


def openpi_spec(
    *,
    available: Mapping[str, TensorSpec],
    obs_keys: Mapping[str, str],
    action_dim: int,
    chunk_size: int,
    control_hz: float,
    action_kind: ActionKind = ActionKind.JOINT_POSITIONS,
    model_name: str = "openpi",
) -> PolicySpec:
    """The spec of an openpi peer, built from what the scenario provides and the launch file says.

    openpi servers do not describe their inputs and outputs, so the spec is
    the observations named in ``obs_keys`` (with the dtype and shape the cell
    provides) and the action shape the launch file declares.

    Args:
        available: every observation the cell provides, key -> spec.
        obs_keys: our key -> the server's key (``policy.obs_keys``).
        action_dim: numbers per action row.
        chunk_size: the longest chunk accepted.
        control_hz: rate at which the server is asked.
        action_kind: meaning of the action rows.
        model_name: free text for records.

    Raises:
        SpecMismatch: ``obs_keys`` names an observation the cell does not provide.
    """
    missing = sorted(set(obs_keys) - set(available))
    if missing:
        raise SpecMismatch(
            f"policy.obs_keys: {missing} are not observations the cell provides "
            f"(provides: {', '.join(sorted(available))})"
        )
    return PolicySpec(
        observation={key: available[key] for key in obs_keys},
        action_kind=action_kind,
        action_dim=action_dim,
        chunk_size=chunk_size,
        control_hz=control_hz,
        model_name=model_name,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


class OpenPiActionSource:
    """An ``ActionSource`` backed by an openpi websocket policy server.

    Args:
        endpoint: ``ws://host:port`` of the server.
        spec: what the scenario expects; openpi servers do not describe
            themselves, so the launch file supplies it. Observations are checked
            against ``spec.observation`` before they are sent and every chunk
            against ``spec.action_spec()`` when it arrives.
        obs_keys: our observation key -> the server's key; only these keys are
            sent, e.g. ``{"observation.state": "observation/state"}``.
        action_key: key of the action chunk in the server's reply.
        deadline_s: a chunk arriving later than this after its observation was
            submitted is dropped (counted in ``stats().late``); also the
            connection timeout.
        static_obs: constant fields added to every observation, such as
            openpi's ``{"prompt": "pick the part"}``.
        hang_s: a request unanswered for this long means the server hangs: the
            connection is dropped and the next request reconnects. Default: 5
            deadlines, at least 2 s.

    Raises:
        SpecMismatch: ``obs_keys`` names a key the spec does not have, or maps
            two keys to one.
        ScenarioError: ``endpoint`` is not ``ws://host:port``, ``static_obs``
            holds a value msgpack cannot carry, or ``hang_s`` is below ``deadline_s``.
        PolicyUnavailable: the server cannot be reached or sends no metadata.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        spec: PolicySpec,
        obs_keys: Mapping[str, str],
        action_key: str = "actions",
        deadline_s: float = 1.0,
        static_obs: Mapping[str, Any] | None = None,
        hang_s: float | None = None,
    ) -> None:
        if not deadline_s > 0:
            raise ScenarioError(f"policy.deadline_s: must be positive, got {deadline_s}")
        if hang_s is not None and not hang_s >= deadline_s:
            raise ScenarioError(f"policy hang_s: must be at least deadline_s ({deadline_s}), got {hang_s}")
        self._endpoint = parse_ws_endpoint(endpoint)
        self._obs_keys = dict(obs_keys)
        self._check_obs_keys(spec)
        self._static_obs = dict(static_obs or {})
        clash = sorted(set(self._static_obs) & set(self._obs_keys.values()))
        if clash:
            raise SpecMismatch(f"policy.static_obs: keys {clash} are also targets of policy.obs_keys")
        try:
            openpi_codec.pack(self._static_obs)
        except (TypeError, SpecMismatch) as exc:
            raise ScenarioError(f"policy.static_obs: cannot be sent as msgpack: {exc}") from exc
        self._action_key = action_key
        self._deadline_s = float(deadline_s)
        self._hang_s = float(hang_s) if hang_s is not None else max(HUNG_AFTER_DEADLINES * deadline_s, MIN_HANG_S)
        self._action_spec = spec.action_spec()
        self._base_spec = spec

        self._cv = threading.Condition()
        self._connecting = threading.Lock()  # one connection attempt at a time: the worker's or reset()'s
        self._generation = 0
        self._pending: _Request | None = None
        self._in_flight: _Request | None = None  # sent, its reply not yet received
        self._sent_s = 0.0
        self._result: ActionChunk | None = None
        self._error: TestbedError | None = None
        self._dead: PolicyClientFailed | None = None  # raised by every call once the worker thread ended
        self._closed = False
        self._counts = {f.name: 0 for f in dataclasses.fields(OpenPiStats)}
        self._backoff_s = _BACKOFF_FIRST_S
        self._retry_at_s = 0.0

        conn, self._metadata = self._connect()
        self._conn: websockets.sync.client.ClientConnection | None = conn
        self._spec = dataclasses.replace(
            spec,
            extra={
                **spec.extra,
                "protocol": "openpi",
                "endpoint": self._endpoint,
                "server_metadata": json.dumps(self._metadata, default=_jsonable, sort_keys=True),
            },
        )
        self._thread = self._start_worker()

    # -- ActionSource ------------------------------------------------------------------------------

    def spec(self) -> PolicySpec:
        """The spec given at construction, with ``extra`` naming the protocol, endpoint and metadata."""
        return self._spec

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata frame the server sent on the latest connection."""
        return self._metadata

    def reset(self, episode: int) -> None:
        """Start ``episode``: the queued observation, the stored chunk and any error are dropped.

        A request already on the wire is answered by the server, but its chunk
        is discarded; one unanswered past the deadline means the server hangs, and
        its connection is dropped. When the connection is down, it is made again
        now. A worker thread that ended is started again. openpi's protocol has
        no reset message.

        Raises:
            PolicyUnavailable: the server cannot be reached (the next ``submit`` tries again).
        """
        with self._cv:
            self._generation += 1
            self._pending = None
            self._result = None
            self._error = None
            if self._closed:
                return
            if self._dead is not None:  # reporting its death was the old thread's last act
                self._dead = None
                self._thread = self._start_worker()
            hung = None
            if self._in_flight is not None and time.monotonic() - self._sent_s > self._deadline_s:
                hung, self._conn = self._conn, None
            connected = self._conn is not None
        if hung is not None:
            hung.close()  # the worker's receive ends at once; its answer belonged to the last episode
        if not connected:
            self._ensure_connection(respect_backoff=False)

    def submit(self, obs: Mapping[str, np.ndarray], step: int) -> None:
        """Queue ``obs`` (our keys) taken at policy step ``step``; returns without network I/O.

        Raises:
            SpecMismatch: ``obs`` does not fit the spec.
            PolicyUnavailable: the source was closed.
            PolicyClientFailed: the worker thread ended (until ``reset`` starts a new one).
        """
        self._base_spec.validate_observation(obs)
        message: dict[str, Any] = dict(self._static_obs)
        for ours, theirs in self._obs_keys.items():
            message[theirs] = obs[ours]
        payload = openpi_codec.pack(message)
        with self._cv:
            if self._closed:
                raise PolicyUnavailable(f"{self._endpoint}: the openpi source is closed")
            if self._dead is not None:
                raise self._dead
            if self._pending is not None:
                self._counts["superseded"] += 1
            self._pending = _Request(self._generation, int(step), payload, time.monotonic())
            self._cv.notify_all()

    def result(self, timeout_s: float | None) -> ActionChunk | None:
        """The newest accepted chunk, waiting at most ``timeout_s`` (``None``: until one arrives).

        Raises:
            SpecMismatch: the server answered with an invalid chunk (raised once).
            PolicyUnavailable: the connection was lost, the server hung (no reply within
                ``hang_s``) or the server's policy failed (raised once; the next ``submit``
                tries to reconnect).
            PolicyClientFailed: the client itself failed (raised once; every time if its
                worker thread ended).
        """
        end = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        with self._cv:
            while self._result is None and self._error is None and self._dead is None and not self._closed:
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cv.wait(remaining)
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._result is None and self._dead is not None:
                raise self._dead
            chunk, self._result = self._result, None
            return chunk

    def close(self) -> None:
        """Close the connection and stop the worker thread.

        Raises:
            PolicyClientFailed: the worker thread did not end within ``JOIN_TIMEOUT_S``.
        """
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._pending = None
            conn, self._conn = self._conn, None
            self._cv.notify_all()
        if conn is not None:
            conn.close()
        self._thread.join(timeout=JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            raise PolicyClientFailed(
                f"{self._endpoint}: the openpi source's worker thread {self._thread.name!r} did not end "
                f"within {JOIN_TIMEOUT_S:.1f} s of close() (it is a daemon thread: it cannot keep the process alive)"
            )

    def stats(self) -> OpenPiStats:
        """Counters since construction."""
        with self._cv:
            return OpenPiStats(**self._counts)

    def __enter__(self) -> OpenPiActionSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------

    def _check_obs_keys(self, spec: PolicySpec) -> None:
        unknown = sorted(set(self._obs_keys) - set(spec.observation))
        if unknown:
            raise SpecMismatch(
                f"policy.obs_keys: {unknown} are not observation keys of the scenario "
                f"(known: {', '.join(sorted(spec.observation))})"
            )
        theirs = list(self._obs_keys.values())
        dupes = sorted({k for k in theirs if theirs.count(k) > 1})
        if dupes:
            raise SpecMismatch(
                f"policy.obs_keys: several keys map to {dupes}; each server key needs exactly one source"
            )

    def _connect(self) -> tuple[websockets.sync.client.ClientConnection, dict[str, Any]]:
        """Open the websocket and read the metadata frame (as openpi-client does)."""
        try:
            conn = websockets.sync.client.connect(
                self._endpoint,
                compression=None,
                max_size=MAX_FRAME_BYTES,
                open_timeout=self._deadline_s,
                close_timeout=self._deadline_s,
                **_CONNECT_OPTIONS,
            )
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise PolicyUnavailable(f"{self._endpoint}: cannot connect to the openpi server: {exc}") from exc
        try:
            frame = conn.recv(timeout=self._deadline_s)
        except (TimeoutError, websockets.exceptions.ConnectionClosed) as exc:
            conn.close()
            raise PolicyUnavailable(
                f"{self._endpoint}: no metadata frame from the openpi server: {exc}"
            ) from exc
        if not isinstance(frame, bytes):
            conn.close()
            raise PolicyUnavailable(
                f"{self._endpoint}: metadata frame is text, expected msgpack: {frame[:200]!r}"
            )
        try:
            metadata = openpi_codec.unpack(frame, max_bytes=MAX_FRAME_BYTES)
        except SpecMismatch as exc:
            conn.close()
            raise PolicyUnavailable(f"{self._endpoint}: metadata frame: {exc}") from exc
        if not isinstance(metadata, dict):
            conn.close()
            raise PolicyUnavailable(
                f"{self._endpoint}: metadata frame must be a map, got {type(metadata).__name__}"
            )
        return conn, metadata

    def _ensure_connection(self, *, respect_backoff: bool) -> websockets.sync.client.ClientConnection:
        """The open connection, or a new one; failed attempts back off exponentially (unless told not to wait).

        Raises:
            PolicyUnavailable: the server cannot be reached, a retry is not due yet, or the source was closed.
        """
        with self._connecting:
            with self._cv:
                if self._closed:
                    raise PolicyUnavailable(f"{self._endpoint}: the openpi source is closed")
                if self._conn is not None:
                    return self._conn
            now = time.monotonic()
            if respect_backoff and now < self._retry_at_s:
                raise PolicyUnavailable(
                    f"{self._endpoint}: openpi server unreachable; "
                    f"next reconnect attempt in {self._retry_at_s - now:.2f} s"
                )
            try:
                conn, metadata = self._connect()
            except PolicyUnavailable:
                self._retry_at_s = time.monotonic() + self._backoff_s
                self._backoff_s = min(_BACKOFF_MAX_S, self._backoff_s * 2)
                raise
            self._backoff_s = _BACKOFF_FIRST_S
            with self._cv:
                if self._closed:
                    conn.close()
                    raise PolicyUnavailable(f"{self._endpoint}: the openpi source is closed")
                self._metadata = metadata
                self._counts["reconnects"] += 1
                self._conn = conn
            return conn

    def _fail(self, request: _Request, error: TestbedError, *, always: bool = False) -> None:
        """Hand ``error`` to ``result()``: if ``request`` belongs to the current episode, or ``always``."""
        with self._cv:
            if always or request.generation == self._generation:
                self._error = error
                self._cv.notify_all()

    def _drop_connection(self, conn: websockets.sync.client.ClientConnection) -> None:
        """Close ``conn``, and forget it unless a newer connection replaced it already."""
        with self._cv:
            if self._conn is conn:
                self._conn = None
        conn.close()

    def _start_worker(self) -> threading.Thread:
        thread = threading.Thread(target=self._work, name=f"openpi-{self._endpoint}", daemon=True)
        thread.start()
        return thread

    def _work(self) -> None:
        """The worker thread: serve requests until closed, and report if it ends any other way."""
        try:
            self._serve_requests()
        except BaseException as exc:  # reported to every caller instead of dying silently
            dead = PolicyClientFailed(
                f"{self._endpoint}: the openpi source's worker thread stopped: {type(exc).__name__}: {exc}; "
                "reset() starts a new one"
            )
            dead.__cause__ = exc
            with self._cv:
                self._dead = dead
                self._cv.notify_all()

    def _next_request(self) -> _Request | None:
        """The next observation to send, waiting for one; None once the source is closed."""
        with self._cv:
            while self._pending is None and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            request, self._pending = self._pending, None
            return request

    def _serve_requests(self) -> None:
        while (request := self._next_request()) is not None:
            try:
                reply = self._exchange(request)
                received_s = time.monotonic()
                chunk = self._to_chunk(reply, request, received_s)
            except (PolicyUnavailable, SpecMismatch) as exc:
                self._fail(request, exc)
                continue
            except Exception as exc:  # a bug or an unexpected library error: reported once, with its cause
                failure = PolicyClientFailed(
                    f"{self._endpoint}: the openpi source failed on step {request.step}: "
                    f"{type(exc).__name__}: {exc}"
                )
                failure.__cause__ = exc
                self._fail(request, failure, always=True)
                continue
            with self._cv:
                if request.generation != self._generation:
                    continue
                if received_s - request.submitted_s > self._deadline_s:
                    self._counts["late"] += 1
                    continue
                self._counts["received"] += 1
                self._result = chunk
                self._cv.notify_all()

    def _exchange(self, request: _Request) -> bytes:
        """Send one observation frame and wait up to ``hang_s`` for its reply, reconnecting once if idle-dropped.

        Any failure drops the connection: the protocol answers strictly in turn, so after one
        the connection cannot tell which request a frame answers.
        """
        conn = self._ensure_connection(respect_backoff=True)
        try:
            try:
                conn.send(request.payload)
            except (websockets.exceptions.ConnectionClosed, OSError):
                # The server went away while we were idle; a restarted server gets one fresh try.
                self._drop_connection(conn)
                conn = self._ensure_connection(respect_backoff=True)
                try:
                    conn.send(request.payload)
                except (websockets.exceptions.ConnectionClosed, OSError) as exc:
                    raise PolicyUnavailable(f"{self._endpoint}: connection lost while sending: {exc}") from exc
            with self._cv:
                self._counts["sent"] += 1
                self._in_flight, self._sent_s = request, time.monotonic()
            try:
                reply = conn.recv(timeout=self._hang_s)
            except TimeoutError as exc:
                raise PolicyUnavailable(
                    f"{self._endpoint}: no reply to step {request.step} within {self._hang_s:.1f} s (hang_s); "
                    "the connection is dropped and the next request reconnects"
                ) from exc
            except (websockets.exceptions.ConnectionClosed, OSError) as exc:
                raise PolicyUnavailable(
                    f"{self._endpoint}: connection to the openpi server lost while waiting for step "
                    f"{request.step}: {exc}"
                ) from exc
            finally:
                with self._cv:
                    self._in_flight = None
            if isinstance(reply, str):
                last = reply.strip().splitlines()[-1] if reply.strip() else "(empty)"
                raise PolicyUnavailable(f"{self._endpoint}: the openpi server's policy failed: {last}")
        except BaseException:
            self._drop_connection(conn)
            raise
        return reply

    def _to_chunk(self, reply: bytes, request: _Request, received_s: float) -> ActionChunk:
        where = f"{self._endpoint} reply to step {request.step}"
        try:
            message = openpi_codec.unpack(reply, max_bytes=MAX_FRAME_BYTES)
        except SpecMismatch as exc:
            raise SpecMismatch(f"{where}: {exc}") from exc
        if not isinstance(message, dict):
            raise SpecMismatch(f"{where}: expected a map, got {type(message).__name__}")
        if self._action_key not in message:
            raise SpecMismatch(
                f"{where}: no {self._action_key!r} key (policy.action_key); "
                f"has: {', '.join(map(str, message))}"
            )
        raw = message[self._action_key]
        field = f"{where} [{self._action_key!r}]"
        if not isinstance(raw, np.ndarray):
            raise SpecMismatch(f"{field}: expected a numpy array, got {type(raw).__name__}")
        if raw.dtype.kind not in "iuf":
            raise SpecMismatch(f"{field}: expected a numeric array, got dtype {raw.dtype}")
        actions = raw.astype(np.float32)  # a copy: the reply buffer is read-only
        _, action_dim = self._action_spec.shape
        chunk_size = self._action_spec.shape[0]
        if actions.ndim != 2 or actions.shape[1] != action_dim or not 1 <= actions.shape[0] <= chunk_size:
            raise SpecMismatch(
                f"{field}: expected shape (1..{chunk_size}, {action_dim}), got {tuple(actions.shape)}"
            )
        if not np.all(np.isfinite(actions)):
            raise SpecMismatch(f"{field}: contains NaN or inf")
        timing = message.get("server_timing")
        infer_ms = timing.get("infer_ms") if isinstance(timing, dict) else None
        compute_ms = float(infer_ms) if isinstance(infer_ms, int | float) else 0.0
        return ActionChunk(
            actions=actions,
            step=request.step,
            compute_ms=compute_ms,
            latency_ms=(received_s - request.submitted_s) * 1000.0,
        )
