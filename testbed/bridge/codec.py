"""Tensor codec: numpy arrays <-> ``testbed.v1`` messages, never pickle.

A tensor travels as dtype, shape and raw little-endian C-order bytes. Decoding
is zero-copy (``np.frombuffer`` over the message's bytes), so decoded arrays are
read-only: copy one before changing it in place. Every decode checks the byte
count against the shape and, given a spec, dtype, shape and finiteness, naming
the field that failed.

The policy round trip skips message objects where it can: ``ObservationEncoder``
writes an observation's wire bytes, ``ObservationDecoder.parse`` reads them,
``ChunkEncoder`` writes an answer's and ``ChunkDecoder`` reads it. Each handles the
layout it expects and hands anything else to the message path (which names what is
wrong): they run in threads woken for every request, where each distinct call costs
microseconds, and a message costs a call per field.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping

import numpy as np

from testbed.bridge.generated import common_pb2 as pb
from testbed.errors import SpecMismatch
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec
from testbed.policies.source import ActionChunk

# dtype name -> (wire enum, little-endian numpy dtype)
_DTYPES: dict[str, tuple[int, np.dtype]] = {
    "float32": (pb.DTYPE_FLOAT32, np.dtype("<f4")),
    "float64": (pb.DTYPE_FLOAT64, np.dtype("<f8")),
    "uint8": (pb.DTYPE_UINT8, np.dtype("u1")),
    "int32": (pb.DTYPE_INT32, np.dtype("<i4")),
    "int64": (pb.DTYPE_INT64, np.dtype("<i8")),
    "bool": (pb.DTYPE_BOOL, np.dtype("?")),
}
_BY_ENUM: dict[int, tuple[str, np.dtype]] = {code: (name, dt) for name, (code, dt) in _DTYPES.items()}
_KINDS: dict[ActionKind, int] = {
    ActionKind.JOINT_POSITIONS: pb.ACTION_KIND_JOINT_POSITIONS,
    ActionKind.JOINT_DELTAS: pb.ACTION_KIND_JOINT_DELTAS,
    ActionKind.CARTESIAN_DELTAS: pb.ACTION_KIND_CARTESIAN_DELTAS,
}
_KINDS_BY_ENUM = {code: kind for kind, code in _KINDS.items()}
MAX_DIMS = 8
# gRPC's hard cap on a message (servers set lower ones): no tensor's shape may describe more bytes,
# counting its non-zero dimensions only
MAX_TENSOR_BYTES = 2**31 - 1
_F32 = np.dtype("<f4")
_F64 = struct.Struct("<d")
_STEP2_MS = struct.Struct("<BBBBd")  # ActionChunk tail: step (a 2-byte varint), compute_ms
_NO_TIME = 0.0  # ObservationEncoder's default sim_time_s
# Small float32 tensors (a state, a chunk) are checked for NaN/inf as one Python int rather than
# with a numpy call. The checks run in threads woken once per request, where every distinct C
# call costs microseconds (cold caches): a numpy isfinite call costs ~18 us there, this ~8 us.
_INT_SCAN_MAX = 1024
_FINITE_MASKS: dict[int, tuple[int, int]] = {}


def _f32_finite(data: bytes) -> bool:
    """True unless the little-endian float32 values in ``data`` hold NaN or inf (at most ``_INT_SCAN_MAX``).

    NaN and inf are the values whose 8 exponent bits are all set, so their last byte (sign and
    the top 7 exponent bits) is 0x7F or 0xFF: without such a byte (the usual case: those are
    magnitudes of 2**127 and more) every value is finite, which two byte searches tell. Else
    read as one integer, lane by lane: ``(bits & EXP) ^ EXP`` is zero exactly in a non-finite
    lane, and adding EXP to a non-zero lane (at most 0x7F800000) sets its top bit without
    carrying into the next lane.
    """
    high = data[3::4]
    if b"\x7f" not in high and b"\xff" not in high:
        return True
    count = len(data) >> 2
    masks = _FINITE_MASKS.get(count)
    if masks is None:
        masks = _FINITE_MASKS[count] = (int.from_bytes(b"\0\0\x80\x7f" * count, "little"),
                                        int.from_bytes(b"\0\0\0\x80" * count, "little"))
    exponent, top = masks
    return (((int.from_bytes(data, "little") & exponent) ^ exponent) + exponent) & top == top


def _all_finite(value: np.ndarray, data: bytes) -> bool:
    """True unless the float array ``value`` (with little-endian bytes ``data``) holds NaN or inf."""
    if value.dtype == _F32 and value.size <= _INT_SCAN_MAX:
        return _f32_finite(data)
    return bool(np.isfinite(value).all())


# numpy dtype (any byte order) -> (wire enum, little-endian numpy dtype); filled on first use,
# because ``dtype.name`` is computed in Python on every access (~1 us) and encode is per step
_WIRE_BY_DTYPE: dict[np.dtype, tuple[int, np.dtype]] = {}


def _wire_type(value: np.ndarray, name: str) -> tuple[int, np.dtype]:
    dtype = value.dtype
    wire = _WIRE_BY_DTYPE.get(dtype)
    if wire is None:
        dtype_name = dtype.name
        if dtype_name not in _DTYPES:
            raise SpecMismatch(f"{name}: dtype {dtype_name} cannot be sent (supported: {', '.join(_DTYPES)})")
        wire = _WIRE_BY_DTYPE[dtype] = _DTYPES[dtype_name]
    return wire


def encode_tensor(value: np.ndarray, name: str = "tensor", out: pb.Tensor | None = None) -> pb.Tensor:
    """Encode an array as a ``Tensor`` message (little-endian, C order).

    Args:
        value: the array.
        name: field name used in error messages.
        out: a message to fill in place (e.g. a map entry, saving a copy of the bytes).

    Raises:
        SpecMismatch: the dtype is not one of the supported ones.
    """
    value = np.asarray(value)
    code, wire_dtype = _wire_type(value, name)
    # astype(copy=False) is a no-op for native little-endian input; tobytes() writes C order
    # whatever the strides, so this is the one copy of the data before the message takes it
    msg = pb.Tensor() if out is None else out
    msg.dtype = code
    msg.shape[:] = value.shape
    msg.data = value.astype(wire_dtype, copy=False).tobytes()
    return msg


def decode_tensor(msg: pb.Tensor, name: str = "tensor", spec: TensorSpec | None = None) -> np.ndarray:
    """Decode a ``Tensor`` message into a read-only array viewing the message's bytes.

    Args:
        msg: the wire tensor.
        name: field name used in error messages.
        spec: when given, dtype and shape must match it and floats must be finite.

    Raises:
        SpecMismatch: unknown dtype, bad shape, byte count not matching the shape, or a spec mismatch.
    """
    if msg.dtype not in _BY_ENUM:
        raise SpecMismatch(f"{name}: unknown dtype code {msg.dtype} (supported: {', '.join(_DTYPES)})")
    dtype_name, wire_dtype = _BY_ENUM[msg.dtype]
    shape = tuple(msg.shape)
    if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
        raise SpecMismatch(f"{name}: shape {shape} is invalid (at most {MAX_DIMS} non-negative dimensions)")
    data = msg.data  # read the field once: every read builds a new bytes object
    expected_bytes = math.prod(shape) * wire_dtype.itemsize
    if len(data) != expected_bytes:
        raise SpecMismatch(
            f"{name}: {len(data)} bytes do not fit dtype {dtype_name} shape {shape} "
            f"(expected {expected_bytes} bytes)"
        )
    # the byte count fits the shape, but a 0 dimension leaves the others unchecked: they must still
    # describe an array a message could carry, as numpy refuses larger ones (e.g. (0, 2**40, 2**40))
    if not expected_bytes and shape:
        span = math.prod(d for d in shape if d) * wire_dtype.itemsize
        if span > MAX_TENSOR_BYTES:
            raise SpecMismatch(
                f"{name}: shape {shape} is invalid: its non-zero dimensions span {span} bytes of {dtype_name}, "
                f"more than a message can carry (expected at most {MAX_TENSOR_BYTES} bytes)"
            )
    if spec is not None:
        if dtype_name != spec.dtype:
            raise SpecMismatch(f"{name}: expected dtype {spec.dtype}, got {dtype_name}")
        if shape != spec.shape:
            raise SpecMismatch(f"{name}: expected shape {spec.shape}, got {shape}")
    value: np.ndarray = np.ndarray(shape, wire_dtype, data)  # a read-only view of the bytes
    # only floats can hold NaN or inf: integer images (the bulk of an observation) skip the scan
    if spec is not None and wire_dtype.kind == "f" and not _all_finite(value, data):
        raise SpecMismatch(f"{name}: contains NaN or inf")
    return value


def encode_spec(spec: PolicySpec) -> pb.PolicySpec:
    """Encode a ``PolicySpec``."""
    return pb.PolicySpec(
        observation={
            key: pb.TensorSpec(dtype=_DTYPES[ts.dtype][0], shape=ts.shape)
            for key, ts in spec.observation.items()
        },
        action_kind=_KINDS[spec.action_kind],
        action_dim=spec.action_dim,
        chunk_size=spec.chunk_size,
        control_hz=spec.control_hz,
        model_name=spec.model_name,
        model_version=spec.model_version,
        extra=dict(spec.extra),
    )


def decode_spec(msg: pb.PolicySpec) -> PolicySpec:
    """Decode a ``PolicySpec`` message, validating every field.

    Raises:
        SpecMismatch: unknown dtype or action kind, or values ``PolicySpec`` rejects.
    """
    observation: dict[str, TensorSpec] = {}
    for key, ts in msg.observation.items():
        if ts.dtype not in _BY_ENUM:
            raise SpecMismatch(f"spec.observation[{key!r}]: unknown dtype code {ts.dtype}")
        observation[key] = TensorSpec(_BY_ENUM[ts.dtype][0], tuple(ts.shape))
    if msg.action_kind not in _KINDS_BY_ENUM:
        raise SpecMismatch(
            f"spec.action_kind: unknown code {msg.action_kind} (expected one of "
            f"{', '.join(k.value for k in _KINDS)})"
        )
    return PolicySpec(
        observation=observation,
        action_kind=_KINDS_BY_ENUM[msg.action_kind],
        action_dim=msg.action_dim,
        chunk_size=msg.chunk_size,
        control_hz=msg.control_hz,
        model_name=msg.model_name,
        model_version=msg.model_version,
        extra=dict(msg.extra),
    )


def encode_observation(
    obs: Mapping[str, np.ndarray], *, episode: int, step: int, sim_time_s: float = 0.0
) -> pb.Observation:
    """Encode an observation dict taken at policy step ``step`` of ``episode``."""
    msg = pb.Observation(episode=episode, step=step, sim_time_s=sim_time_s)
    for key, value in obs.items():
        encode_tensor(value, f"observation[{key!r}]", out=msg.tensors[key])
    return msg


def decode_observation(msg: pb.Observation, spec: PolicySpec) -> dict[str, np.ndarray]:
    """Decode an observation and check it against ``spec``.

    Keys the spec declares must be present and fit; other keys are decoded but not checked.

    Raises:
        SpecMismatch: a key is missing or a tensor does not fit, naming the key.
    """
    missing = [key for key in spec.observation if key not in msg.tensors]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        raise SpecMismatch(f"observation is missing {names} (has: {', '.join(sorted(msg.tensors))})")
    return {
        key: decode_tensor(tensor, f"observation[{key!r}]", spec.observation.get(key))
        for key, tensor in msg.tensors.items()
    }


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative int64 as its 64-bit two's complement (10 bytes)."""
    value &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tagged_varint(tag: int, value: int) -> bytes:
    """A varint field: one-byte ``tag`` then ``value``; steps and episodes below 16384 without a loop."""
    if 0 <= value < 0x80:
        return bytes((tag, value))
    if 0 < value < 0x4000:
        return bytes((tag, value & 0x7F | 0x80, value >> 7))
    return bytes((tag,)) + _varint(value)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


