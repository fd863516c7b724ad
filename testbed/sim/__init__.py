"""testbed.sim."""
