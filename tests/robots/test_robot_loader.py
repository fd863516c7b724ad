"""The loader's error messages name the file, the field and what was expected."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.errors import RobotDescriptionError
from testbed.robots import ROBOTS_DIR_ENV, default_robots_dir, known_robots, load_robot

_DELETE = object()


@pytest.fixture
def robots_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped robots/ to break."""
    target = tmp_path / "robots"
    shutil.copytree(default_robots_dir(), target)
    return target


def _edit(robots_dir: Path, model: str, change: dict[str, object]) -> Path:
    path = robots_dir / model / "controller.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node: Any = data
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_unknown_robot_suggests_the_closest_name() -> None:
    with pytest.raises(RobotDescriptionError) as info:
        load_robot("gp7x")
    assert str(info.value) == "unknown robot 'gp7x'. Did you mean 'gp7'? (known: gp7, scara_t6, sia10f)"


def test_unknown_robot_without_close_match_lists_known() -> None:
    with pytest.raises(RobotDescriptionError, match=r"unknown robot 'zz'\. \(known: gp7, scara_t6, sia10f\)"):
        load_robot("zz")


def test_env_var_points_at_another_directory(robots_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.rmtree(robots_dir / "sia10f")
    monkeypatch.setenv(ROBOTS_DIR_ENV, str(robots_dir))
    assert known_robots() == ["gp7", "scara_t6"]
    assert load_robot("gp7").root == robots_dir / "gp7"


def test_joint_missing_from_urdf_names_file_and_field(robots_dir: Path) -> None:
    path = _edit(robots_dir, "gp7", {"joints": ["joint_1", "joint_2", "joint_3", "joint_4", "joint_5", "joint_9"]})
    with pytest.raises(RobotDescriptionError) as info:
        load_robot("gp7", robots_dir)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert " joints: robot.urdf has no joint 'joint_9'" in message


def test_fixed_joint_is_not_a_controller_joint(robots_dir: Path) -> None:
    joints = ["joint_1", "joint_2", "joint_3", "joint_4", "joint_5", "suction_cup-tcp"]
    _edit(robots_dir, "gp7", {"joints": joints})
    with pytest.raises(RobotDescriptionError, match=r"joints: robot\.urdf has only a fixed joint 'suction_cup-tcp'"):
        load_robot("gp7", robots_dir)


def test_joints_out_of_order_are_refused(robots_dir: Path) -> None:
    _edit(robots_dir, "scara_t6", {"joints": ["joint_2", "joint_1", "joint_3", "joint_4"]})
    with pytest.raises(RobotDescriptionError, match=r"joints: expected every movable joint of robot\.urdf in order"):
        load_robot("scara_t6", robots_dir)


def test_limits_array_of_wrong_length_names_field_and_line(robots_dir: Path) -> None:
    path = _edit(robots_dir, "gp7", {"limits.acceleration": [1.0, 2.0, 3.0, 4.0, 5.0]})
    with pytest.raises(RobotDescriptionError) as info:
        load_robot("gp7", robots_dir)
    match = re.fullmatch(
        re.escape(str(path)) + r":(\d+) limits\.acceleration: expected 6 values \(one per joint\), got 5",
        str(info.value),
    )
    assert match is not None, str(info.value)
    line = int(match.group(1))
    assert path.read_text(encoding="utf-8").splitlines()[line - 1].strip().startswith("acceleration:")


def test_velocity_above_urdf_limit_is_refused(robots_dir: Path) -> None:
    _edit(robots_dir, "sia10f", {"limits.velocity": [2.96706, 2.96706, 2.96706, 9.0, 3.490659, 3.490659, 6.981317]})
    with pytest.raises(
        RobotDescriptionError, match=r"limits\.velocity: joint_4: 9\.0 is above the URDF velocity limit 2\.96706"
    ):
        load_robot("sia10f", robots_dir)


def test_max_force_above_urdf_effort_is_refused(robots_dir: Path) -> None:
    _edit(robots_dir, "scara_t6", {"gains.max_force": [120.0, 60.0, 500.0, 12.0]})
    with pytest.raises(
        RobotDescriptionError, match=r"gains\.max_force: joint_3: 500\.0 is above the URDF effort limit"
    ):
        load_robot("scara_t6", robots_dir)


def test_home_outside_joint_range_is_refused(robots_dir: Path) -> None:
    _edit(robots_dir, "scara_t6", {"home_rad": [0.0, 1.0, 0.3, 0.0]})
    with pytest.raises(
        RobotDescriptionError,
        match=r"controller\.yaml:\d+ home_rad: joint_3: 0\.3 is outside the joint range \[0\.0, 0\.2\]",
    ):
        load_robot("scara_t6", robots_dir)


def test_unknown_key_suggests_the_right_one(robots_dir: Path) -> None:
    path = robots_dir / "gp7" / "controller.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("cycle_s:", "cycle_ss:"), encoding="utf-8")
    with pytest.raises(RobotDescriptionError, match=r"cycle_ss: unknown key\. Did you mean 'cycle_s'\?"):
        load_robot("gp7", robots_dir)


def test_missing_key_is_named(robots_dir: Path) -> None:
    _edit(robots_dir, "gp7", {"gains.velocity_gain": _DELETE})
    with pytest.raises(RobotDescriptionError, match=r"gains: missing key 'velocity_gain'"):
        load_robot("gp7", robots_dir)


@pytest.mark.parametrize("value", ["fast", float("nan"), -0.004, 0, True])
def test_cycle_must_be_a_positive_number(robots_dir: Path, value: object) -> None:
    _edit(robots_dir, "gp7", {"cycle_s": value})
    with pytest.raises(RobotDescriptionError, match=r"cycle_s: expected a (finite|positive) number"):
        load_robot("gp7", robots_dir)


def test_non_numeric_array_entry_is_located(robots_dir: Path) -> None:
    _edit(robots_dir, "gp7", {"limits.jerk": [260.0, 220.0, "lots", 380.0, 380.0, 700.0]})
    with pytest.raises(RobotDescriptionError, match=r"limits\.jerk: entry 2: expected a finite number, got 'lots'"):
        load_robot("gp7", robots_dir)


def test_model_name_must_match_directory(robots_dir: Path) -> None:
    _edit(robots_dir, "gp7", {"model": "gp8"})
    with pytest.raises(RobotDescriptionError, match=r"model: expected 'gp7' \(the directory name\), got 'gp8'"):
        load_robot("gp7", robots_dir)


def test_unknown_kind_is_refused(robots_dir: Path) -> None:
    _edit(robots_dir, "gp7", {"kind": "delta"})
    with pytest.raises(RobotDescriptionError, match=r"kind: expected one of articulated, scara, got 'delta'"):
        load_robot("gp7", robots_dir)


def test_tcp_link_must_exist_in_urdf(robots_dir: Path) -> None:
    _edit(robots_dir, "gp7", {"tcp_link": "gripper_tip"})
    with pytest.raises(RobotDescriptionError, match=r"tcp_link: robot\.urdf has no link 'gripper_tip'"):
        load_robot("gp7", robots_dir)


def test_malformed_yaml_names_file_and_line(robots_dir: Path) -> None:
    path = robots_dir / "gp7" / "controller.yaml"
    path.write_text("model: gp7\njoints: [joint_1, joint_2\ncycle_s: 0.004\n", encoding="utf-8")
    with pytest.raises(RobotDescriptionError, match=re.escape(str(path)) + r":\d+: malformed YAML"):
        load_robot("gp7", robots_dir)


def test_missing_controller_file_is_named(robots_dir: Path) -> None:
    (robots_dir / "gp7" / "controller.yaml").unlink()
    with pytest.raises(RobotDescriptionError, match=r"controller\.yaml: file not found"):
        load_robot("gp7", robots_dir)


def test_malformed_urdf_is_named(robots_dir: Path) -> None:
    path = robots_dir / "gp7" / "robot.urdf"
    path.write_text("<robot name='gp7'><link name='base_link'>", encoding="utf-8")
    with pytest.raises(RobotDescriptionError, match=re.escape(str(path)) + r": malformed XML"):
        load_robot("gp7", robots_dir)


def test_urdf_joint_without_limit_is_named(robots_dir: Path) -> None:
    path = robots_dir / "gp7" / "robot.urdf"
    text = path.read_text(encoding="utf-8")
    start = text.index('<joint name="joint_2"')
    limit_start = text.index("<limit", start)
    limit_end = text.index("/>", limit_start) + 2
    path.write_text(text[:limit_start] + text[limit_end:], encoding="utf-8")
    with pytest.raises(RobotDescriptionError, match=r"joint 'joint_2': a revolute joint needs a <limit> element"):
        load_robot("gp7", robots_dir)


def test_loaded_arrays_are_read_only() -> None:
    model = load_robot("gp7")
    with pytest.raises(ValueError):
        model.velocity[0] = 100.0
