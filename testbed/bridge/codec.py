"""Tensor codec: numpy arrays <-> ``testbed.v1`` messages, never pickle.

A tensor travels as dtype, shape and raw little-endian C-order bytes. Decoding
is zero-copy (``np.frombuffer`` over the message's bytes), so decoded arrays are
read-only: copy one before changing it in place. Every decode checks the byte
count against the shape and, given a spec, dtype, shape and finiteness, naming
the field that failed.
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
_F32 = np.dtype("<f4")
# Small float32 tensors (a state, a chunk) are checked for NaN/inf as one Python int rather than
# with a numpy call. The checks run in threads woken once per request, where every distinct C
# call costs microseconds (cold caches): a numpy isfinite call costs ~18 us there, this ~8 us.
_INT_SCAN_MAX = 1024
_FINITE_MASKS: dict[int, tuple[int, int]] = {}


def _f32_finite(data: bytes) -> bool:
    """True unless the little-endian float32 values in ``data`` hold NaN or inf (at most ``_INT_SCAN_MAX``).

    NaN and inf are the values whose 8 exponent bits are all set. Read as one integer, lane by
    lane: ``(bits & EXP) ^ EXP`` is zero exactly in a non-finite lane, and adding EXP to a
    non-zero lane (at most 0x7F800000) sets its top bit without carrying into the next lane.
    """
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
        self, obs: Mapping[str, np.ndarray], *, episode: int, step: int, sim_time_s: float = 0.0
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
                # a C-contiguous little-endian array is joined from its own buffer: no copy here
                parts.append(value if cached[4] and value.flags.c_contiguous
                             else np.ascontiguousarray(value, dtype=cached[3]))
        if episode:
            parts.append(_tagged_varint(0x10, episode))
        if step:
            parts.append(_tagged_varint(0x18, step))
        if sim_time_s or math.copysign(1.0, sim_time_s) < 0:  # proto3 leaves out +0.0 only
            parts.append(b"\x21" + struct.pack("<d", sim_time_s))
        return b"".join(parts)  # type: ignore[arg-type]

    @classmethod
    def _entry(cls, key: str, value: np.ndarray) -> tuple[np.dtype, tuple[int, ...], bytes, np.dtype, bool, bool]:
        header, wire_dtype = cls._header(key, value)
        return value.dtype, value.shape, header, wire_dtype, value.dtype == wire_dtype, value.size > 0

    @staticmethod
    def _header(key: str, value: np.ndarray) -> tuple[bytes, np.dtype]:
        code, wire_dtype = _wire_type(value, f"observation[{key!r}]")
        nbytes = value.size * wire_dtype.itemsize
        tensor_head = b"\x08" + _varint(code)
        if value.shape:
            tensor_head += _field(b"\x12", b"".join(_varint(d) for d in value.shape))
        if nbytes:
            tensor_head += b"\x1a" + _varint(nbytes)
        entry_head = _field(b"\x0a", key.encode()) + b"\x12" + _varint(len(tensor_head) + nbytes) + tensor_head
        return b"\x0a" + _varint(len(entry_head) + nbytes) + entry_head, wire_dtype


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
