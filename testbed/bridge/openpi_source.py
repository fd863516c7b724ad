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
from testbed.errors import PolicyUnavailable, ScenarioError, SpecMismatch, TestbedError
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec
from testbed.policies.source import ActionChunk

# Frames larger than this are refused: a 4-camera 224x224 observation is ~0.6 MB.
MAX_FRAME_BYTES = 64 * 1024 * 1024
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 2.0
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

    Raises:
        SpecMismatch: ``obs_keys`` names a key the spec does not have, or maps
            two keys to one.
        ScenarioError: ``endpoint`` is not ``ws://host:port``, or ``static_obs``
            holds a value msgpack cannot carry.
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
    ) -> None:
        if not deadline_s > 0:
            raise ScenarioError(f"policy.deadline_s: must be positive, got {deadline_s}")
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
        self._action_spec = spec.action_spec()
        self._base_spec = spec

        self._cv = threading.Condition()
        self._generation = 0
        self._pending: _Request | None = None
        self._result: ActionChunk | None = None
        self._error: TestbedError | None = None
        self._closed = False
        self._counts = {f.name: 0 for f in dataclasses.fields(OpenPiStats)}
        self._backoff_s = _BACKOFF_FIRST_S
        self._retry_at_s = 0.0

        self._conn, self._metadata = self._connect()
        self._spec = dataclasses.replace(
            spec,
            extra={
                **spec.extra,
                "protocol": "openpi",
                "endpoint": self._endpoint,
                "server_metadata": json.dumps(self._metadata, default=_jsonable, sort_keys=True),
            },
        )
        self._thread = threading.Thread(target=self._run, name=f"openpi-{self._endpoint}", daemon=True)
        self._thread.start()

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
        is discarded. openpi's protocol has no reset message.
        """
        with self._cv:
            self._generation += 1
            self._pending = None
            self._result = None
            self._error = None

    def submit(self, obs: Mapping[str, np.ndarray], step: int) -> None:
        """Queue ``obs`` (our keys) taken at policy step ``step``; returns without network I/O.

        Raises:
            SpecMismatch: ``obs`` does not fit the spec.
            PolicyUnavailable: the source was closed.
        """
        self._base_spec.validate_observation(obs)
        message: dict[str, Any] = dict(self._static_obs)
        for ours, theirs in self._obs_keys.items():
            message[theirs] = obs[ours]
        payload = openpi_codec.pack(message)
        with self._cv:
            if self._closed:
                raise PolicyUnavailable(f"{self._endpoint}: the openpi source is closed")
            if self._pending is not None:
                self._counts["superseded"] += 1
            self._pending = _Request(self._generation, int(step), payload, time.monotonic())
            self._cv.notify_all()

    def result(self, timeout_s: float | None) -> ActionChunk | None:
        """The newest accepted chunk, waiting at most ``timeout_s`` (``None``: until one arrives).

        Raises:
            SpecMismatch: the server answered with an invalid chunk (raised once).
            PolicyUnavailable: the connection was lost or the server's policy
                failed (raised once; the next ``submit`` tries to reconnect).
        """
        end = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        with self._cv:
            while self._result is None and self._error is None and not self._closed:
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cv.wait(remaining)
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            chunk, self._result = self._result, None
            return chunk

    def close(self) -> None:
        """Close the connection and stop the background thread."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._pending = None
            conn, self._conn = self._conn, None
            self._cv.notify_all()
        if conn is not None:
            conn.close()
        self._thread.join(timeout=5.0)

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

    def _reconnect(self) -> websockets.sync.client.ClientConnection:
        """Connect again, with exponential backoff between failed attempts."""
        now = time.monotonic()
        if now < self._retry_at_s:
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
            self._metadata = metadata
            self._counts["reconnects"] += 1
            if self._closed:
                conn.close()
                raise PolicyUnavailable(f"{self._endpoint}: the openpi source is closed")
            self._conn = conn
        return conn

    def _fail(self, request: _Request, error: TestbedError) -> None:
        with self._cv:
            if request.generation == self._generation:
                self._error = error
                self._cv.notify_all()

    def _drop_connection(self) -> None:
        with self._cv:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                request, self._pending = self._pending, None
                conn = self._conn
            try:
                reply = self._exchange(conn, request)
            except PolicyUnavailable as exc:
                self._drop_connection()
                self._fail(request, exc)
                continue
            received_s = time.monotonic()
            try:
                chunk = self._to_chunk(reply, request, received_s)
            except SpecMismatch as exc:
                self._fail(request, exc)
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

    def _exchange(
        self, conn: websockets.sync.client.ClientConnection | None, request: _Request
    ) -> bytes:
        """Send one observation frame and wait for its reply, reconnecting once if idle-dropped."""
        if conn is None:
            conn = self._reconnect()
        try:
            conn.send(request.payload)
        except (websockets.exceptions.ConnectionClosed, OSError):
            # The server went away while we were idle; a restarted server gets one fresh try.
            self._drop_connection()
            conn = self._reconnect()
            try:
                conn.send(request.payload)
            except (websockets.exceptions.ConnectionClosed, OSError) as exc:
                raise PolicyUnavailable(f"{self._endpoint}: connection lost while sending: {exc}") from exc
        with self._cv:
            self._counts["sent"] += 1
        try:
            reply = conn.recv()
        except (websockets.exceptions.ConnectionClosed, OSError) as exc:
            raise PolicyUnavailable(
                f"{self._endpoint}: connection to the openpi server lost while waiting for step "
                f"{request.step}: {exc}"
            ) from exc
        if isinstance(reply, str):
            last = reply.strip().splitlines()[-1] if reply.strip() else "(empty)"
            raise PolicyUnavailable(f"{self._endpoint}: the openpi server's policy failed: {last}")
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
