"""Topic names and the run's ROS time: one timeline for the live node and the bag export."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.ros2.names import EPISODE_GAP_S, RunClock, TopicNames, episode_offsets, stamp


def test_robot_topics_sit_under_the_namespace_and_the_robot() -> None:
    names = TopicNames("/plant/cell2")
    assert names.joint_states("arm1") == "/plant/cell2/arm1/joint_states"
    assert names.joint_trajectory("arm1") == "/plant/cell2/arm1/joint_trajectory"
    assert names.controller_node("arm1") == ("/plant/cell2/arm1", "controller")
    assert names.camera_image("overhead") == "/plant/cell2/overhead/image_raw"
    assert names.events == "/plant/cell2/events"


def test_recorded_topics_have_one_type_each() -> None:
    topics = TopicNames().recorded(["a", "b"])
    assert topics["/clock"] == "rosgraph_msgs/msg/Clock" and topics["/tf"] == "tf2_msgs/msg/TFMessage"
    assert topics["/cell/b/joint_states"] == "sensor_msgs/msg/JointState"
    assert topics["/cell/a/tcp_pose"] == "geometry_msgs/msg/PoseStamped"


def test_episodes_follow_each_other_a_gap_apart() -> None:
    clock = RunClock()
    assert clock.run_time(None, 0.0) == 0.0  # run_start
    assert clock.run_time(0, 1.5) == 1.5
    clock.episode_ended(0, 4.0)
    assert clock.run_time(1, 0.0) == pytest.approx(4.0 + EPISODE_GAP_S)
    assert clock.run_time(None, 4.0) == pytest.approx(4.0)  # run_end: the end of the last episode


def test_next_episode_waits_until_the_one_before_is_told_ended() -> None:
    clock = RunClock()
    assert clock.offset(0) == 0.0
    assert clock.offset(1) is None  # its snapshot came before episode 0's end event was read
    clock.episode_ended(0, 2.0)
    assert clock.offset(1) == pytest.approx(2.0 + EPISODE_GAP_S)


@given(st.lists(st.floats(min_value=0.01, max_value=100.0), min_size=1, max_size=20))
def test_live_clock_and_bag_timeline_agree(durations: list[float]) -> None:
    clock = RunClock()
    for episode, duration in enumerate(durations):
        assert clock.run_time(episode, 0.0) is not None
        clock.episode_ended(episode, duration)
    offsets = episode_offsets(dict(enumerate(durations)))
    for episode in range(len(durations)):
        assert clock.offset(episode) == pytest.approx(offsets[episode])


def test_stamps_split_seconds_and_nanoseconds() -> None:
    assert stamp(1.25) == (1, 250_000_000)
    assert stamp(0.0) == (0, 0)
