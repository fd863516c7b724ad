"""The launch file's ``ros2`` section, ``--ros2``, and the tf2_msgs build script."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import ScenarioError
from testbed.scenario import load

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cell.yaml"
    path.write_text(text)
    return path


def test_ros2_section_defaults_to_off_with_the_usual_settings(tmp_path: Path) -> None:
    ros2 = load(write(tmp_path, "name: t\n")).scenario.ros2
    assert (ros2.enabled, ros2.domain_id, ros2.namespace, ros2.rate_hz, ros2.commands) == (
        False, None, "/cell", 50.0, "external")


def test_external_robot_may_be_driven_from_ros2_alone(tmp_path: Path) -> None:
    text = "name: t\ncell:\n  robots:\n    - {name: arm1, external: true}\nros2: {enabled: true, domain_id: 7}\n"
    scenario = load(write(tmp_path, text)).scenario
    assert scenario.cell.robots[0].external and not scenario.controller_service.serve


def test_a_robot_name_ros2_refuses_is_located(tmp_path: Path) -> None:
    text = "name: t\ncell:\n  robots:\n    - {name: arm-1}\nros2: {enabled: true}\n"
    with pytest.raises(ScenarioError, match=r"cell.robots\[0\].name: 'arm-1' is not a valid ROS 2 name"):
        load(write(tmp_path, text))


@pytest.mark.parametrize("bad", ["ros2.namespace:=cell", "ros2.domain_id:=300", "ros2.commands:=some"])
def test_bad_ros2_settings_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ScenarioError, match=r"ros2\."):
        load(write(tmp_path, "name: t\n"), [bad])


def _build_script() -> Any:
    spec = importlib.util.spec_from_file_location("build_ros2_msgs", REPO / "scripts/build_ros2_msgs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_build_script_writes_a_rosidl_package(tmp_path: Path) -> None:
    script = _build_script()
    script.write_sources(tmp_path, script.TF2_MSGS)
    assert (tmp_path / "msg/TFMessage.msg").read_text() == "geometry_msgs/TransformStamped[] transforms\n"
    cmake = (tmp_path / "CMakeLists.txt").read_text()
    assert "rosidl_generate_interfaces" in cmake and "DEPENDENCIES geometry_msgs" in cmake
    assert "INTERFACE_INCLUDE_DIRECTORIES" in cmake  # the wheels' stale include folders are dropped
    assert "<name>tf2_msgs</name>" in (tmp_path / "package.xml").read_text()


def test_build_script_skips_a_package_built_from_the_same_definitions(capsys: pytest.CaptureFixture[str]) -> None:
    script = _build_script()
    prefix = Path(sys.prefix)
    assert script.is_built(prefix, script.TF2_MSGS, prefix / "bin/python"), "make venv builds tf2_msgs"
    assert script.main(["tf2_msgs", "--prefix", str(prefix)]) == 0
    assert "built already" in capsys.readouterr().out


def test_tf2_message_type_hash_is_jazzys() -> None:
    # ROS 2 Jazzy's own tf2_msgs/msg/TFMessage: the hash rmw matches endpoints by
    hashes = (Path(sys.prefix) / "share/tf2_msgs/msg/TFMessage.json").read_text()
    assert "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087" in hashes


def test_names_and_the_bag_export_do_not_import_rclpy() -> None:
    import subprocess

    code = "import sys, testbed.ros2, testbed.data.bag; print('rclpy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_ros2_package_reads_the_run_and_never_reaches_into_the_loop_or_the_simulator() -> None:
    import ast

    forbidden = ("testbed.eval", "testbed.sim", "pybullet", "testbed.control.loop")
    found = []
    for path in sorted((REPO / "testbed/ros2").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            found += [f"{path.name} imports {n}" for n in names for f in forbidden if n == f or n.startswith(f + ".")]
    assert found == []
