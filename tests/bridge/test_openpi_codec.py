"""The openpi msgpack-numpy codec: wire layout, round trips, and refusal of malformed frames."""

from __future__ import annotations

import re

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from testbed.bridge import openpi_codec
from testbed.errors import SpecMismatch

WIRE_DTYPES = st.sampled_from(["bool", "uint8", "int32", "int64", "float32", "float64", ">f4", "<i2"])


@given(hnp.arrays(dtype=WIRE_DTYPES, shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_array_round_trips_with_dtype_and_shape(array: np.ndarray) -> None:
    decoded = openpi_codec.unpack(openpi_codec.pack({"x": array}))["x"]
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_array_uses_openpi_wire_layout() -> None:
    raw = msgpack.unpackb(openpi_codec.pack(np.arange(6, dtype=np.float32).reshape(2, 3)))
    assert raw == {
        b"__ndarray__": True,
        b"data": np.arange(6, dtype=np.float32).tobytes(),
        b"dtype": "<f4",
        b"shape": [2, 3],
    }


def test_non_contiguous_array_is_sent_in_c_order() -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4).T
    np.testing.assert_array_equal(openpi_codec.unpack(openpi_codec.pack(array)), array)


def test_numpy_scalar_round_trips_as_scalar() -> None:
    decoded = openpi_codec.unpack(openpi_codec.pack({"t": np.float32(1.5), "n": np.int64(-3)}))
    assert decoded["t"] == np.float32(1.5) and decoded["t"].dtype == np.float32
    assert decoded["n"] == -3 and decoded["n"].dtype == np.int64


def test_plain_values_pass_through() -> None:
    obj = {"prompt": "pick the part", "n": 3, "nested": {"a": [1.0, 2.0]}}
    assert openpi_codec.unpack(openpi_codec.pack(obj)) == obj


def test_object_array_is_refused_on_send() -> None:
    with pytest.raises(SpecMismatch, match="cannot send numpy dtype object"):
        openpi_codec.pack({"x": np.array([object()])})


def _frame(**fields: object) -> bytes:
    base: dict[bytes, object] = {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "<f4", b"shape": [2]}
    base.update({k.encode(): v for k, v in fields.items()})
    return msgpack.packb(base)


def test_object_dtype_on_the_wire_is_refused() -> None:
    with pytest.raises(SpecMismatch, match=re.escape("dtype '|O' is not allowed")):
        openpi_codec.unpack(_frame(dtype="|O"))


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(SpecMismatch, match="unknown dtype 'nope'"):
        openpi_codec.unpack(_frame(dtype="nope"))


def test_byte_count_must_match_shape() -> None:
    message = "8 data bytes do not match shape (3,) of <f4 (12 bytes expected)"
    with pytest.raises(SpecMismatch, match=re.escape(message)):
        openpi_codec.unpack(_frame(shape=[3]))


def test_negative_dimension_is_refused() -> None:
    with pytest.raises(SpecMismatch, match="shape must be a list of non-negative integers"):
        openpi_codec.unpack(_frame(shape=[-2]))


def test_garbage_is_not_msgpack() -> None:
    with pytest.raises(SpecMismatch, match="frame is not valid msgpack"):
        openpi_codec.unpack(b"\xc1\xc1\xc1")


def test_frame_over_limit_is_refused() -> None:
    with pytest.raises(SpecMismatch, match="exceeds the limit of 10 bytes"):
        openpi_codec.unpack(openpi_codec.pack(np.zeros(16, np.uint8)), max_bytes=10)


def test_decoded_array_is_read_only() -> None:
    decoded = openpi_codec.unpack(openpi_codec.pack(np.zeros(3, np.float32)))
    assert not decoded.flags.writeable
