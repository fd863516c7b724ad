"""OpenPiActionSource against openpi's own WebsocketPolicyServer in a separate process.

The server runs from its own cached virtualenv (openpi-server and openpi-client with
their own numpy pin), built on first use from ``compat/openpi/requirements.txt``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import numpy as np
import pytest

from testbed.bridge import openpi_codec
from testbed.bridge.openpi_peer import OpenPiServer, openpi_roundtrip
from testbed.bridge.openpi_source import OpenPiActionSource
from testbed.errors import PolicyUnavailable, SpecMismatch
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec
from testbed.policies.source import ActionSource

CHUNK, DIM = 10, 7
SPEC = PolicySpec(
    observation={
        "observation.state": TensorSpec("float32", (DIM,)),
        "observation.images.top": TensorSpec("uint8", (96, 96, 3)),
    },
    action_kind=ActionKind.JOINT_POSITIONS,
    action_dim=DIM,
    chunk_size=CHUNK,
    control_hz=10.0,
    model_name="openpi-echo",
)
OBS_KEYS = {"observation.state": "observation/state", "observation.images.top": "observation/image"}
# The server's policy raises unless these arrive under its own keys with these dtypes and shapes.
EXPECT = {"observation/state": ("float32", (DIM,)), "observation/image": ("uint8", (96, 96, 3))}


def _obs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "observation.state": rng.uniform(-3, 3, DIM).astype(np.float32),
        "observation.images.top": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
    }


def _source(endpoint: str, **kwargs: object) -> OpenPiActionSource:
    options: dict[str, object] = {"spec": SPEC, "obs_keys": OBS_KEYS, "deadline_s": 2.0}
    options.update(kwargs)
    return OpenPiActionSource(endpoint, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def echo_server() -> Iterator[OpenPiServer]:
    metadata = {"model": "echo", "v": 3}
    with OpenPiServer("echo", chunk=CHUNK, action_dim=DIM, expect=EXPECT, metadata=metadata) as srv:
        yield srv


def test_source_satisfies_action_source_protocol(echo_server: OpenPiServer) -> None:
    with _source(echo_server.endpoint) as source:
        assert isinstance(source, OpenPiActionSource)
        runs: ActionSource = source  # static check that the protocol is met
        assert runs.spec().action_dim == DIM


def test_metadata_frame_is_read_and_recorded_in_spec(echo_server: OpenPiServer) -> None:
    with _source(echo_server.endpoint) as source:
        assert source.metadata == {"model": "echo", "v": 3}
        extra = source.spec().extra
        assert extra["protocol"] == "openpi"
        assert extra["endpoint"] == echo_server.endpoint
        assert json.loads(extra["server_metadata"]) == {"model": "echo", "v": 3}
        assert source.spec().chunk_size == CHUNK


def test_hundreds_of_acts_return_the_echoed_chunk_for_each_step(echo_server: OpenPiServer) -> None:
    with _source(echo_server.endpoint) as source:
        source.reset(0)
        for step in range(300):
            obs = _obs(step)
            source.submit(obs, step)
            chunk = source.result(timeout_s=5.0)
            assert chunk is not None, f"no chunk for step {step}"
            assert chunk.step == step
            assert chunk.actions.dtype == np.float32  # the echo policy answers float64
            expected = obs["observation.state"][None, :] + np.arange(CHUNK, dtype=np.float32)[:, None]
            np.testing.assert_allclose(chunk.actions, expected, rtol=1e-6)
            assert chunk.latency_ms > 0 and chunk.compute_ms >= 0
        stats = source.stats()
        assert (stats.sent, stats.received, stats.late) == (300, 300, 0)


def test_result_without_submit_times_out_with_none(echo_server: OpenPiServer) -> None:
    with _source(echo_server.endpoint) as source:
        assert source.result(timeout_s=0.05) is None


def test_observation_not_fitting_spec_is_refused_before_sending(echo_server: OpenPiServer) -> None:
    with _source(echo_server.endpoint) as source:
        obs = _obs(0)
        obs["observation.state"] = obs["observation.state"].astype(np.float64)
        with pytest.raises(SpecMismatch, match=re.escape("observation.state: expected dtype float32, got float64")):
            source.submit(obs, 0)
        assert source.stats().sent == 0


def test_static_obs_reach_the_server() -> None:
    expect = {**EXPECT, "prompt_id": ("int64", ())}
    with OpenPiServer("echo", expect=expect) as srv, _source(
        srv.endpoint, static_obs={"prompt_id": np.int64(4)}
    ) as source:
        source.submit(_obs(1), 0)
        assert source.result(timeout_s=5.0) is not None


def test_wrong_shape_reply_raises_spec_mismatch_naming_the_field() -> None:
    with OpenPiServer("wrong_shape", chunk=CHUNK, action_dim=DIM) as srv, _source(srv.endpoint) as source:
        source.submit(_obs(0), 5)
        message = "reply to step 5 ['actions']: expected shape (1..10, 7), got (10, 8)"
        with pytest.raises(SpecMismatch, match=re.escape(message)):
            source.result(timeout_s=5.0)


def test_nan_reply_raises_spec_mismatch() -> None:
    with OpenPiServer("nan") as srv, _source(srv.endpoint) as source:
        source.submit(_obs(0), 0)
        with pytest.raises(SpecMismatch, match=r"\['actions'\]: contains NaN or inf"):
            source.result(timeout_s=5.0)


def test_missing_action_key_raises_spec_mismatch_listing_keys(echo_server: OpenPiServer) -> None:
    with _source(echo_server.endpoint, action_key="action") as source:
        source.submit(_obs(0), 0)
        message = "no 'action' key (policy.action_key); has: actions, server_timing"
        with pytest.raises(SpecMismatch, match=re.escape(message)):
            source.result(timeout_s=5.0)


def test_server_policy_error_is_policy_unavailable_with_its_message(echo_server: OpenPiServer) -> None:
    # The server expects "observation/image"; sending it under another key makes its policy raise.
    keys = {"observation.state": "observation/state", "observation.images.top": "image"}
    with _source(echo_server.endpoint, obs_keys=keys) as source:
        source.submit(_obs(0), 0)
        message = "the openpi server's policy failed: KeyError: 'observation/image'"
        with pytest.raises(PolicyUnavailable, match=re.escape(message)):
            source.result(timeout_s=5.0)


def test_killed_server_is_policy_unavailable_and_restart_reconnects() -> None:
    srv = OpenPiServer("echo")
    srv.start()
    try:
        with _source(srv.endpoint, deadline_s=1.0) as source:
            source.submit(_obs(0), 0)
            assert source.result(timeout_s=5.0) is not None
            srv.kill()
            source.submit(_obs(1), 1)
            with pytest.raises(PolicyUnavailable, match=srv.endpoint):
                source.result(timeout_s=5.0)
            srv.start()  # same port
            chunk = None
            for step in range(2, 200):  # backoff is at most 2 s between attempts
                source.submit(_obs(step), step)
                try:
                    chunk = source.result(timeout_s=0.1)
                except PolicyUnavailable:
                    continue
                if chunk is not None:
                    break
            assert chunk is not None
            assert source.stats().reconnects == 1
    finally:
        srv.stop()


def test_server_killed_during_a_request_is_policy_unavailable() -> None:
    with OpenPiServer("echo", sleep_s=30.0) as srv, _source(srv.endpoint) as source:
        source.submit(_obs(0), 0)
        assert source.result(timeout_s=0.2) is None  # in flight
        srv.kill()
        with pytest.raises(PolicyUnavailable, match="lost while waiting for step 0"):
            source.result(timeout_s=5.0)


def test_reply_after_deadline_is_dropped_and_counted() -> None:
    with OpenPiServer("echo", sleep_s=0.5) as srv, _source(srv.endpoint, deadline_s=0.1) as source:
        source.submit(_obs(0), 0)
        assert source.result(timeout_s=2.0) is None
        assert source.stats().late == 1


def test_newer_observation_supersedes_one_not_yet_sent() -> None:
    with OpenPiServer("echo", sleep_s=0.3) as srv, _source(srv.endpoint) as source:
        source.submit(_obs(0), 0)
        # step 0 on the wire first (the server takes 0.3 s to answer); otherwise 1 could supersede 0 instead
        sent_by = time.monotonic() + 5.0
        while source.stats().sent < 1 and time.monotonic() < sent_by:
            time.sleep(0.005)
        for step in (1, 2):
            source.submit(_obs(step), step)
        steps = []
        for _ in range(2):
            chunk = source.result(timeout_s=5.0)
            if chunk is not None:
                steps.append(chunk.step)
        assert steps[-1] == 2 and 1 not in steps
        assert source.stats().superseded >= 1


def test_reset_discards_the_chunk_in_flight() -> None:
    with OpenPiServer("echo", sleep_s=0.3) as srv, _source(srv.endpoint) as source:
        source.submit(_obs(0), 0)
        source.reset(1)
        assert source.result(timeout_s=1.0) is None
        source.submit(_obs(1), 0)
        chunk = source.result(timeout_s=5.0)
        assert chunk is not None and chunk.step == 0


def test_codec_is_byte_identical_to_openpi_msgpack_numpy() -> None:
    obj = {
        "observation/state": np.linspace(-1, 1, 7, dtype=np.float32),
        "observation/image": np.arange(96 * 96 * 3, dtype=np.uint32).reshape(96, 96, 3).astype(np.uint8),
        "mask": np.array([True, False]),
        "t": np.float64(0.25),
        "prompt": "pick the part",
    }
    ours = openpi_codec.pack(obj)
    theirs = openpi_roundtrip(ours)
    assert theirs == ours
    back = openpi_codec.unpack(theirs)
    for key in ("observation/state", "observation/image", "mask"):
        np.testing.assert_array_equal(back[key], obj[key])
        assert back[key].dtype == obj[key].dtype
    assert back["t"] == obj["t"] and back["prompt"] == obj["prompt"]


def test_proxy_settings_in_the_environment_are_ignored(
    echo_server: OpenPiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # discard port: nothing listens there
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with _source(echo_server.endpoint) as source:
        source.submit(_obs(0), 0)
        assert source.result(timeout_s=5.0) is not None
