"""Tensor codec: round trips, zero-copy decode, and rejection of malformed tensors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
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


@pytest.mark.parametrize("shape", [[0, 2**40, 2**40], [2**31, 0], [3, 0, 2**30]])
def test_an_empty_tensor_whose_other_dimensions_no_message_could_carry_is_refused(shape: list[int]) -> None:
    # 0 bytes fit any shape with a 0 in it; numpy still refuses to build such an array
    msg = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=shape, data=b"")
    with pytest.raises(SpecMismatch, match=r"x: shape \(.*\) is invalid: .*expected at most 2147483647 bytes"):
        codec.decode_tensor(msg, "x")


def test_empty_tensors_of_sizes_a_message_could_carry_still_decode() -> None:
    value = codec.decode_tensor(pb.Tensor(dtype=pb.DTYPE_UINT8, shape=[0, 2**20, 2**10], data=b""), "x")
    assert value.shape == (0, 2**20, 2**10)
    assert codec.decode_tensor(pb.Tensor(dtype=pb.DTYPE_UINT8, shape=[], data=b"\7"), "x").shape == ()


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


_KEYS = st.text(min_size=1, max_size=12)
_ARRAYS = st.sampled_from(DTYPES).flatmap(
    lambda name: hnp.arrays(np.dtype(name), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
)
_INT64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(_KEYS, _ARRAYS, max_size=3), _INT64, _INT64, st.floats(allow_nan=False))
def test_observation_encoder_bytes_parse_to_the_message_encode_observation_builds(
    obs: dict[str, np.ndarray], episode: int, step: int, sim_time_s: float
) -> None:
    wire = codec.ObservationEncoder()(obs, episode=episode, step=step, sim_time_s=sim_time_s)
    assert pb.Observation.FromString(wire) == codec.encode_observation(
        obs, episode=episode, step=step, sim_time_s=sim_time_s
    )


def test_observation_encoder_sends_non_contiguous_and_big_endian_arrays_as_c_order_little_endian() -> None:
    encoder = codec.ObservationEncoder()
    obs = {"t": np.arange(12, dtype=np.float32).reshape(3, 4).T, "b": np.arange(3, dtype=">i8")}
    for step in range(2):  # the second call uses the cached headers
        back = pb.Observation.FromString(encoder(obs, episode=1, step=step))
        assert back.step == step
        np.testing.assert_array_equal(codec.decode_tensor(back.tensors["t"]), obs["t"])
        np.testing.assert_array_equal(codec.decode_tensor(back.tensors["b"]), obs["b"])


def test_observation_encoder_refuses_an_unsupported_dtype_naming_the_key() -> None:
    with pytest.raises(SpecMismatch, match=r"observation\['img'\]: dtype complex64 cannot be sent"):
        codec.ObservationEncoder()({"img": np.zeros(2, np.complex64)}, episode=0, step=0)


def _wire_observation(**overrides: np.ndarray) -> pb.Observation:
    obs = {
        "observation.state": np.linspace(0, 1, 7, dtype=np.float32),
        "observation.images.overhead": np.full((4, 4, 3), 9, np.uint8),
    }
    obs.update(overrides)
    return pb.Observation.FromString(codec.encode_observation(obs, episode=0, step=0).SerializeToString())


def test_observation_decoder_matches_decode_observation_on_a_valid_observation() -> None:
    msg = _wire_observation()
    fast = codec.ObservationDecoder(_spec())(msg)
    slow = codec.decode_observation(msg, _spec())
    assert fast.keys() == slow.keys()
    for key in fast:
        assert fast[key].dtype == slow[key].dtype
        np.testing.assert_array_equal(fast[key], slow[key])
        assert not fast[key].flags.writeable


@pytest.mark.parametrize(("overrides", "message"), [
    ({"observation.state": np.array([0, 1, 2, 3, 4, 5, np.nan], np.float32)},
     r"observation\['observation.state'\]: contains NaN or inf"),
    ({"observation.state": np.array([0, 1, 2, 3, 4, 5, np.inf], np.float32)}, "contains NaN or inf"),
    ({"observation.state": np.zeros(6, np.float32)}, r"expected shape \(7,\), got \(6,\)"),
    ({"observation.state": np.zeros(7, np.float64)}, "expected dtype float32, got float64"),
    ({"observation.images.overhead": np.zeros((4, 4, 3), np.int32)}, "expected dtype uint8, got int32"),
])
def test_observation_decoder_refuses_what_decode_observation_refuses(
    overrides: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(SpecMismatch, match=message):
        codec.ObservationDecoder(_spec())(_wire_observation(**overrides))


def test_observation_decoder_names_a_missing_key_and_keeps_undeclared_ones() -> None:
    spec = _spec()
    missing = pb.Observation.FromString(
        codec.encode_observation({"observation.state": np.zeros(7, np.float32), "x": np.zeros(1)},
                                 episode=0, step=0).SerializeToString())
    with pytest.raises(SpecMismatch, match=r"missing 'observation.images.overhead'"):
        codec.ObservationDecoder(spec)(missing)
    extra = codec.ObservationDecoder(spec)(_wire_observation(extra=np.arange(3, dtype=np.int64)))
    np.testing.assert_array_equal(extra["extra"], [0, 1, 2])


def test_bad_byte_count_is_refused_by_the_decoder() -> None:
    msg = _wire_observation()
    msg.tensors["observation.state"].data = b"\0" * 27
    with pytest.raises(SpecMismatch, match=r"27 bytes do not fit dtype float32 shape \(7,\)"):
        codec.ObservationDecoder(_spec())(msg)


@pytest.mark.parametrize("size", [7, 4000])  # both NaN scans: the Python sum and numpy's
def test_nan_anywhere_in_a_float32_state_is_refused(size: int) -> None:
    spec = PolicySpec(observation={"s": TensorSpec("float32", (size,))}, action_kind=ActionKind.JOINT_POSITIONS,
                      action_dim=1, chunk_size=1, control_hz=1.0)
    for bad in (np.nan, np.inf, -np.inf):
        value = np.ones(size, np.float32)
        value[size // 2] = bad
        with pytest.raises(SpecMismatch, match=r"observation\['s'\]: contains NaN or inf"):
            codec.ObservationDecoder(spec)(pb.Observation.FromString(
                codec.encode_observation({"s": value}, episode=0, step=0).SerializeToString()))
    big = np.full(size, np.finfo(np.float32).max, np.float32)  # finite values whose float32 sum would overflow
    assert codec.ObservationDecoder(spec)(codec.encode_observation({"s": big}, episode=0, step=0))["s"][0] > 0


def test_encode_actions_writes_a_valid_chunk_and_refuses_bad_ones_naming_the_fault() -> None:
    spec = _spec()
    out = pb.Tensor()
    codec.encode_actions(np.ones((3, 7), np.float32), spec, out)
    np.testing.assert_array_equal(codec.decode_tensor(out), np.ones((3, 7), np.float32))
    nan = np.ones((5, 7), np.float32)
    nan[4, 6] = np.nan
    for bad, message in [(nan, "action: contains NaN or inf"),
                         (np.ones((6, 7), np.float32), r"expected shape \(1..5, 7\), got \(6, 7\)"),
                         (np.ones((5, 7)), "expected dtype float32, got float64")]:
        with pytest.raises(SpecMismatch, match=message):
            codec.encode_actions(bad, spec, pb.Tensor())


def test_chunk_with_nan_or_a_wrong_byte_count_is_refused_on_decode() -> None:
    spec = _spec()
    msg = codec.encode_chunk(np.ones((5, 7), np.float32), step=0, episode=0)
    msg.actions.data = np.array([np.inf] + [0.0] * 34, np.float32).tobytes()
    with pytest.raises(SpecMismatch, match="action: contains NaN or inf"):
        codec.decode_chunk(msg, spec)
    msg.actions.data = b"\0" * 12
    with pytest.raises(SpecMismatch, match="12 bytes do not fit"):
        codec.decode_chunk(msg, spec)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), max_size=80))
@example([0x7F7FFFFF, 0xFF7FFFFF, 0x00000001])  # the largest finite values, a denormal
@example([0, 0x7F800000])  # inf
@example([0xFF800000, 5])  # -inf
@example([1, 2, 0x7FC00001])  # NaN, last
def test_integer_finiteness_scan_agrees_with_numpy_on_any_float32_bits(bits: list[int]) -> None:
    data = np.array(bits, np.uint32).astype("<u4").tobytes()
    assert codec._f32_finite(data) == bool(np.isfinite(np.frombuffer(data, "<f4")).all())


def _full_observation(state: np.ndarray | None = None, image: np.ndarray | None = None) -> dict[str, np.ndarray]:
    return {
        "observation.state": np.linspace(-1, 1, 7, dtype=np.float32) if state is None else state,
        "observation.images.overhead": np.arange(48, dtype=np.uint8).reshape(4, 4, 3) if image is None else image,
    }


@settings(max_examples=80, deadline=None)
@given(_INT64, _INT64, st.floats(allow_nan=False), st.booleans())
def test_observation_bytes_parse_to_what_the_message_decodes_to(
    episode: int, step: int, sim_time_s: float, reverse_keys: bool
) -> None:
    obs = _full_observation()
    if reverse_keys:  # map entries in another order than the spec's
        obs = dict(reversed(obs.items()))
    wire = codec.ObservationEncoder()(obs, episode=episode, step=step, sim_time_s=sim_time_s)
    parsed = codec.ObservationDecoder(_spec()).parse(wire)
    assert parsed is not None
    values, got_episode, got_step = parsed
    msg = pb.Observation.FromString(wire)
    assert (got_episode, got_step) == (msg.episode, msg.step) == (episode, step)
    slow = codec.decode_observation(msg, _spec())
    assert values.keys() == slow.keys()
    for key, value in values.items():
        assert value.dtype == slow[key].dtype and not value.flags.writeable
        np.testing.assert_array_equal(value, slow[key])


def test_observation_bytes_the_message_decodes_the_same_way_parse_too() -> None:
    # protobuf's own serializer writes what ObservationEncoder writes
    wire = codec.encode_observation(_full_observation(), episode=3, step=200).SerializeToString()
    parsed = codec.ObservationDecoder(_spec()).parse(wire)
    assert parsed is not None and parsed[1:] == (3, 200)


@pytest.mark.parametrize("wire", [
    codec.ObservationEncoder()(_full_observation(state=np.array([0, 1, 2, 3, 4, 5, np.nan], np.float32)),
                               episode=0, step=1),
    codec.ObservationEncoder()(_full_observation(state=np.array([0, 1, 2, 3, 4, 5, -np.inf], np.float32)),
                               episode=0, step=1),
    codec.ObservationEncoder()(_full_observation(state=np.zeros(6, np.float32)), episode=0, step=1),
    codec.ObservationEncoder()(_full_observation(image=np.zeros((4, 4, 3), np.int32)), episode=0, step=1),
    codec.ObservationEncoder()({"observation.state": np.zeros(7, np.float32)}, episode=0, step=1),
    codec.ObservationEncoder()({**_full_observation(), "extra": np.zeros(2)}, episode=0, step=1),
    codec.ObservationEncoder()(_full_observation(), episode=0, step=1)[:-1],  # cut short
    codec.ObservationEncoder()(_full_observation(), episode=0, step=1) + b"\x28\x01",  # an unknown field
    b"\x0a\xff",
    b"",
], ids=["nan", "inf", "shape", "dtype", "missing", "undeclared", "truncated", "unknown", "garbage", "empty"])
def test_observation_bytes_out_of_the_expected_layout_are_left_to_the_message_path(wire: bytes) -> None:
    assert codec.ObservationDecoder(_spec()).parse(wire) is None


def test_a_repeated_map_entry_is_left_to_the_message_path() -> None:
    encoder = codec.ObservationEncoder()
    one = encoder({"observation.state": np.zeros(7, np.float32)}, episode=0, step=0)
    wire = encoder(_full_observation(), episode=0, step=0) + one  # protobuf: the last entry wins
    assert codec.ObservationDecoder(_spec()).parse(wire) is None


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5), _INT64, _INT64, st.floats(allow_nan=False) | st.just(-0.0), st.booleans())
@example(5, 1000, 0, 0.0123, False)  # most answers of a run: a 2-byte step, episode 0, a compute time
@example(5, 16383, 0, 5e-324, True)
@example(5, 128, 0, float("inf"), False)
@example(5, 1000, 0, 0.0, False)
@example(5, 1000, 1, 0.5, False)
def test_chunk_encoder_bytes_parse_to_the_message_encode_actions_builds(
    rows: int, step: int, episode: int, compute_ms: float, act_result: bool
) -> None:
    spec = _spec()
    actions = np.arange(rows * 7, dtype=np.float32).reshape(rows, 7) - 3.5
    expected = pb.ActionChunk(step=step, episode=episode, compute_ms=compute_ms)
    codec.encode_actions(actions, spec, expected.actions)
    wire = codec.ChunkEncoder(spec)(actions, step=step, episode=episode, compute_ms=compute_ms, act_result=act_result)
    if act_result:
        from testbed.bridge.generated import policy_pb2

        result = policy_pb2.ActResult.FromString(wire)
        assert result.WhichOneof("result") == "chunk" and result.chunk == expected
    else:
        assert pb.ActionChunk.FromString(wire) == expected
        assert wire == expected.SerializeToString()


def test_chunk_encoder_refuses_what_encode_actions_refuses_naming_the_fault() -> None:
    nan = np.ones((5, 7), np.float32)
    nan[4, 6] = np.nan
    encode = codec.ChunkEncoder(_spec())
    for bad, message in [(nan, "action: contains NaN or inf"),
                         (np.ones((6, 7), np.float32), r"expected shape \(1..5, 7\), got \(6, 7\)"),
                         (np.ones((5, 7)), "expected dtype float32, got float64"),
                         (np.ones((5, 7), ">f4"), "expected dtype float32, got >f4")]:
        with pytest.raises(SpecMismatch, match=message):
            encode(bad, step=0, episode=0, compute_ms=0.0)
        with pytest.raises(SpecMismatch, match=message):
            codec.encode_actions(bad, _spec(), pb.Tensor())
    transposed = np.arange(35, dtype=np.float32).reshape(7, 5).T  # valid, not C-contiguous: sent in C order
    wire = encode(transposed, step=1, episode=0, compute_ms=0.0)
    np.testing.assert_array_equal(codec.decode_tensor(pb.ActionChunk.FromString(wire).actions), transposed)


@settings(max_examples=100, deadline=None)
@given(_INT64, _INT64, st.floats(allow_nan=False))
def test_chunk_decoder_reads_what_decode_chunk_reads(step: int, episode: int, compute_ms: float) -> None:
    spec = _spec()
    actions = np.linspace(-2, 2, 35, dtype=np.float32).reshape(5, 7)
    msg = codec.encode_chunk(actions, step=step, episode=episode, compute_ms=compute_ms)
    decoded = codec.ChunkDecoder(spec).chunk(msg.SerializeToString(), latency_ms=0.25)
    assert decoded is not None
    chunk, got_episode = decoded
    slow = codec.decode_chunk(msg, spec, latency_ms=0.25)
    assert got_episode == episode
    assert (chunk.step, chunk.compute_ms, chunk.latency_ms) == (slow.step, slow.compute_ms, 0.25) == (
        step, compute_ms, 0.25)
    assert chunk.actions.dtype == slow.actions.dtype
    np.testing.assert_array_equal(chunk.actions, slow.actions)
    assert not chunk.actions.flags.writeable


def test_chunk_decoder_leaves_errors_and_faulty_chunks_to_the_message_path() -> None:
    from testbed.bridge.generated import policy_pb2

    spec = _spec()
    decoder = codec.ChunkDecoder(spec)
    good = codec.encode_chunk(np.ones((5, 7), np.float32), step=3, episode=1)
    assert decoder.result(policy_pb2.ActResult(chunk=good).SerializeToString()) is not None
    nan = codec.encode_chunk(np.ones((5, 7), np.float32), step=3, episode=1)
    nan.actions.data = np.array([1.0] * 34 + [np.nan], np.float32).tobytes()
    short = codec.encode_chunk(np.ones((4, 7), np.float32), step=3, episode=1)  # valid, fewer rows: the long way
    error = policy_pb2.ActResult(error=policy_pb2.ActError(code=3, message="no", step=3))
    for wire in (policy_pb2.ActResult(chunk=nan).SerializeToString(),
                 policy_pb2.ActResult(chunk=short).SerializeToString(),
                 error.SerializeToString(),
                 policy_pb2.ActResult(chunk=good).SerializeToString() + b"\x0a\x00",  # a second chunk field
                 policy_pb2.ActResult(chunk=good).SerializeToString()[:-3],
                 b""):
        assert decoder.result(wire) is None
    # the same as unary Act answers them: ActionChunk bytes
    assert decoder.chunk(good.SerializeToString()) is not None
    for wire in (nan.SerializeToString(), short.SerializeToString(),
                 good.SerializeToString() + b"\x0a\x00",  # a second actions field
                 good.SerializeToString()[:-3], b""):
        assert decoder.chunk(wire) is None


def test_chunk_decoder_of_a_spec_too_large_for_the_integer_scan_always_takes_the_message_path() -> None:
    spec = PolicySpec(observation={}, action_kind=ActionKind.JOINT_POSITIONS, action_dim=100, chunk_size=50,
                      control_hz=1.0)
    wire = codec.encode_chunk(np.ones((50, 100), np.float32), step=1, episode=0).SerializeToString()
    assert codec.ChunkDecoder(spec).chunk(wire) is None
    assert codec.decode_chunk(pb.ActionChunk.FromString(wire), spec).actions.shape == (50, 100)
