"""testbed.scenario."""
