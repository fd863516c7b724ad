"""sim.physics_hz has a floor: contacts and suction need short steps, and the policy needs one step per request."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed.errors import ScenarioError
from testbed.scenario import load
from testbed.scenario.schema import MIN_PHYSICS_HZ

REPO = Path(__file__).resolve().parents[2]


def launch(tmp_path: Path, physics_hz: object, policy: str = "  builtin: expert\n") -> Path:
    path = tmp_path / "cell.yaml"
    path.write_text(f"name: t\nepisodes: 1\nsim:\n  realtime: false\n  physics_hz: {physics_hz}\npolicy:\n{policy}",
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("physics_hz", ["5", "60", "119.9", "0", "-240"])
def test_a_physics_rate_below_the_floor_is_refused_at_its_line(tmp_path, physics_hz):
    path = launch(tmp_path, physics_hz)
    expected = f"{path}:5 sim.physics_hz: expected at least {MIN_PHYSICS_HZ:g} Hz (pybullet contacts and suction"
    with pytest.raises(ScenarioError, match=f"^{re.escape(expected)}.*, got {re.escape(physics_hz)}$"):
        load(path)


def test_a_physics_rate_below_the_floor_from_an_override_names_the_override():
    with pytest.raises(ScenarioError, match=re.escape("override 'sim.physics_hz:=5' -> sim.physics_hz: expected at "
                                                      f"least {MIN_PHYSICS_HZ:g} Hz")):
        load(REPO / "launch" / "factory_cell.yaml", ["sim.physics_hz:=5"])


@pytest.mark.parametrize("physics_hz", [MIN_PHYSICS_HZ, 240, 1000])
def test_rates_from_the_floor_up_are_accepted(tmp_path, physics_hz):
    assert load(launch(tmp_path, physics_hz)).scenario.sim.physics_hz == physics_hz


def test_the_default_rate_is_above_the_floor(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text("name: t\n", encoding="utf-8")
    assert load(path).scenario.sim.physics_hz == 240.0 >= MIN_PHYSICS_HZ


def test_a_physics_rate_below_a_builtin_policys_rate_is_refused_at_sim_physics_hz(tmp_path):
    path = launch(tmp_path, 240, "  builtin: expert\n  args: {control_hz: '500'}\n")
    expected = (f"{path}:5 sim.physics_hz: expected at least the policy's rate, policy.args.control_hz 500 Hz "
                "(one physics step per policy step at least): raise sim.physics_hz or lower the policy's rate, "
                "got 240")
    with pytest.raises(ScenarioError, match=f"^{re.escape(expected)}"):
        load(path)


def test_a_physics_rate_below_an_openpi_endpoints_rate_is_refused(tmp_path):
    policy = "  endpoint: ws://127.0.0.1:8000\n  protocol: openpi\n  obs_keys: {state: state}\n  control_hz: 300\n"
    path = launch(tmp_path, 200, policy)
    with pytest.raises(ScenarioError, match=re.escape(f"{path}:5 sim.physics_hz: expected at least the policy's "
                                                      "rate, policy.control_hz 300 Hz")):
        load(path)
    assert load(path, ["sim.physics_hz:=300"]).scenario.sim.physics_hz == 300


def test_a_policy_rate_equal_to_the_physics_rate_is_accepted(tmp_path):
    path = launch(tmp_path, 240, "  serve: expert\n  args: {control_hz: '240'}\n")
    assert load(path).scenario.policy.declared_rate() == ("policy.args.control_hz", 240.0)


def test_policy_control_hz_does_not_bind_a_builtin_policy(tmp_path):
    # policy.control_hz is the openpi request rate; a builtin policy's own spec gives its rate
    path = launch(tmp_path, 240, "  builtin: expert\n  control_hz: 500\n")
    assert load(path).scenario.policy.declared_rate() is None
