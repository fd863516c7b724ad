"""The run seen and commanded from a ROS 2 graph: a separate rclpy process (``ros2_peer.py``, which never
imports ``testbed``) beside a real ``testbed launch --ros2``, each test on its own domain, discovery
confined to this host.

Runs are real time (a few seconds each) so the peer has discovered the node before the run is over.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("ros2_peer.py")
GP7_URDF = REPO / "robots/gp7/robot.urdf"

SCENARIO = """\
name: ros_graph
seed: 0
episodes: 1
sim: {{physics_hz: 240, realtime: true, max_episode_s: {seconds}}}
cell:
  robots:
    - {{name: arm1, model: gp7, base: {{xyz: [0.0, 0.0, 0.30]}}, external: {external}}}
  cameras: [{{name: overhead, width: 64, height: 48}}]
workload:
  parts: [{{t: 0.2, type: module}}]
policy: {{builtin: expert}}
success: {{allow_drops: true, min_placed_fraction: 1.0}}
"""


def domain_id(offset: int) -> int:
    """A ROS domain for one test: distinct per test and per concurrent pytest process (ids 1..100)."""
    return 1 + (os.getpid() * 7 + offset) % 100


def ros_env(domain: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; the discovery range says the same
    return env


def run_with_peer(tmp_path: Path, mode: str, *, domain: int, seconds: float, external: bool,
                  overrides: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    """Start the peer, wait until it listens, run the scenario with ROS 2 on ``domain``; both results."""
    scenario = tmp_path / "ros_graph.yaml"
    scenario.write_text(SCENARIO.format(seconds=seconds, external=str(external).lower()))
    out = tmp_path / f"{mode}.json"
    env = ros_env(domain)
    peer = subprocess.Popen([sys.executable, str(PEER), mode, "--out", str(out), "--seconds", str(seconds + 30)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert peer.stdout is not None
        assert peer.stdout.readline().strip() == "ready", peer.stderr.read() if peer.stderr else ""
        runs = tmp_path / "runs"
        launch = subprocess.run(
            [sys.executable, "-m", "testbed.cli", "launch", str(scenario), "--ros2", "--quiet", "--runs-dir",
             str(runs), f"ros2.domain_id:={domain}", *overrides],
            cwd=REPO, capture_output=True, text=True, timeout=seconds + 90, env=env)
        assert launch.returncode == 0, launch.stderr
        peer.wait(timeout=60)
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
    assert peer.returncode == 0, peer.stderr.read() if peer.stderr else ""
    result = json.loads(out.read_text())
    assert "error" not in result, result["error"]
    (run_dir,) = runs.iterdir()
    return result, run_dir


def urdf_links(path: Path) -> set[str]:
    return {link.get("name", "") for link in ET.parse(path).getroot().findall("link")}


def urdf_joint_names(path: Path) -> list[str]:
    return [j.get("name", "") for j in ET.parse(path).getroot().findall("joint") if j.get("type") != "fixed"]


@pytest.fixture(scope="module")
def topics_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One run with a listening peer, shared by the tests that only read what it saw and recorded."""
    return run_with_peer(tmp_path_factory.mktemp("topics"), "topics", domain=domain_id(1), seconds=6.0,
                         external=False)


def test_joint_states_clock_and_tf_match_the_record(topics_run: tuple[dict[str, Any], Path]) -> None:
    result, run_dir = topics_run
    states = result["joint_states"]
    assert len(states) > 20
    assert all(s["name"] == urdf_joint_names(GP7_URDF) for s in states)
    table = pq.read_table(run_dir / "joint_states.parquet").to_pylist()
    recorded = {round(row["t_s"] * 1e9): row["position"] for row in table if row["episode"] == 0}
    same_time = [(s["position"], recorded[s["ns"]]) for s in states if s["ns"] in recorded]
    # the node publishes at 50 Hz, the record holds 20 Hz: their sim times meet every 0.25 s
    assert len(same_time) >= 5, (len(states), len(recorded))
    for live, kept in same_time:
        np.testing.assert_allclose(live, kept, rtol=0, atol=1e-12)
    clock = result["clock_ns"]
    assert clock == sorted(clock) and clock[-1] - clock[0] > 1.5e9  # (discovery may take a second or two)
    frames = {pair.split(">")[1] for pair in result["tf"] + result["tf_static"]}
    assert {f"arm1/{link}" for link in urdf_links(GP7_URDF)} <= frames
    assert {pair.split(">")[1] for pair in result["tf"]} >= {f"arm1/link_{k}" for k in range(1, 7)}
    assert "world>arm1/base_link" in result["tf_static"]
    assert result["description"] == GP7_URDF.read_text()
    assert result["diagnostics"] and result["diagnostics"][-1]["lifecycle_state"] == "ACTIVE"
    assert result["events"][-1]["kind"] == "run_end"


def _run_renders_frames_for_viewers() -> bool:
    """Whether this build's event stream hands camera frames to live viewers (the node republishes them)."""
    from testbed.eval.events import EventStream

    return hasattr(EventStream, "subscribe_frames")


@pytest.mark.skipif(not _run_renders_frames_for_viewers(), reason="the event stream offers no camera frames")
def test_camera_images_reach_a_subscriber(topics_run: tuple[dict[str, Any], Path]) -> None:
    result, _ = topics_run
    images = result["images"]
    assert images, "no image on /cell/overhead/image_raw"
    assert {(i["width"], i["height"], i["encoding"], i["frame_id"]) for i in images} == {
        (64, 48, "rgb8", "overhead_optical")}
    assert all(i["bytes"] == 64 * 48 * 3 for i in images)
    assert result["camera_info"] > 0
    assert "world>overhead_optical" in result["tf_static"]


