"""testbed.data."""
