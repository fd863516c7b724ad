"""How launch files and overrides are read: a key given twice is an error at its line; ``1e-9`` is a number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed.errors import ScenarioError
from testbed.scenario import load

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "launch" / "factory_cell.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "e.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "line", "key", "first"), [
    ("name: t\nepisodes: 3\nseed: 1\nepisodes: 0\n", 4, "episodes", 2),  # was: e.yaml:2 episodes ... got 0
    ("name: t\nseed: 1\nseed: 2\n", 3, "seed", 2),  # was: accepted with seed 2
    ("name: t\ncell:\n  conveyor:\n    speed: 0.1\n    length: 0.9\n    speed: 0.3\n", 6, "speed", 4),
    ("name: t\ncell:\n  robots:\n    - {name: a, model: gp7, name: b}\n", 4, "name", 4),
])
def test_a_key_given_twice_is_an_error_at_the_second(tmp_path, text, line, key, first):
    path = write(tmp_path, text)
    expected = f"{path}:{line}: malformed YAML: duplicate key {key!r} (first given on line {first};"
    with pytest.raises(ScenarioError, match=f"^{re.escape(expected)}"):
        load(path)


def test_a_key_given_twice_in_an_override_value_is_refused():
    text = "cell.conveyor:={speed: 0.1, speed: 0.2}"
    with pytest.raises(ScenarioError, match=re.escape(f"override {text!r}: value is not valid YAML (duplicate key "
                                                      "'speed' (first given on line 1;")):
        load(DEFAULT, [text])


def test_merge_keys_still_work_and_the_key_written_in_the_mapping_wins(tmp_path):
    assert load(write(tmp_path, "name: t\n<<: {seed: 5, episodes: 2}\nepisodes: 3\n")).scenario.seed == 5
    assert load(write(tmp_path, "name: t\n<<: {seed: 5, episodes: 2}\nepisodes: 3\n")).scenario.episodes == 3
    # an error in the key that wins is located at it, not at the merged one it replaced
    with pytest.raises(ScenarioError, match=f"^{re.escape(str(tmp_path / 'e.yaml'))}:3 episodes: expected greater"):
        load(write(tmp_path, "name: t\n<<: {seed: 5, episodes: 2}\nepisodes: 0\n"))


@pytest.mark.parametrize(("override", "expected"), [
    ("sim.physics_hz:=1e3", 1000.0),
    ("sim.physics_hz:=2.4E+2", 240.0),
    ("policy.deadline_s:=5e-1", 0.5),
    ("cell.conveyor.speed:=-.5e-1", None),  # a number, refused by its bound (not "a valid number, got '...'")
])
def test_exponent_floats_without_a_dot_are_numbers_in_overrides(override, expected):
    if expected is None:
        with pytest.raises(ScenarioError, match=re.escape("cell.conveyor.speed: expected greater than 0, got -0.05")):
            load(DEFAULT, [override])
        return
    scenario = load(DEFAULT, [override]).scenario
    key = override.split(":=")[0]
    assert scenario.model_dump()[key.split(".")[0]][key.split(".")[1]] == expected


def test_exponent_floats_without_a_dot_are_numbers_in_files(tmp_path):
    scenario = load(write(tmp_path, "name: t\nsim:\n  physics_hz: 1e3\n  max_episode_s: 6E1\n")).scenario
    assert scenario.sim.physics_hz == 1000.0 and scenario.sim.max_episode_s == 60.0
    path = write(tmp_path, "name: t\nsim:\n  physics_hz: 2e4\n")
    with pytest.raises(ScenarioError, match=f"^{re.escape(str(path))}:3 sim.physics_hz: expected less than or equal "
                                            "to 10000, got 20000.0$"):
        load(path)


def test_an_exponent_beyond_float_range_is_not_finite(tmp_path):
    with pytest.raises(ScenarioError, match=re.escape("sim.max_episode_s: expected a finite number, got inf")):
        load(DEFAULT, ["sim.max_episode_s:=1e400"])


def test_integers_and_strings_read_as_before():
    scenario = load(DEFAULT, ["episodes:=3", "seed:=0x10", "name:=1e5x"]).scenario
    assert (scenario.episodes, scenario.seed, scenario.name) == (3, 16, "1e5x")