def test_bag_export_and_live_topics_agree_on_names_and_types(topics_run: tuple[dict[str, Any], Path]) -> None:
    from rosbags.rosbag2 import Reader

    result, run_dir = topics_run
    export = subprocess.run([sys.executable, "-m", "testbed.cli", "datasets", "export-bag", str(run_dir)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, export.stderr
    with Reader(run_dir / "bag") as reader:
        bag_topics = {c.topic: c.msgtype for c in reader.connections}
    live = {name: types for name, types in result["topics"].items()}
    assert set(bag_topics) <= set(live), set(bag_topics) - set(live)
    for topic, msgtype in bag_topics.items():
        assert live[topic] == [msgtype], topic
    assert {"/cell/arm1/joint_states", "/tf", "/clock", "/cell/events", "/cell/arm1/tcp_pose"} <= set(bag_topics)


def test_external_robot_follows_a_joint_trajectory_and_refuses_an_out_of_limit_one(tmp_path: Path) -> None:
    result, run_dir = run_with_peer(tmp_path, "trajectory", domain=domain_id(3), seconds=6.0, external=True)
    events = result["events"]
    rejected = [e for e in events if e["kind"] == "command_rejected"]
    assert rejected and rejected[0]["robot"] == "arm1"
    assert "points[0].positions[0] (joint_1): 10 is outside the joint range" in rejected[0]["reason"]
    (end,) = [e for e in events if e["kind"] == "trajectory_end"]
    assert end["result"] == "successful", end
    # the record: nothing moved for the refused trajectory, and the robot reached the target and stays there
    table = pq.read_table(run_dir / "joint_states.parquet").to_pylist()
    start, target = np.array(result["start"]), np.array(result["target"])
    accepted_t = next(e["t"] for e in _recorded_events(run_dir) if e["kind"] == "trajectory_accepted")
    before = [row["position"] for row in table if row["t_s"] < accepted_t - 0.06]  # accepted: told at 20 Hz
    np.testing.assert_allclose(before, np.broadcast_to(start, (len(before), start.size)), atol=2e-3)
    after = [row["position"] for row in table if row["t_s"] >= end["t"]]
    assert after
    np.testing.assert_allclose(after, np.broadcast_to(target, (len(after), target.size)), atol=0.011)
    kinds = [e["kind"] for e in _recorded_events(run_dir)]
    assert {"command_rejected", "trajectory_accepted", "trajectory_end"} <= set(kinds)


def test_with_ros2_commands_all_a_trajectory_takes_a_policy_robot_over(tmp_path: Path) -> None:
    result, run_dir = run_with_peer(tmp_path, "trajectory", domain=domain_id(5), seconds=6.0, external=False,
                                    overrides=("ros2.commands:=all",))
    ends = [e for e in result["events"] if e["kind"] == "trajectory_end"]
    assert [e["result"] for e in ends] == ["successful"], ends
    table = pq.read_table(run_dir / "joint_states.parquet").to_pylist()
    after = [row["position"] for row in table if ends[0]["t"] <= row["t_s"] <= ends[0]["t"] + 0.1]
    np.testing.assert_allclose(after[0], result["target"], atol=0.011)  # where ROS 2 sent it, not the policy


def test_lifecycle_client_deactivates_and_reactivates_a_controller(tmp_path: Path) -> None:
    result, _ = run_with_peer(tmp_path, "lifecycle", domain=domain_id(4), seconds=9.0, external=True)
    steps = result["steps"]
    assert steps["state_before"] == "active"
    assert steps["deactivate"] is True and steps["state_inactive"] == "inactive"
    # from 0.1 s after the deactivation was confirmed: the arm settles from the speed it had
    held = [s["position"] for s in result["joint_states"][steps["inactive_from"] + 5:steps["inactive_to"]]]
    assert len(held) > 10
    spread = np.ptp(np.array(held), axis=0)
    assert spread.max() < 1e-3, spread  # it was moving when deactivated: it holds
    assert steps["configure_from_inactive"] is False  # refused, and the node lives on
    assert steps["clear_stop_without_stop"] is False
    assert steps["activate"] is True and steps["state_active"] == "active"
    ends = [e for e in result["events"] if e["kind"] == "trajectory_end"]
    assert [e["result"] for e in ends] == ["aborted", "successful"], ends
    after = np.array([s["position"] for s in result["joint_states"][steps["moved_from"]:]])
    assert np.ptp(after[:, 0]) > 0.1  # active again: it follows the next trajectory


def _recorded_events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line]


@pytest.mark.parametrize("flag", [("--ros2",), ("ros2.enabled:=true",)])
def test_launch_asking_for_ros2_without_the_extra_fails_in_one_line(tmp_path: Path, flag: tuple[str, ...]) -> None:
    fake = tmp_path / "no_ros"
    (fake / "rclpy").mkdir(parents=True)
    (fake / "rclpy" / "__init__.py").write_text("raise ImportError('No module named rclpy (hidden by the test)')\n")
    env = dict(os.environ, PYTHONPATH=str(fake))
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "launch", "launch/factory_cell.yaml", *flag,
                           "--runs-dir", str(tmp_path / "runs")], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ros2.enabled: rclpy does not import"), done.stderr
    assert "pip install -e '.[ros2]'" in lines[0]
    assert not (tmp_path / "runs").exists()
