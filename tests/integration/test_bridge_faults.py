"""Faults with real server processes: death and return, slowness, bad answers, auth, TLS."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from testbed.bridge import GrpcActionSource, spawn_policy_server
from testbed.errors import PolicyUnavailable, SpecMismatch

HOLD = "testbed.bridge.reference:HoldPolicy"


def _obs(value: float) -> dict[str, np.ndarray]:
    return {"observation.state": np.full(7, value, np.float32)}


def _act(source: GrpcActionSource, step: int, timeout_s: float = 10.0) -> np.ndarray:
    source.submit(_obs(float(step)), step)
    chunk = source.result(timeout_s)
    assert chunk is not None and chunk.step == step
    return chunk.actions


def test_killed_server_is_reported_then_the_client_reconnects_when_it_returns() -> None:
    first = spawn_policy_server(HOLD)
    port = first.port
    with GrpcActionSource(first.endpoint, deadline_s=0.5, backoff_s=(0.05, 0.2)) as source:
        source.reset(0)
        for step in range(5):
            _act(source, step)
        first.proc.kill()  # no goodbye: SIGKILL mid-stream
        first.close()
        source.submit(_obs(5.0), 5)
        with pytest.raises(PolicyUnavailable, match=f"127.0.0.1:{port}"):
            source.result(2.0)
        with pytest.raises(PolicyUnavailable):
            source.result(0.0)  # still down: reported again, never a stale chunk
        with spawn_policy_server(HOLD, port=port) as second:
            assert second.port == port
            source.submit(_obs(6.0), 6)  # the stream comes back on its own, with the reset replayed
            deadline = time.monotonic() + 20
            while True:
                try:
                    chunk = source.result(1.0)
                except PolicyUnavailable:
                    chunk = None
                if chunk is not None or time.monotonic() > deadline:
                    break
                source.submit(_obs(6.0), 6)
            assert chunk is not None and chunk.step == 6
            _act(source, 7)


def test_server_sleeping_past_the_deadline_gives_none_then_the_late_chunk() -> None:
    with spawn_policy_server(HOLD, {"sleep_s": "0.6"}) as server, \
            GrpcActionSource(server.endpoint, deadline_s=0.2) as source:
        source.reset(0)
        source.submit(_obs(1.0), 0)
        assert source.result(0.2) is None
        late = source.result(5.0)
        assert late is not None and late.step == 0


@pytest.mark.parametrize(("fault", "message"), [("nan", "contains NaN"), ("shape", r"expected shape \(1..10, 7\)")])
def test_bad_answers_never_reach_the_caller(fault: str, message: str) -> None:
    with spawn_policy_server(HOLD, {"fault": fault}) as server, GrpcActionSource(server.endpoint) as source:
        source.reset(0)
        source.submit(_obs(0.0), 0)
        with pytest.raises(SpecMismatch, match=f"FAILED_PRECONDITION.*{message}"):
            source.result(10.0)


def test_client_without_token_is_refused_unauthenticated() -> None:
    with spawn_policy_server(HOLD, token="team-secret") as server:
        with GrpcActionSource(server.endpoint) as anonymous, pytest.raises(PolicyUnavailable, match="UNAUTHENTICATED"):
            anonymous.spec()
        with GrpcActionSource(server.endpoint, token="team-secret") as member:
            member.reset(0)
            _act(member, 0)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed (and the cryptography package is not either)")
    d = tmp_path_factory.mktemp("certs")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test-ca", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", "san.ext", cwd=d)
    return d


def test_tls_round_trip(certs: Path) -> None:
    tls = ("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"))
    with spawn_policy_server(HOLD, extra_argv=tls) as server:
        endpoint = f"grpcs://127.0.0.1:{server.port}"
        with GrpcActionSource(endpoint, tls_ca=certs / "ca.pem") as source:
            source.reset(0)
            _act(source, 0)
        with GrpcActionSource(server.endpoint, deadline_s=1.0) as plaintext, pytest.raises(PolicyUnavailable):
            plaintext.spec()


def test_mutual_tls_requires_a_client_certificate(certs: Path) -> None:
    tls = ("--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
           "--tls-client-ca", str(certs / "ca.pem"))
    with spawn_policy_server(HOLD, extra_argv=tls) as server:
        endpoint = f"grpcs://127.0.0.1:{server.port}"
        with GrpcActionSource(endpoint, tls_ca=certs / "ca.pem", tls_cert=certs / "client.pem",
                              tls_key=certs / "client.key") as source:
            source.reset(0)
            _act(source, 0)
        with GrpcActionSource(endpoint, tls_ca=certs / "ca.pem", deadline_s=1.0) as no_cert, \
                pytest.raises(PolicyUnavailable):
            no_cert.spec()
