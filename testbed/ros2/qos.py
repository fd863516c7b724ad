"""QoS of each kind of topic, as ROS 2 itself uses for it (imports rclpy)."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

#: joint states, poses, set-points, diagnostics, trajectories in: the ROS 2 default (reliable, depth 10)
STATE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                   durability=DurabilityPolicy.VOLATILE)
#: events come in bursts (a part placed, the episode's end): a deeper queue, still reliable
EVENTS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
#: things that do not change (robot_description, the cell's markers): latched for late joiners
STATIC = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: tf2's TransformBroadcaster
TF = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.VOLATILE)
#: tf2's StaticTransformBroadcaster
TF_STATIC = STATIC
#: rclcpp's ClockQoS: only the newest time matters
CLOCK = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                   durability=DurabilityPolicy.VOLATILE)
#: images and camera info: sensor data (best effort, depth 5)
SENSOR = qos_profile_sensor_data
