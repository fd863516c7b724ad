"""testbed.control."""
