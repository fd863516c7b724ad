"""OpenPiActionSource checks that need no server: endpoints, key maps, unreachable peers."""

from __future__ import annotations

import re

import pytest

from testbed.bridge.openpi_peer import free_port
from testbed.bridge.openpi_source import OpenPiActionSource, openpi_spec, parse_ws_endpoint
from testbed.errors import PolicyUnavailable, ScenarioError, SpecMismatch
from testbed.policies.protocol import ActionKind, PolicySpec, TensorSpec

SPEC = PolicySpec(
    observation={"observation.state": TensorSpec("float32", (7,))},
    action_kind=ActionKind.JOINT_POSITIONS,
    action_dim=7,
    chunk_size=10,
    control_hz=10.0,
)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("ws://127.0.0.1:8000", "ws://127.0.0.1:8000"),
        ("wss://policy.example:443", "wss://policy.example:443"),
        ("ws://[::1]:9000", "ws://[::1]:9000"),
    ],
)
def test_ws_endpoint_is_accepted(endpoint: str, expected: str) -> None:
    assert parse_ws_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["grpc://127.0.0.1:8000", "ws://127.0.0.1", "127.0.0.1:8000", "ws://:80"])
def test_non_ws_endpoint_is_a_scenario_error(endpoint: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape("policy.endpoint: expected ws://host:port")):
        parse_ws_endpoint(endpoint)


def test_bad_port_is_a_scenario_error() -> None:
    with pytest.raises(ScenarioError, match=re.escape("policy.endpoint: bad port")):
        parse_ws_endpoint("ws://127.0.0.1:99999")


def test_obs_key_unknown_to_spec_is_refused() -> None:
    message = "policy.obs_keys: ['observation.image'] are not observation keys"
    with pytest.raises(SpecMismatch, match=re.escape(message)):
        OpenPiActionSource(
            "ws://127.0.0.1:1", spec=SPEC, obs_keys={"observation.image": "image"}
        )


def test_two_keys_mapped_to_one_server_key_are_refused() -> None:
    spec = PolicySpec(
        observation={"a": TensorSpec("float32", (1,)), "b": TensorSpec("float32", (1,))},
        action_kind=ActionKind.JOINT_POSITIONS,
        action_dim=1,
        chunk_size=1,
        control_hz=10.0,
    )
    with pytest.raises(SpecMismatch, match=r"several keys map to \['x'\]"):
        OpenPiActionSource("ws://127.0.0.1:1", spec=spec, obs_keys={"a": "x", "b": "x"})


def test_static_obs_clashing_with_mapped_key_is_refused() -> None:
    with pytest.raises(SpecMismatch, match=re.escape("policy.static_obs")):
        OpenPiActionSource(
            "ws://127.0.0.1:1",
            spec=SPEC,
            obs_keys={"observation.state": "prompt"},
            static_obs={"prompt": "pick"},
        )


def test_non_positive_deadline_is_refused() -> None:
    with pytest.raises(ScenarioError, match=re.escape("policy.deadline_s: must be positive")):
        OpenPiActionSource("ws://127.0.0.1:1", spec=SPEC, obs_keys={}, deadline_s=0)


def test_nothing_listening_is_policy_unavailable() -> None:
    endpoint = f"ws://127.0.0.1:{free_port()}"
    with pytest.raises(PolicyUnavailable, match=f"{endpoint}: cannot connect to the openpi server"):
        OpenPiActionSource(endpoint, spec=SPEC, obs_keys={"observation.state": "state"}, deadline_s=0.5)


def test_openpi_spec_takes_cell_specs_for_mapped_keys() -> None:
    state = TensorSpec("float32", (7,))
    spec = openpi_spec(
        available={"observation.state": state, "observation.environment_state": TensorSpec("float32", (11,))},
        obs_keys={"observation.state": "observation/state"},
        action_dim=7,
        chunk_size=10,
        control_hz=10.0,
    )
    assert dict(spec.observation) == {"observation.state": state}
    assert spec.action_spec() == TensorSpec("float32", (10, 7))


def test_openpi_spec_refuses_observation_the_cell_lacks() -> None:
    message = "policy.obs_keys: ['observation.images.top'] are not observations the cell provides"
    with pytest.raises(SpecMismatch, match=re.escape(message)):
        openpi_spec(
            available={"observation.state": TensorSpec("float32", (7,))},
            obs_keys={"observation.images.top": "observation/image"},
            action_dim=7,
            chunk_size=10,
            control_hz=10.0,
        )


def test_static_obs_that_msgpack_cannot_carry_is_refused() -> None:
    with pytest.raises(ScenarioError, match=re.escape("policy.static_obs: cannot be sent as msgpack")):
        OpenPiActionSource("ws://127.0.0.1:1", spec=SPEC, obs_keys={}, static_obs={"prompt": object()})
