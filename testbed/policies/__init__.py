"""testbed.policies."""
