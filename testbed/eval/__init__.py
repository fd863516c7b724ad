"""testbed.eval."""
