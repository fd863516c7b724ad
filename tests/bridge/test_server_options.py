"""ServerOptions refuses a message-size cap gRPC cannot take, for programs that start a server through the API."""

from __future__ import annotations

import re

import numpy as np
import pytest

from testbed.bridge.client import GrpcActionSource
from testbed.bridge.reference import HoldPolicy
from testbed.bridge.server import ServerOptions, start_policy_server
from testbed.errors import BridgeConfigError


@pytest.mark.parametrize(("size", "shown"), [
    (0, "0"),
    (-1, "-9.53674e-07"),
    (-(16 << 20), "-16"),
    (2**31, "2048"),  # was: OverflowError from inside grpc.server
    (10**12, "953674"),
    (0.5, "4.76837e-07"),  # was: a server whose cap let no message through
    (16.5e6, "15.7356"),
    (True, "?"),
    ("16", "?"),
])
def test_a_cap_outside_1_byte_to_2_gib_is_refused_when_the_server_starts(size, shown):
    expected = (f"serve-policy --max-message-mb {shown} (max_message_bytes={size!r}): expected a whole number of "
                "bytes, more than 0 and under 2048 MiB")
    with pytest.raises(BridgeConfigError, match=f"^{re.escape(expected)}"):
        start_policy_server(HoldPolicy, ServerOptions(max_message_bytes=size))


def test_the_largest_cap_grpc_takes_is_accepted():
    assert ServerOptions(max_message_bytes=2**31 - 1).max_message_bytes == 2**31 - 1


def test_a_server_started_with_a_small_cap_serves_within_it():
    with (start_policy_server(HoldPolicy, ServerOptions(max_message_bytes=64 * 1024)) as server,
          GrpcActionSource(server.endpoint, deadline_s=2.0) as source):
        source.reset(0)
        source.submit({"observation.state": np.zeros(7, np.float32)}, 1)
        chunk = source.result(5.0)
        assert chunk is not None and chunk.step == 1


def test_workers_sessions_and_streams_must_still_be_positive():
    for name in ("max_workers", "max_sessions", "max_streams"):
        with pytest.raises(BridgeConfigError, match="workers, sessions and streams must be positive"):
            ServerOptions(**{name: 0})
