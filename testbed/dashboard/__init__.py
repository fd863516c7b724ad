"""testbed.dashboard."""
