import pytest

from testbed.errors import ScenarioError
from testbed.scenario.overrides import apply_overrides, parse_override, parse_path


def test_parse_path_accepts_brackets_and_dotted_indices():
    assert parse_path("cell.robots[0].model") == ["cell", "robots", 0, "model"]
    assert parse_path("cell.robots.0.model") == ["cell", "robots", 0, "model"]


def test_values_are_read_as_yaml_scalars():
    assert parse_override("episodes:=3") == (["episodes"], 3)
    assert parse_override("sim.realtime:=true") == (["sim", "realtime"], True)
    assert parse_override("cell.conveyor.speed:=0.15") == (["cell", "conveyor", "speed"], 0.15)
    assert parse_override("name:=demo run") == (["name"], "demo run")
    assert parse_override("base.xyz:=[0, 1, 2]") == (["base", "xyz"], [0, 1, 2])


def test_override_sets_nested_and_list_values():
    data = {"episodes": 1, "cell": {"robots": [{"model": "gp7"}]}}
    apply_overrides(data, ["episodes:=4", "cell.robots[0].model:=sia10f", "sim.physics_hz:=480"])
    assert data == {"episodes": 4, "cell": {"robots": [{"model": "sia10f"}]}, "sim": {"physics_hz": 480}}


def test_override_without_separator_is_refused():
    with pytest.raises(ScenarioError, match=r"expected key:=value"):
        apply_overrides({}, ["episodes=3"])


def test_override_into_missing_list_item_names_the_path():
    with pytest.raises(ScenarioError, match=r"cell\.robots\[2\] does not exist"):
        apply_overrides({"cell": {"robots": [{}]}}, ["cell.robots[2].model:=gp7"])
