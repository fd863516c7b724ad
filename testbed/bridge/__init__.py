"""testbed.bridge."""
