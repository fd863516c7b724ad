"""The policy server's Act and StreamAct, served on wire bytes, as any generated-stub client sees them."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from bridge_helpers import running_policy_server

from testbed.bridge import codec
from testbed.bridge.generated import common_pb2, policy_pb2, policy_pb2_grpc
from testbed.bridge.reference import HoldPolicy
from testbed.bridge.server import PolicyServicer

SESSION = (("testbed-session", "wire-test"),)


def _observation(first: float = 0.5, *, step: int = 7, episode: int = 2) -> common_pb2.Observation:
    state = np.arange(7, dtype=np.float32) / 10
    state[0] = first
    return codec.encode_observation({"observation.state": state}, episode=episode, step=step)


def test_act_answers_a_message_client_with_the_chunk_for_the_step() -> None:
    with running_policy_server(HoldPolicy) as server, grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        chunk = stub.Act(_observation(step=300, episode=2), timeout=5, metadata=SESSION)
        assert (chunk.step, chunk.episode) == (300, 2) and chunk.compute_ms > 0
        actions = codec.decode_tensor(chunk.actions)
        assert actions.shape == (10, 7)
        np.testing.assert_array_equal(actions[3], np.array([0.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], np.float32))


def test_stream_act_answers_each_observation_in_order_errors_included() -> None:
    bad = codec.encode_observation({"observation.state": np.zeros(6, np.float32)}, episode=0, step=2)
    requests = [_observation(step=1), bad, _observation(step=3)]
    with running_policy_server(HoldPolicy) as server, grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        results = list(stub.StreamAct(iter(requests), timeout=5, metadata=SESSION))
    assert [r.WhichOneof("result") for r in results] == ["chunk", "error", "chunk"]
    assert results[0].chunk.step == 1 and results[2].chunk.step == 3
    assert results[1].error.step == 2 and results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "observation['observation.state']: expected shape (7,), got (6,)" in results[1].error.message


def test_an_extra_tensor_with_an_impossible_shape_is_invalid_argument_and_the_stream_goes_on() -> None:
    bad = _observation(step=2)
    junk = bad.tensors["junk"]  # a key the spec does not declare: decoded, not checked against it
    junk.dtype = common_pb2.DTYPE_FLOAT32
    junk.shape[:] = [0, 2**40, 2**40]  # 0 bytes fit it, but numpy refuses to build the array
    expected = "observation['junk']: shape (0, 1099511627776, 1099511627776) is invalid"
    with running_policy_server(HoldPolicy) as server, grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.Act(bad, timeout=5, metadata=SESSION)
        results = list(stub.StreamAct(iter([_observation(step=1), bad, _observation(step=3)]), timeout=5,
                                      metadata=SESSION))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in failed.value.details()
    assert [r.WhichOneof("result") for r in results] == ["chunk", "error", "chunk"]
    assert results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and expected in results[1].error.message


@pytest.mark.parametrize("fault", ["nan", "shape", "raise"])
def test_unary_act_of_a_faulty_policy_fails_with_the_status_naming_the_fault(fault: str) -> None:
    expected = {"nan": grpc.StatusCode.FAILED_PRECONDITION, "shape": grpc.StatusCode.FAILED_PRECONDITION,
                "raise": grpc.StatusCode.INTERNAL}[fault]
    with running_policy_server(lambda: HoldPolicy(fault=fault)) as server, \
            grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as failed:
        policy_pb2_grpc.PolicyServiceStub(channel).Act(_observation(), timeout=5)
    assert failed.value.code() == expected
    assert "step 7" in failed.value.details() or "told to fail" in failed.value.details()


def test_bytes_that_are_no_observation_end_the_call_as_a_failed_deserializer_does() -> None:
    with running_policy_server(HoldPolicy) as server, grpc.insecure_channel(server.address) as channel:
        act = channel.unary_unary("/testbed.v1.PolicyService/Act")
        with pytest.raises(grpc.RpcError) as unary:
            act(b"\x0a\xff\xff", timeout=5)
        stream = channel.stream_stream("/testbed.v1.PolicyService/StreamAct")
        with pytest.raises(grpc.RpcError) as streamed:
            list(stream(iter([_observation().SerializeToString(), b"\x0a\xff\xff"]), timeout=5))
        stats = policy_pb2_grpc.PolicyServiceStub(channel).GetStats(policy_pb2.GetStatsRequest(), timeout=5)
    for failed in (unary.value, streamed.value):
        assert failed.code() == grpc.StatusCode.INTERNAL
        assert failed.details() == "Exception deserializing request!"
    assert (stats.requests_total, stats.errors_total, stats.in_flight) == (3, 2, 0)


def test_stats_count_requests_and_errors_across_handler_threads() -> None:
    bad = codec.encode_observation({"observation.state": np.zeros(6, np.float32)}, episode=0, step=0)
    with running_policy_server(HoldPolicy) as server, grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)

        def call(i: int) -> None:
            with contextlib.suppress(grpc.RpcError):  # every fifth observation is refused
                stub.Act(bad if i % 5 == 0 else _observation(step=i), timeout=5,
                         metadata=(("testbed-session", f"s{i % 3}"),))

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(call, range(40)))
        stats = stub.GetStats(policy_pb2.GetStatsRequest(), timeout=5)
        assert (stats.requests_total, stats.errors_total, stats.in_flight) == (40, 8, 0)
        assert server.servicer.requests_total == 40 and server.servicer.errors_total == 8


def test_a_servicer_registered_by_the_generated_code_answers_the_same() -> None:
    servicer = PolicyServicer(HoldPolicy)
    server = grpc.server(ThreadPoolExecutor(4))
    policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            chunk = stub.Act(_observation(step=5), timeout=5)
            results = list(stub.StreamAct(iter([_observation(step=6)]), timeout=5))
        assert chunk.step == 5 and results[0].chunk.step == 6
        assert codec.decode_tensor(results[0].chunk.actions).shape == (10, 7)
    finally:
        server.stop(0.1)
        servicer.close_policies()


def test_hold_policy_holds_the_observed_state_whatever_its_form() -> None:
    policy = HoldPolicy()
    state = np.arange(7, dtype=np.float32)
    for given in (state, state.astype(np.float64), list(state), state.astype(">f4"), np.repeat(state, 2)[::2]):
        chunk = policy.act({"observation.state": given})  # type: ignore[dict-item]
        assert chunk.dtype == np.float32 and chunk.shape == (10, 7)
        np.testing.assert_array_equal(chunk, np.repeat(state[None, :], 10, axis=0))
    first = policy.act({"observation.state": state})
    policy.act({"observation.state": state + 1})
    np.testing.assert_array_equal(first[0], state)  # a chunk the caller keeps does not change
