"""Generated gRPC code for protos/testbed/v1 (``make proto``); do not edit."""
