"""testbed.compliance."""
