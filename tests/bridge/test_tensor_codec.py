"""Tensor codec: round trips, zero-copy decode, and rejection of malformed tensors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from testbed.bridge import codec
from testbed.bridge.generated import common_pb2 as pb
from testbed.errors import SpecMismatch
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec

DTYPES = ["float32", "float64", "uint8", "int32", "int64", "bool"]


def _spec() -> PolicySpec:
    return PolicySpec(
        observation={
            "observation.state": TensorSpec("float32", (7,)),
            "observation.images.overhead": TensorSpec("uint8", (4, 4, 3)),
        },
        action_kind=ActionKind.JOINT_POSITIONS,
        action_dim=7,
        chunk_size=5,
        control_hz=10.0,
        model_name="m",
        model_version="2",
        extra={"k": "v"},
    )


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(DTYPES).flatmap(
        lambda name: hnp.arrays(np.dtype(name), hnp.array_shapes(min_dims=0, max_dims=4, max_side=5))
    )
)
def test_tensor_round_trip_preserves_dtype_shape_and_bytes(value: np.ndarray) -> None:
    msg = pb.Tensor.FromString(codec.encode_tensor(value).SerializeToString())
    back = codec.decode_tensor(msg)
    assert back.dtype == value.dtype
    assert back.shape == value.shape
    assert back.tobytes() == value.tobytes()


def test_big_endian_input_is_sent_little_endian() -> None:
    value = np.arange(4, dtype=">f4")
    msg = codec.encode_tensor(value)
    assert msg.data == np.arange(4, dtype="<f4").tobytes()
    np.testing.assert_array_equal(codec.decode_tensor(msg), value)


def test_non_contiguous_input_is_encoded_in_c_order() -> None:
    value = np.arange(12, dtype=np.float32).reshape(3, 4).T
    np.testing.assert_array_equal(codec.decode_tensor(codec.encode_tensor(value)), value)


def test_decode_is_zero_copy_and_read_only() -> None:
    msg = codec.encode_tensor(np.arange(6, dtype=np.float32))
    value = codec.decode_tensor(msg)
    assert not value.flags.writeable
    assert not value.flags.owndata


def test_unsupported_dtype_is_refused_on_encode() -> None:
    with pytest.raises(SpecMismatch, match=r"img: dtype complex64 cannot be sent"):
        codec.encode_tensor(np.zeros(2, np.complex64), "img")


def test_size_mismatch_names_field_and_expected_bytes() -> None:
    msg = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[7], data=b"\0" * 27)
    expected = r"state: 27 bytes do not fit dtype float32 shape \(7,\) \(expected 28"
    with pytest.raises(SpecMismatch, match=expected):
        codec.decode_tensor(msg, "state")


def test_unknown_dtype_code_is_refused() -> None:
    with pytest.raises(SpecMismatch, match="unknown dtype code 0"):
        codec.decode_tensor(pb.Tensor(shape=[1], data=b"\0"), "x")


def test_negative_dimension_is_refused() -> None:
    with pytest.raises(SpecMismatch, match=r"shape \(-1,\) is invalid"):
        codec.decode_tensor(pb.Tensor(dtype=pb.DTYPE_UINT8, shape=[-1], data=b""), "x")


def test_huge_shape_with_small_payload_is_refused_without_allocating() -> None:
    msg = pb.Tensor(dtype=pb.DTYPE_FLOAT64, shape=[2**40, 2**20], data=b"\0" * 8)
    with pytest.raises(SpecMismatch, match="bytes do not fit"):
        codec.decode_tensor(msg, "x")


def test_spec_dtype_and_shape_are_enforced() -> None:
    spec = TensorSpec("float32", (7,))
    with pytest.raises(SpecMismatch, match="s: expected dtype float32, got float64"):
        codec.decode_tensor(codec.encode_tensor(np.zeros(7)), "s", spec)
    with pytest.raises(SpecMismatch, match=r"s: expected shape \(7,\), got \(6,\)"):
        codec.decode_tensor(codec.encode_tensor(np.zeros(6, np.float32)), "s", spec)


def test_nan_is_refused_where_a_spec_applies() -> None:
    value = np.zeros(7, np.float32)
    value[3] = np.nan
    msg = codec.encode_tensor(value)
    assert np.isnan(codec.decode_tensor(msg, "s")[3])  # no spec: raw decode
    with pytest.raises(SpecMismatch, match="s: contains NaN or inf"):
        codec.decode_tensor(msg, "s", TensorSpec("float32", (7,)))


def test_spec_round_trip() -> None:
    spec = _spec()
    assert codec.decode_spec(pb.PolicySpec.FromString(codec.encode_spec(spec).SerializeToString())) == spec


def test_spec_with_unknown_action_kind_is_refused() -> None:
    msg = codec.encode_spec(_spec())
    msg.action_kind = pb.ACTION_KIND_UNSPECIFIED
    with pytest.raises(SpecMismatch, match=r"spec\.action_kind: unknown code 0"):
        codec.decode_spec(msg)


def test_observation_missing_key_is_named() -> None:
    msg = codec.encode_observation({"observation.state": np.zeros(7, np.float32)}, episode=0, step=0)
    with pytest.raises(SpecMismatch, match=r"missing 'observation.images.overhead'"):
        codec.decode_observation(msg, _spec())


def test_observation_round_trip_keeps_step_and_values() -> None:
    obs = {
        "observation.state": np.linspace(0, 1, 7, dtype=np.float32),
        "observation.images.overhead": np.full((4, 4, 3), 9, np.uint8),
    }
    msg = codec.encode_observation(obs, episode=3, step=41, sim_time_s=2.5)
    assert (msg.episode, msg.step, msg.sim_time_s) == (3, 41, 2.5)
    back = codec.decode_observation(pb.Observation.FromString(msg.SerializeToString()), _spec())
    for key, value in obs.items():
        np.testing.assert_array_equal(back[key], value)


def test_chunk_round_trip_and_validation() -> None:
    spec = _spec()
    actions = np.ones((5, 7), np.float32)
    chunk = codec.decode_chunk(codec.encode_chunk(actions, step=12, episode=1, compute_ms=0.5), spec)
    assert chunk.step == 12 and chunk.compute_ms == 0.5
    np.testing.assert_array_equal(chunk.actions, actions)
    with pytest.raises(SpecMismatch, match=r"action: expected shape \(1..5, 7\), got \(5, 8\)"):
        codec.decode_chunk(codec.encode_chunk(np.ones((5, 8), np.float32), step=0, episode=0), spec)