class ObservationEncoder:
    """Serializes observations straight to ``testbed.v1.Observation`` wire bytes.

    The bytes parse to the same message ``encode_observation`` builds, but no message
    objects are made: per key, dtype and shape the wire header (map entry, key, dtype,
    shape, data length) is built once, and each step only joins the headers with the
    arrays' own buffers, so a 27 KB image is copied once, into the bytes that gRPC sends
    (the message path copies it three times: ``tobytes``, into the message, and out of it
    when serialized). The field numbers come from ``common.proto``: Observation {tensors=1
    (map entry: key=1, value=2), episode=2, step=3, sim_time_s=4}, Tensor {dtype=1,
    shape=2 (packed), data=3}; a test checks the bytes against the generated classes.

    Each key's header is kept for the dtype and shape it had last; a step whose arrays have
    the same ones (the same dtype object: numpy shares one per builtin type) is recognised
    with a few attribute reads, which matters more than it seems: the encoder runs right
    after the caller wakes, when every distinct C call costs microseconds (cold caches).
    """

    _MAX_KEYS = 256  # keys whose headers are kept; an observation has a handful

    def __init__(self) -> None:
        # key -> (dtype, shape, header, wire dtype, whether the array goes as it is, any bytes)
        self._headers: dict[str, tuple[np.dtype, tuple[int, ...], bytes, np.dtype, bool, bool]] = {}

    def __call__(
        self, obs: Mapping[str, np.ndarray], *, episode: int, step: int, sim_time_s: float = _NO_TIME
    ) -> bytes:
        """Wire bytes of ``encode_observation(obs, episode=..., step=..., sim_time_s=...)``.

        Raises:
            SpecMismatch: a value's dtype is not one of the supported ones.
        """
        parts: list[object] = []
        headers = self._headers
        for key, value in obs.items():
            cached = headers.get(key)
            if (cached is None or value.__class__ is not np.ndarray or value.dtype is not cached[0]
                    or value.shape != cached[1]):
                value = np.asarray(value)
                cached = self._entry(key, value)
                if key in headers or len(headers) < self._MAX_KEYS:
                    headers[key] = cached
            parts.append(cached[2])
            if cached[5]:
                # a little-endian array is joined from its own buffer: no copy here (one that is not
                # C-contiguous has no such buffer: the join below refuses it, and it is copied then)
                parts.append(value if cached[4] else np.ascontiguousarray(value, dtype=cached[3]))
        if episode:
            parts.append(_tagged_varint(0x10, episode))
        if 0x80 <= step < 0x4000:  # most steps of a run, without a call
            parts.append(bytes((0x18, step & 0x7F | 0x80, step >> 7)))
        elif step:
            parts.append(_tagged_varint(0x18, step))
        # proto3 leaves out +0.0 only (the default, told apart without a call: it is _NO_TIME itself)
        if sim_time_s is not _NO_TIME and (sim_time_s or math.copysign(1.0, sim_time_s) < 0):
            parts.append(b"\x21" + _F64.pack(sim_time_s))
        try:
            return b"".join(parts)  # type: ignore[arg-type]
        except TypeError:  # an array without a C-contiguous buffer
            return b"".join(part if part.__class__ is bytes else np.ascontiguousarray(part)  # type: ignore[misc]
                            for part in parts)

    @classmethod
    def _entry(cls, key: str, value: np.ndarray) -> tuple[np.dtype, tuple[int, ...], bytes, np.dtype, bool, bool]:
        header, wire_dtype = cls._header(key, value)
        return value.dtype, value.shape, header, wire_dtype, value.dtype == wire_dtype, value.size > 0

    @staticmethod
    def _header(key: str, value: np.ndarray) -> tuple[bytes, np.dtype]:
        code, wire_dtype = _wire_type(value, f"observation[{key!r}]")
        return _entry_header(key, code, value.shape, value.size * wire_dtype.itemsize), wire_dtype


