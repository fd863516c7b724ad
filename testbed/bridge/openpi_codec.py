"""msgpack with numpy arrays, byte-compatible with openpi-client's ``msgpack_numpy``.

openpi's websocket policy servers speak msgpack in which every numpy array is
a map ``{b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str,
b"shape": [dims]}`` and every numpy scalar a map ``{b"__npgeneric__": True,
b"data": value, b"dtype": dtype.str}`` (keys are msgpack *bin*, ``dtype.str``
carries the byte order, e.g. ``"<f4"``). openpi-client pins ``numpy<2``, which
clashes with ours, so this module implements the same encoding instead of
importing it; the integration tests check both directions against openpi's
own code.

Unlike openpi's decoder, :func:`unpack` validates what arrives: only bool,
integer and float dtypes are accepted, and the byte count must equal the
shape times the item size. It never falls back to pickle.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

from testbed.errors import SpecMismatch

# Kinds numpy arrays may have on the wire: bool, signed, unsigned, float.
_WIRE_KINDS = frozenset("biuf")
_NDARRAY = b"__ndarray__"
_NPGENERIC = b"__npgeneric__"


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic) and obj.dtype.kind not in _WIRE_KINDS:
        raise SpecMismatch(f"cannot send numpy dtype {obj.dtype} (allowed kinds: bool, int, uint, float)")
    if isinstance(obj, np.ndarray):
        return {_NDARRAY: True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {_NPGENERIC: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot encode {type(obj).__name__} as msgpack")


def _wire_dtype(value: Any, where: str) -> np.dtype:
    if not isinstance(value, str):
        raise SpecMismatch(f"{where}: dtype must be a string such as '<f4', got {type(value).__name__}")
    try:
        dtype = np.dtype(value)
    except (TypeError, ValueError) as exc:
        raise SpecMismatch(f"{where}: unknown dtype {value!r}") from exc
    if dtype.kind not in _WIRE_KINDS:
        raise SpecMismatch(f"{where}: dtype {value!r} is not allowed (allowed kinds: bool, int, uint, float)")
    return dtype


def _decode(obj: dict[Any, Any]) -> Any:
    if _NDARRAY in obj:
        dtype = _wire_dtype(obj.get(b"dtype"), "ndarray")
        shape = obj.get(b"shape")
        data = obj.get(b"data")
        if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise SpecMismatch(f"ndarray: shape must be a list of non-negative integers, got {shape!r}")
        if not isinstance(data, bytes):
            raise SpecMismatch(f"ndarray: data must be bytes, got {type(data).__name__}")
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise SpecMismatch(
                f"ndarray: {len(data)} data bytes do not match shape {tuple(shape)} of {dtype.str} "
                f"({expected} bytes expected)"
            )
        return np.ndarray(buffer=data, dtype=dtype, shape=tuple(shape))
    if _NPGENERIC in obj:
        dtype = _wire_dtype(obj.get(b"dtype"), "numpy scalar")
        return dtype.type(obj.get(b"data"))
    return obj


def pack(obj: Any) -> bytes:
    """Encode ``obj`` (dicts, lists, str, numbers, numpy arrays and scalars) as openpi msgpack.

    Raises:
        SpecMismatch: an array has an object, void or complex dtype.
        TypeError: ``obj`` holds a value msgpack cannot encode.
    """
    return msgpack.packb(obj, default=_encode)


def unpack(data: bytes, *, max_bytes: int | None = None) -> Any:
    """Decode openpi msgpack; numpy maps become read-only arrays viewing ``data``.

    Args:
        data: one websocket frame.
        max_bytes: refuse frames longer than this.

    Raises:
        SpecMismatch: the frame is not valid msgpack, too long, or holds a malformed array.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise SpecMismatch(f"frame of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except SpecMismatch:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SpecMismatch(f"frame is not valid msgpack: {exc}") from exc
