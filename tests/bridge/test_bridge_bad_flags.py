"""Bad ``serve-policy`` / ``policy check`` flags end in one line naming the flag and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testbed.bridge.client import GrpcActionSource
from testbed.bridge.reference import HoldPolicy
from testbed.bridge.server import ServerOptions, start_policy_server
from testbed.errors import BridgeConfigError


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *argv], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.parametrize(("argv", "message"), [
    (("serve-policy", "expert", "--port", "70000"), "--port 70000: expected 0..65535"),
    (("serve-policy", "expert", "--port", "-5"), "--port -5: expected 0..65535"),
    (("serve-policy", "expert", "--arg", "control_hz=abc"), "cannot build it with --arg control_hz=abc: ValueError"),
    (("serve-policy", "expert", "--max-message-mb", "nan"), "--max-message-mb nan: expected a finite positive"),
    (("serve-policy", "expert", "--max-message-mb", "inf"), "--max-message-mb inf: expected a finite positive"),
    (("serve-policy", "expert", "--max-message-mb", "-1"), "--max-message-mb -1.0: expected a finite positive"),
    # the range is ServerOptions' own check, the one a program starting a server through the API gets
    (("serve-policy", "expert", "--max-message-mb", "2048"),
     "--max-message-mb 2048 (max_message_bytes=2147483648): expected a whole number of bytes, more than 0 and under "
     "2048 MiB"),
    (("serve-policy", "expert", "--max-message-mb", "1e-9"),
     "--max-message-mb 0 (max_message_bytes=0): expected a whole number of bytes, more than 0"),
    (("policy", "check", "grpc://127.0.0.1:1", "--tls-ca", "/nonexistent/ca.pem"),
     "--tls-ca /nonexistent/ca.pem: cannot read it"),
    (("policy", "check", "grpc://127.0.0.1:1", "--deadline-s", "nan"), "--deadline-s nan: expected a finite positive"),
])
def test_a_bad_flag_is_one_line_naming_it(argv: tuple[str, ...], message: str) -> None:
    done = _cli(*argv)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert message in done.stderr, done.stderr
    assert "listening on" not in done.stdout


def test_ports_outside_0_to_65535_are_refused_by_the_options() -> None:
    for port in (-1, 65536):
        with pytest.raises(BridgeConfigError, match=f"--port {port}: expected 0..65535"):
            ServerOptions(port=port)
    assert ServerOptions(port=65535).port == 65535


def test_the_policy_server_listens_on_an_ipv6_host() -> None:
    with start_policy_server(HoldPolicy, ServerOptions(host="::1")) as server:
        assert server.address == f"[::1]:{server.port}"
        with GrpcActionSource(server.endpoint, deadline_s=2.0) as source:
            source.reset(0)
            source.submit({"observation.state": np.zeros(7, np.float32)}, 3)
            chunk = source.result(5.0)
            assert chunk is not None and chunk.step == 3


def test_an_unreadable_bc_checkpoint_is_named_by_serve_policy(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, format=np.array("testbed-bc-knn/1"), spec_json=np.array("{bad json"))
    done = _cli("serve-policy", f"bc:{bad}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert str(bad) in done.stderr
