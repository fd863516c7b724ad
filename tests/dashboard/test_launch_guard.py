"""The dashboard's launch check: no override hands the robots to the network or picks the policy's host."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.dashboard.launcher import Launcher, LaunchRefused, _protected_changes
from testbed.scenario import load

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def launcher(tmp_path: Path) -> Launcher:
    return Launcher(tmp_path / "runs", REPO / "launch")


@pytest.mark.parametrize(("launch", "overrides", "field", "why"), [
    ("factory_cell.yaml", ["policy.serve:=null", "policy.endpoint:=grpc://203.0.113.5:50051"],
     "policy.endpoint", "picks the host whose policy drives the robots"),
    ("factory_cell.yaml", ["policy.serve:=null", "policy.endpoint:=ws://203.0.113.5:8000",
                           "policy.protocol:=openpi", "policy.obs_keys:={observation.state: state}"],
     "policy.endpoint", "picks the host"),
    ("factory_cell.yaml", ["ros2.enabled:=true", "ros2.commands:=all"], "ros2.enabled",
     "unauthenticated ROS 2 command path"),
    ("factory_cell.yaml", ["ros2.enabled:=true"], "ros2.enabled", "unauthenticated ROS 2 command path"),
    ("ros2_external.yaml", ["ros2.commands:=all"], "ros2.commands", "command more robots"),
    ("ros2_external.yaml", ["ros2.namespace:=/other_cell"], "ros2.namespace", "whose ROS 2 trajectories"),
    ("ros2_external.yaml", ["ros2.domain_id:=7"], "ros2.domain_id", "which ROS 2 network"),
    ("ros2_external.yaml", ["cell.robots:=[{name: arm1, external: true}, "
                            "{name: arm2, base: {xyz: [0.9, 0, 0.3]}, external: true}]"],
     "cell.robots[1].external", "hands the robot to ControllerService or ROS 2 clients"),
    ("factory_cell.yaml", ["controller_service.serve:=true", "cell.robots[0].external:=true"],
     "cell.robots[0].external", "hands the robot to ControllerService or ROS 2 clients"),
])
def test_overrides_that_open_a_command_path_or_pick_the_policy_host_are_refused(launcher, launch, overrides,
                                                                               field, why):
    load(REPO / "launch" / launch, overrides)  # a valid scenario: only the dashboard refuses it
    with pytest.raises(LaunchRefused) as caught:
        launcher.check(launch, overrides)
    message = str(caught.value)
    assert caught.value.field == "overrides"
    assert f"overrides: {field} cannot be changed from the dashboard (it " in message, message
    assert why in message, message
    assert "edit the launch file instead" in message


def test_a_switch_to_an_openpi_server_names_both_the_endpoint_and_the_protocol(tmp_path):
    remote = tmp_path / "remote.yaml"
    remote.write_text("name: remote\npolicy: {endpoint: 'grpc://127.0.0.1:50051'}\n", encoding="utf-8")
    base = load(remote).scenario
    switched = load(remote, ["policy.endpoint:=ws://203.0.113.5:8000", "policy.protocol:=openpi",
                             "policy.obs_keys:={observation.state: state}"]).scenario
    assert [name for name, _ in _protected_changes(base, switched)] == ["policy.endpoint", "policy.protocol"]


@pytest.mark.parametrize(("launch", "overrides"), [
    ("factory_cell.yaml", ["episodes:=2", "cell.conveyor.speed:=0.15"]),
    ("factory_cell.yaml", ["policy.serve:=null", "policy.builtin:=expert"]),
    ("ros2_external.yaml", ["ros2.rate_hz:=20", "ros2.images:=false"]),  # what is published, not who commands
    ("ros2_external.yaml", ["cell.robots[0].external:=false", "ros2.enabled:=false"]),  # closes the path
    ("ros2_external.yaml", ["ros2.commands:=external"]),
])
def test_overrides_that_close_or_keep_the_command_paths_are_accepted(launcher, launch, overrides):
    assert launcher.check(launch, overrides) == REPO / "launch" / launch


def test_widening_the_ros2_discovery_range_is_refused_and_narrowing_it_accepted(tmp_path: Path) -> None:
    launch_dir = tmp_path / "launch"
    launch_dir.mkdir()
    (launch_dir / "publisher.yaml").write_text("name: publisher\nros2: {enabled: true}\n", encoding="utf-8")
    (launch_dir / "wide.yaml").write_text("name: wide\nros2: {enabled: true, discovery_range: subnet}\n",
                                          encoding="utf-8")
    guard = Launcher(tmp_path / "runs", launch_dir)
    load(launch_dir / "publisher.yaml", ["ros2.discovery_range:=subnet"])  # valid: only the dashboard refuses it
    with pytest.raises(LaunchRefused, match=r"ros2.discovery_range cannot be changed from the dashboard \(it lets "
                                            r"hosts on the network reach the ROS 2 node\)"):
        guard.check("publisher.yaml", ["ros2.discovery_range:=subnet"])
    assert guard.check("wide.yaml", ["ros2.discovery_range:=localhost"]) == launch_dir / "wide.yaml"