def _tensor_header(code: int, shape: tuple[int, ...], nbytes: int) -> bytes:
    """``Tensor`` wire bytes up to its data: dtype, packed shape, and the data field's tag and length."""
    head = b"\x08" + _varint(code)
    if shape:
        head += _field(b"\x12", b"".join(_varint(d) for d in shape))
    if nbytes:
        head += b"\x1a" + _varint(nbytes)
    return head


def _entry_header(key: str, code: int, shape: tuple[int, ...], nbytes: int) -> bytes:
    """``Observation.tensors`` map entry wire bytes up to the tensor's data (which is ``nbytes`` long)."""
    tensor_head = _tensor_header(code, shape, nbytes)
    entry_head = _field(b"\x0a", key.encode()) + b"\x12" + _varint(len(tensor_head) + nbytes) + tensor_head
    return b"\x0a" + _varint(len(entry_head) + nbytes) + entry_head


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` in ``data`` and the position after it.

    Raises:
        IndexError: the data ends inside the varint.
        ValueError: the varint is longer than 10 bytes.
    """
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    if data[pos + 1] < 0x80:  # two bytes: steps below 16384, most of a run
        return byte & 0x7F | data[pos + 1] << 7, pos + 2
    value = byte & 0x7F
    for shift in range(7, 70, 7):
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + 1
    raise ValueError("varint longer than 10 bytes")


def _int64(value: int) -> int:
    """A decoded varint as protobuf reads an ``int64``: its low 64 bits, two's complement."""
    value &= 0xFFFF_FFFF_FFFF_FFFF
    return value - 0x1_0000_0000_0000_0000 if value >> 63 else value


class ObservationDecoder:
    """``decode_observation`` for one spec, with each key's checks prepared once.

    The server decodes every observation of a stream against the same spec, so the
    expected dtype code, shape and byte count per key are computed here once; an
    observation that does not match them exactly (or carries keys the spec does not
    declare) goes through ``decode_observation``, which names what is wrong.

    Args:
        spec: the policy's spec.
    """

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec
        # per key: dtype code, shape as a list (compares with the message's repeated field as is)
        # and as a tuple, byte count, wire dtype, whether NaN/inf must be looked for
        self._plan = [
            (key, _DTYPES[ts.dtype][0], list(ts.shape), ts.shape,
             math.prod(ts.shape) * _DTYPES[ts.dtype][1].itemsize, _DTYPES[ts.dtype][1],
             _DTYPES[ts.dtype][1].kind == "f")
            for key, ts in spec.observation.items()
        ]
        # per key, for ``parse``: the map entry's bytes up to the tensor data, shape, byte count,
        # wire dtype, whether NaN/inf must be looked for: 1 in a small float32 tensor (by the
        # integer scan), 2 in another float one (by numpy), 0 not
        self._layout = [(key, _entry_header(key, code, shape, nbytes), shape, nbytes, wire_dtype,
                         0 if not floats else 1 if wire_dtype == _F32 and nbytes <= 4 * _INT_SCAN_MAX else 2)
                        for key, code, _, shape, nbytes, wire_dtype, floats in self._plan]

    def __call__(self, msg: pb.Observation) -> dict[str, np.ndarray]:
        """Decode ``msg``; same result and errors as ``decode_observation(msg, spec)``.

        Raises:
            SpecMismatch: a key is missing or a tensor does not fit, naming the key.
        """
        tensors = msg.tensors
        if len(tensors) == len(self._plan):
            obs: dict[str, np.ndarray] = {}
            for key, code, shape_list, shape, nbytes, wire_dtype, floats in self._plan:
                tensor = tensors.get(key)  # (indexing a missing key would insert it)
                if tensor is None:
                    break
                data = tensor.data
                if len(data) != nbytes or tensor.dtype != code or tensor.shape != shape_list:
                    break
                value: np.ndarray = np.ndarray(shape, wire_dtype, data)
                if floats and not _all_finite(value, data):
                    break
                obs[key] = value
            else:
                return obs
        return decode_observation(msg, self.spec)

    def parse(self, payload: bytes) -> tuple[dict[str, np.ndarray], int, int] | None:
        """Decode ``Observation`` wire bytes laid out as expected: ``(obs, episode, step)``, or None.

        The expected layout is what ``ObservationEncoder`` (and protobuf's own serializer) writes
        for an observation that fits the spec: one map entry per declared key, whose bytes up to
        the tensor data equal the ones prepared for that key, in any order, then the scalar
        fields. The arrays view ``payload`` (read-only, no copy). Anything else, including an
        observation that does not fit the spec, gives None: parse the message and call the
        decoder on it, which names what is wrong.
        """
        obs: dict[str, np.ndarray] = {}
        episode = step = 0
        end = len(payload)
        pos = 0
        try:
            while pos < end:
                tag = payload[pos]
                if tag == 0x0A:
                    for entry in self._layout:
                        if payload.startswith(entry[1], pos):
                            break
                    else:
                        return None
                    key, header, shape, nbytes, wire_dtype, floats = entry
                    pos += len(header)
                    if key in obs or pos + nbytes > end:
                        return None
                    value: np.ndarray = np.ndarray(shape, wire_dtype, payload, pos)
                    if floats == 1:  # see _f32_finite, whose first test is the one on the high bytes
                        high = payload[pos + 3:pos + nbytes:4]
                        if (b"\x7f" in high or b"\xff" in high) and not _f32_finite(payload[pos:pos + nbytes]):
                            return None
                    elif floats and not np.isfinite(value).all():
                        return None
                    obs[key] = value
                    pos += nbytes
                elif tag == 0x18:
                    step, pos = _read_varint(payload, pos + 1)
                elif tag == 0x10:
                    episode, pos = _read_varint(payload, pos + 1)
                elif tag == 0x21 and pos + 9 <= end:
                    pos += 9  # sim_time_s: the server does not use it
                else:
                    return None
        except (IndexError, ValueError):  # a varint cut short or too long
            return None
        if len(obs) != len(self._layout):
            return None
        return obs, _int64(episode) if episode >> 63 else episode, _int64(step) if step >> 63 else step


def encode_chunk(actions: np.ndarray, *, step: int, episode: int, compute_ms: float = 0.0) -> pb.ActionChunk:
    """Encode an action chunk float32 ``(chunk, action_dim)`` computed for ``step``."""
    return pb.ActionChunk(
        actions=encode_tensor(actions, "actions"), step=step, episode=episode, compute_ms=compute_ms
    )


def encode_actions(actions: np.ndarray, spec: PolicySpec, out: pb.Tensor) -> None:
    """Check a policy's chunk against ``spec.validate_action`` and write it into ``out``.

    Args:
        actions: float32 ``(chunk, action_dim)`` as the policy returned it.
        spec: the policy's spec.
        out: the message to fill (e.g. ``ActResult.chunk.actions``).

    Raises:
        SpecMismatch: the chunk has the wrong dtype or shape, or is not finite.
    """
    shape = actions.shape
    if (actions.dtype == _F32 and len(shape) == 2 and shape[1] == spec.action_dim
            and 1 <= shape[0] <= spec.chunk_size and shape[0] * shape[1] <= _INT_SCAN_MAX):
        data = actions.tobytes()  # C order whatever the strides: the one copy
        if _f32_finite(data):
            out.dtype = pb.DTYPE_FLOAT32
            out.shape[:] = shape
            out.data = data
            return
    spec.validate_action(actions)  # names what is wrong; passes only for valid non-native input
    encode_tensor(actions, "actions", out=out)


def decode_chunk(msg: pb.ActionChunk, spec: PolicySpec, *, latency_ms: float = 0.0) -> ActionChunk:
    """Decode an action chunk and check it against ``spec.validate_action``.

    Raises:
        SpecMismatch: the chunk is malformed, has the wrong shape or dtype, or is not finite.
    """
    tensor = msg.actions
    data = tensor.data
    # the common, valid case in one pass, its rows read off the byte count; anything else goes
    # the long way, which names the fault
    dim = spec.action_dim
    rows = len(data) // (4 * dim) if dim > 0 else 0
    if (1 <= rows <= spec.chunk_size and len(data) == 4 * rows * dim and rows * dim <= _INT_SCAN_MAX
            and tensor.dtype == pb.DTYPE_FLOAT32 and tensor.shape == [rows, dim] and _f32_finite(data)):
        return ActionChunk(actions=np.ndarray((rows, dim), _F32, data), step=msg.step, compute_ms=msg.compute_ms,
                           latency_ms=latency_ms)
    actions = decode_tensor(tensor, "actions")
    spec.validate_action(actions)
    return ActionChunk(actions=actions, step=msg.step, compute_ms=msg.compute_ms, latency_ms=latency_ms)


class ChunkEncoder:
    """Writes a policy's chunk straight to ``ActionChunk`` / ``ActResult`` wire bytes, checked as it goes.

    The bytes parse to the message ``encode_actions`` and the step, episode and compute time
    fields make (a test checks them against the generated classes); the wire header of a
    chunk's tensor is built once per row count. Field numbers from ``common.proto`` and
    ``policy.proto``: ActionChunk {actions=1, step=2, episode=3, compute_ms=4}, ActResult
    {chunk=1, error=2}.

    Args:
        spec: the policy's spec; chunks are checked against ``spec.validate_action``.
    """

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec
        self._heads: dict[int, bytes] = {}  # rows -> the actions field's bytes up to the data
        self._dim = spec.action_dim
        # the most rows a chunk may have that is checked and written here (others: the message way)
        self._max_rows = spec.chunk_size if spec.chunk_size * spec.action_dim <= _INT_SCAN_MAX else 0

    def __call__(self, actions: np.ndarray, *, step: int, episode: int, compute_ms: float,
                 act_result: bool = False) -> bytes:
        """``ActionChunk`` wire bytes for ``actions`` float32 ``(chunk, action_dim)`` computed for ``step``.

        Args:
            actions: the policy's chunk.
            step: the observation's step.
            episode: the observation's episode.
            compute_ms: time the policy took.
            act_result: the bytes of an ``ActResult`` holding the chunk (what ``StreamAct`` sends).

        Raises:
            SpecMismatch: the chunk has the wrong dtype or shape, or is not finite.
        """
        shape = actions.shape
        dtype = actions.dtype
        if ((dtype is _F32 or dtype == _F32) and len(shape) == 2 and shape[1] == self._dim
                and 1 <= shape[0] <= self._max_rows):
            data = actions.tobytes()  # C order whatever the strides: the one copy
            high = data[3::4]  # see _f32_finite, whose first test this is
            if (b"\x7f" not in high and b"\xff" not in high) or _f32_finite(data):
                head = self._heads.get(shape[0])
                if head is None:
                    tensor_head = _tensor_header(pb.DTYPE_FLOAT32, shape, len(data))
                    head = self._heads[shape[0]] = b"\x0a" + _varint(len(tensor_head) + len(data)) + tensor_head
                if 0x80 <= step < 0x4000 and not episode and compute_ms > 0.0:  # most answers of a run: one call
                    tail = _STEP2_MS.pack(0x10, step & 0x7F | 0x80, step >> 7, 0x21, compute_ms)
                else:
                    if 0x80 <= step < 0x4000:
                        tail = bytes((0x10, step & 0x7F | 0x80, step >> 7))
                    else:
                        tail = _tagged_varint(0x10, step) if step else b""
                    if episode:
                        tail += _tagged_varint(0x18, episode)
                    if compute_ms or math.copysign(1.0, compute_ms) < 0:  # proto3 leaves out +0.0 only
                        tail += b"\x21" + _F64.pack(compute_ms)
                if act_result:  # the ActResult around it: its chunk field's tag and length
                    length = len(head) + len(data) + len(tail)
                    return b"".join((bytes((0x0A, length & 0x7F | 0x80, length >> 7)) if 0x80 <= length < 0x4000
                                     else _tagged_varint(0x0A, length), head, data, tail))
                return b"".join((head, data, tail))
        self.spec.validate_action(actions)  # names what is wrong; passes only for valid non-native input
        msg = pb.ActionChunk(step=step, episode=episode, compute_ms=compute_ms)
        encode_tensor(actions, "actions", out=msg.actions)
        return act_result_bytes(msg.SerializeToString()) if act_result else msg.SerializeToString()


class ChunkDecoder:
    """``decode_chunk`` straight from ``ActionChunk`` / ``ActResult`` wire bytes, for one spec.

    A chunk of the spec's full size laid out as ``ChunkEncoder`` (and protobuf's serializer)
    writes it is read without a message object, the array viewing the bytes (read-only); any
    other bytes give None, and the caller parses the message and calls ``decode_chunk``,
    which names what is wrong.

    Args:
        spec: the policy's spec.
    """

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec
        rows, dim = spec.chunk_size, spec.action_dim
        self._shape = (rows, dim)
        self._nbytes = 4 * rows * dim
        self._head = b""  # empty: no fast path for this spec
        if 0 < rows * dim <= _INT_SCAN_MAX:
            tensor_head = _tensor_header(pb.DTYPE_FLOAT32, self._shape, self._nbytes)
            self._head = b"\x0a" + _varint(len(tensor_head) + self._nbytes) + tensor_head

    def chunk(self, payload: bytes, *, latency_ms: float = 0.0) -> tuple[ActionChunk, int] | None:
        """``(chunk, episode)`` from ``ActionChunk`` bytes (what unary ``Act`` answers), or None (see the class).

        The chunk is valid: finite float32 of the spec's full shape.
        """
        return self._read(payload, 0, latency_ms)

    def result(self, payload: bytes, *, latency_ms: float = 0.0) -> tuple[ActionChunk, int] | None:
        """``(chunk, episode)`` from ``ActResult`` bytes holding a chunk, or None (an error, or see the class).

        The chunk is valid: finite float32 of the spec's full shape.
        """
        # an ActResult holding a chunk: tag 1, the chunk's length (2 bytes for any chunk up to 16 KB), the chunk
        if len(payload) < 3 or payload[0] != 0x0A:
            return None
        length = payload[1]
        start = 2
        if length >= 0x80:
            if payload[2] >= 0x80:
                return None
            length = length & 0x7F | payload[2] << 7
            start = 3
        if start + length != len(payload):
            return None
        return self._read(payload, start, latency_ms)

    def _read(self, payload: bytes, start: int, latency_ms: float) -> tuple[ActionChunk, int] | None:
        """The ``ActionChunk`` that fills ``payload`` from ``start`` on, or None (see the class)."""
        head = self._head
        if not head or not payload.startswith(head, start):
            return None
        data_pos = start + len(head)
        pos = data_pos + self._nbytes
        end = len(payload)
        if pos > end:
            return None
        high = payload[data_pos + 3:pos:4]  # see _f32_finite, whose first test this is
        if (b"\x7f" in high or b"\xff" in high) and not _f32_finite(payload[data_pos:pos]):
            return None
        step = episode = 0
        compute_ms = 0.0
        try:
            while pos < end:
                tag = payload[pos]
                if tag == 0x10:
                    step, pos = _read_varint(payload, pos + 1)
                elif tag == 0x18:
                    episode, pos = _read_varint(payload, pos + 1)
                elif tag == 0x21 and pos + 9 <= end:
                    compute_ms = _F64.unpack_from(payload, pos + 1)[0]
                    pos += 9
                else:  # a second actions field (merged by protobuf), or another one
                    return None
        except (IndexError, ValueError):
            return None
        if step >> 63:
            step = _int64(step)
        if episode >> 63:
            episode = _int64(episode)
        actions: np.ndarray = np.ndarray(self._shape, _F32, payload, data_pos)
        return ActionChunk(actions=actions, step=step, compute_ms=compute_ms, latency_ms=latency_ms), episode


def act_result_bytes(chunk: bytes) -> bytes:
    """``ActResult`` wire bytes holding the ``ActionChunk`` wire bytes ``chunk``."""
    return _tagged_varint(0x0A, len(chunk)) + chunk
