"""testbed.ros2."""
