import json
from pathlib import Path

import pytest

from testbed.errors import ScenarioError
from testbed.scenario import load

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "launch" / "factory_cell.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cell.yaml"
    path.write_text(text)
    return path


def test_every_shipped_launch_file_validates():
    files = sorted((REPO / "launch").glob("*.yaml"))
    assert DEFAULT in files
    for path in files:
        load(path)


def test_defaults_fill_unset_sections(tmp_path):
    scenario = load(write(tmp_path, "name: tiny\n")).scenario
    assert scenario.sim.physics_hz == 240
    assert scenario.cell.robots[0].model == "gp7"
    assert scenario.policy.builtin == "expert"


def test_overrides_apply_and_reach_the_resolved_yaml():
    loaded = load(DEFAULT, ["episodes:=2", "cell.conveyor.speed:=0.15", "seed:=3"])
    assert loaded.scenario.episodes == 2 and loaded.scenario.seed == 3
    assert loaded.scenario.cell.conveyor.speed == 0.15
    assert "speed: 0.15" in loaded.resolved_yaml()


def test_misspelled_key_names_line_field_and_suggestion(tmp_path):
    path = write(tmp_path, "name: t\ncell:\n  robots:\n    - name: a\n      modle: gp7\n")
    with pytest.raises(ScenarioError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}:5 cell.robots[0].modle: unknown key 'modle'. Did you mean 'model'?")
    assert "more error" not in message


def test_wrong_type_names_line_and_expected_type(tmp_path):
    path = write(tmp_path, "name: t\nepisodes: three\n")
    with pytest.raises(ScenarioError, match=rf"^{path}:2 episodes: expected a valid integer, got 'three'$"):
        load(path)


def test_numbers_are_not_silently_coerced_from_strings(tmp_path):
    path = write(tmp_path, "name: t\nsim:\n  realtime: 'yes'\n")
    with pytest.raises(ScenarioError, match=r":3 sim.realtime: expected a valid boolean"):
        load(path)


def test_unknown_robot_model_suggests_the_closest(tmp_path):
    path = write(tmp_path, "name: t\ncell:\n  robots:\n    - model: gp7x\n")
    with pytest.raises(ScenarioError, match=r":4 cell.robots\[0\].model: unknown robot 'gp7x'. Did you mean 'gp7'\?"):
        load(path)


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: t\ncell:\n  robots: [\n    - name: a\n")
    with pytest.raises(ScenarioError, match=rf"^{path}:4: malformed YAML"):
        load(path)


def test_bad_override_is_blamed_on_the_override():
    with pytest.raises(ScenarioError, match=r"^override 'episodes:=x' -> episodes: expected a valid integer"):
        load(DEFAULT, ["episodes:=x"])


def test_range_errors_say_the_bound():
    with pytest.raises(ScenarioError, match=r"speed_scale: expected less than or equal to 1, got 2"):
        load(DEFAULT, ["cell.robots[0].controller.speed_scale:=2"])


def test_policy_needs_exactly_one_source(tmp_path):
    path = write(tmp_path, "name: t\npolicy:\n  builtin: expert\n  endpoint: grpc://127.0.0.1:1\n")
    with pytest.raises(ScenarioError, match=r"policy: give exactly one of builtin, serve, endpoint"):
        load(path)


def test_missing_file_is_a_scenario_error(tmp_path):
    with pytest.raises(ScenarioError, match=r"cannot read launch file"):
        load(tmp_path / "nope.yaml")


def test_duplicate_robot_names_are_refused(tmp_path):
    text = json.dumps({"name": "t", "cell": {"robots": [{"name": "a"}, {"name": "a"}]}})
    with pytest.raises(ScenarioError, match=r"robots names must be unique; repeated: a"):
        load(write(tmp_path, text))
