"""A client in another process drives a gp7 through the ControllerService, as an outside caller would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from testbed.bridge.controller_backend import ControlLoopBackend, TickerThread
from testbed.bridge.controller_service import ControllerServer, TlsFiles, start_controller_server
from testbed.control import ControlLoop
from testbed.robots import load_robot

GP7 = load_robot("gp7")
TOKEN = "integration-token"
TARGET = GP7.home + np.array([0.5, -0.3, 0.4, 1.0, -0.6, 2.0])

CLIENT = r'''
import json, sys, time
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from testbed.bridge import codec
from testbed.bridge.generated import controller_pb2 as pb, controller_pb2_grpc

address, token, target = sys.argv[1], sys.argv[2], np.array(json.loads(sys.argv[3]))
tls = sys.argv[4:]
if tls:
    ca, cert, key = (open(p, "rb").read() for p in tls)
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    channel = grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", "localhost")])
else:
    channel = grpc.insecure_channel(address)
stub = controller_pb2_grpc.ControllerServiceStub(channel)
auth = [("authorization", f"Bearer {token}")]
out = {}

def code_of(call):
    try:
        call()
    except grpc.RpcError as exc:
        return [exc.code().name, exc.details()]
    return ["OK", ""]

health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
out["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
out["no_token"] = code_of(lambda: stub.ListRobots(pb.ListRobotsRequest(), timeout=10))
robots = stub.ListRobots(pb.ListRobotsRequest(), metadata=auth, timeout=10).robots
out["robots"] = [{"name": r.name, "model": r.model, "joints": list(r.joint_names),
                  "velocity_max": list(r.velocity_max), "state": r.lifecycle_state} for r in robots]
name = robots[0].name

def change(t):
    req = pb.ChangeStateRequest(robot=name, transition=t)
    return stub.ChangeState(req, metadata=auth, timeout=10).lifecycle_state

out["transitions"] = [change(pb.TRANSITION_DEACTIVATE), change(pb.TRANSITION_ACTIVATE)]

def setpoints(n):
    for _ in range(n):
        yield pb.Setpoint(robot=name, joint_pos_rad=codec.encode_tensor(target))

states = list(stub.StreamSetpoints(setpoints(200), metadata=auth, timeout=30))
out["stream"] = {
    "n": len(states),
    "cycles": [s.cycle for s in states],
    "setpoints": [codec.decode_tensor(s.setpoint_rad).tolist() for s in states],
    "states": sorted({s.lifecycle_state for s in states}),
}
time.sleep(0.3)
final = stub.GetState(pb.GetStateRequest(robot=name), metadata=auth, timeout=10)
out["final"] = {"state": final.lifecycle_state, "pos": codec.decode_tensor(final.joint_pos_rad).tolist()}

bad = target.copy()
bad[3] = float("nan")
nan_stream = iter([pb.Setpoint(robot=name, joint_pos_rad=codec.encode_tensor(bad))])
out["nan"] = code_of(lambda: list(stub.StreamSetpoints(nan_stream, metadata=auth, timeout=10)))
out["after_nan"] = codec.decode_tensor(
    stub.GetState(pb.GetStateRequest(robot=name), metadata=auth, timeout=10).setpoint_rad).tolist()
print(json.dumps(out))
'''


@pytest.fixture
def cell_controller() -> Iterator[tuple[ControlLoopBackend, TickerThread]]:
    loop = ControlLoop([GP7], GP7.cycle_s, stream_timeout_s=0.25)
    loop.reset(GP7.home[None, :].copy())
    backend = ControlLoopBackend(loop, names=["arm_jp"])
    with TickerThread(backend) as ticker:
        yield backend, ticker


def _run_client(tmp_path: Path, server: ControllerServer, *tls: Path) -> dict:
    script = tmp_path / "client.py"
    script.write_text(CLIENT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = subprocess.run(
        [sys.executable, str(script), server.address, TOKEN, json.dumps(TARGET.tolist()), *map(str, tls)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _check_session(out: dict, backend: ControlLoopBackend) -> None:
    assert out["health"] == "SERVING"
    assert out["no_token"][0] == "UNAUTHENTICATED"
    assert out["robots"] == [{"name": "arm_jp", "model": "gp7", "joints": list(GP7.joint_names),
                              "velocity_max": pytest.approx(GP7.velocity.tolist()), "state": "ACTIVE"}]
    assert out["transitions"] == ["INACTIVE", "ACTIVE"]

    stream = out["stream"]
    assert stream["n"] == 200 and stream["states"] == ["ACTIVE"]
    pos = np.array(stream["setpoints"])
    cycles = np.diff(np.array(stream["cycles"]))
    assert np.all(cycles >= 1)
    mean_speed = np.abs(np.diff(pos, axis=0)) / (cycles[:, None] * GP7.cycle_s)
    assert np.all(mean_speed <= GP7.velocity * (1 + 1e-9))  # within limits, whatever the jump asked
    np.testing.assert_allclose(pos[-1], TARGET, atol=1e-9)  # and it got there
    assert out["final"]["state"] == "ACTIVE"  # a normal end holds: no stream-timeout stop
    np.testing.assert_allclose(out["final"]["pos"], TARGET, atol=1e-9)

    code, details = out["nan"]
    assert code == "INVALID_ARGUMENT"
    assert "joint_pos_rad: NaN or inf for robot 'arm_jp' at row 0 joint 3 (joint_4)" in details
    np.testing.assert_allclose(out["after_nan"], TARGET, atol=1e-9)  # the NaN never reached the loop
    np.testing.assert_allclose(backend.snapshot("arm_jp").setpoint_rad, TARGET, atol=1e-9)


def test_client_process_lists_activates_streams_and_is_refused_bad_input(
    tmp_path: Path, cell_controller: tuple[ControlLoopBackend, TickerThread]
) -> None:
    backend, _ = cell_controller
    with start_controller_server(backend, token=TOKEN) as server:
        out = _run_client(tmp_path, server)
    _check_session(out, backend)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def test_client_process_over_mutual_tls(
    tmp_path: Path, cell_controller: tuple[ControlLoopBackend, TickerThread]
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed: cannot make test certificates")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=ca", cwd=tmp_path)
    (tmp_path / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n", encoding="utf-8")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=tmp_path)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", "san.ext", cwd=tmp_path)
    backend, _ = cell_controller
    tls = TlsFiles(cert=tmp_path / "server.pem", key=tmp_path / "server.key", client_ca=tmp_path / "ca.pem")
    with start_controller_server(backend, token=TOKEN, tls=tls) as server:
        out = _run_client(tmp_path, server, tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key")
        # without a client certificate the handshake itself fails
        bare = subprocess.run(
            [sys.executable, "-c",
             "import grpc,sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g\n"
             "c=grpc.secure_channel(sys.argv[1], grpc.ssl_channel_credentials(open(sys.argv[2],'rb').read()),"
             " options=[('grpc.ssl_target_name_override','localhost')])\n"
             "try:\n g.HealthStub(c).Check(h.HealthCheckRequest(), timeout=5)\n"
             "except grpc.RpcError as e: print(e.code().name)\nelse: print('OK')",
             server.address, str(tmp_path / "ca.pem")],
            capture_output=True, text=True, timeout=60, check=False,
        )
    _check_session(out, backend)
    assert bare.stdout.strip() == "UNAVAILABLE", bare.stderr
