"""No launch-file setting takes NaN or infinity, from the file or from a ``key:=value`` override."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed.errors import ScenarioError
from testbed.scenario import load

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "launch" / "factory_cell.yaml"


@pytest.mark.parametrize(("text", "line", "field", "got"), [
    ("name: t\nsim:\n  max_episode_s: .inf\n", 3, "sim.max_episode_s", "inf"),
    ("name: t\ncell:\n  robots:\n    - name: a\n      base: {xyz: [.nan, 0, 0.3]}\n", 5,
     "cell.robots[0].base.xyz[0]", "nan"),
    ("name: t\ncell:\n  bins:\n    - {name: b, part_type: module, xyz: [0, .NaN, 0.25]}\n", 4,
     "cell.bins[0].xyz[1]", "nan"),
    ("name: t\npolicy:\n  builtin: expert\n  deadline_s: .Inf\n", 4, "policy.deadline_s", "inf"),
    ("name: t\nworkload:\n  parts:\n    - {t: .inf, type: module}\n", 4, "workload.parts[0].t", "inf"),
    ("name: t\ncell:\n  conveyor:\n    speed: -.inf\n", 4, "cell.conveyor.speed", "-inf"),
])
def test_nan_and_inf_in_the_file_name_file_line_and_field(tmp_path, text, line, field, got):
    path = tmp_path / "cell.yaml"
    path.write_text(text, encoding="utf-8")
    expected = f"{path}:{line} {field}: expected a finite number, got {got}"
    with pytest.raises(ScenarioError, match=f"^{re.escape(expected)}$"):
        load(path)


@pytest.mark.parametrize(("overrides", "field", "got"), [
    (["sim.max_episode_s:=.inf"], "sim.max_episode_s", "inf"),
    (["cell.robots[0].controller.stream_timeout_s:=.inf"], "cell.robots[0].controller.stream_timeout_s", "inf"),
    (["cell.robots[0].base.xyz:=[.nan,0,0.3]"], "cell.robots[0].base.xyz[0]", "nan"),
    (["policy.deadline_s:=.inf"], "policy.deadline_s", "inf"),
    (["cell.cameras:=[{}]", "cell.cameras[0].eye:=[.inf,0,0]"], "cell.cameras[0].eye[0]", "inf"),
    (["randomize.camera_eye_jitter_m:=.nan"], "randomize.camera_eye_jitter_m", "nan"),
])
def test_nan_and_inf_in_an_override_name_the_override_and_field(overrides, field, got):
    expected = f"override {overrides[-1]!r} -> {field}: expected a finite number, got {got}"
    with pytest.raises(ScenarioError, match=f"^{re.escape(expected)}$"):
        load(DEFAULT, overrides)


def test_finite_extremes_still_load():
    scenario = load(DEFAULT, ["sim.max_episode_s:=100000.0", "cell.robots[0].base.xyz:=[-0.5, 0.0, 0.3]"]).scenario
    assert scenario.sim.max_episode_s == 100000.0 and scenario.cell.robots[0].base.xyz == (-0.5, 0.0, 0.3)
