"""``ros2.discovery_range``: loopback by default; the subnet only for a node no robot takes commands from."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import ScenarioError
from testbed.ros2.node import Ros2Settings, node_environment
from testbed.scenario import load

ROBOTS = "cell:\n  robots:\n    - {name: arm1, external: true}\n    - {name: arm2}\n"
PUBLISHING = "cell:\n  robots:\n    - {name: arm1}\n    - {name: arm2}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cell.yaml"
    path.write_text("name: t\n" + text)
    return path


def test_the_node_is_loopback_only_by_default(tmp_path: Path) -> None:
    assert load(write(tmp_path, ROBOTS + "ros2: {enabled: true}\n")).scenario.ros2.discovery_range == "localhost"


def test_subnet_with_an_external_robot_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, ROBOTS + "ros2:\n  enabled: true\n  discovery_range: subnet\n")
    with pytest.raises(ScenarioError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:6 ros2: discovery_range: subnet lets any host on the network reach the node")
    assert "cell.robots[0] (arm1)" in message and "arm2" not in message.split("would follow")[0]
    assert "external: true" in message and "no authentication without SROS2 security" in message
    assert "use discovery_range: localhost" in message


def test_subnet_with_commands_all_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"cell.robots\[0\] \(arm1\), cell.robots\[1\] \(arm2\) would follow "
                                            r"its joint_trajectory commands \(commands: all\)"):
        load(write(tmp_path, PUBLISHING + "ros2: {enabled: true, commands: all}\n"), ["ros2.discovery_range:=subnet"])


def test_subnet_without_commands_is_accepted_and_reaches_the_node_settings(tmp_path: Path) -> None:
    scenario = load(write(tmp_path, PUBLISHING + "ros2: {enabled: true, discovery_range: subnet}\n")).scenario
    assert scenario.ros2.discovery_range == "subnet"
    settings = Ros2Settings.of(scenario.ros2)
    assert settings.discovery_range == "subnet" and not settings.loopback
    assert node_environment(settings, {})["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
    default = Ros2Settings.of(load(write(tmp_path, PUBLISHING + "ros2: {enabled: true}\n")).scenario.ros2)
    assert node_environment(default, {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_STATIC_PEERS": "192.0.2.7"}) == {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def test_a_range_ros2_does_not_know_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"ros2.discovery_range: expected 'localhost' or 'subnet'"):
        load(write(tmp_path, "ros2: {enabled: true, discovery_range: system_default}\n"))
