"""A run exposes its robots over gRPC: an outside client drives one robot while a policy drives the other."""

import json
import threading

import grpc
import numpy as np
import pytest

from testbed.bridge import codec
from testbed.bridge.generated import controller_pb2, controller_pb2_grpc
from testbed.errors import ScenarioError
from testbed.eval.runner import run_scenario
from testbed.scenario import load


def drive_from_outside(stream, seen):
    sub = stream.subscribe(maxlen=100000)

    def client():
        start = next(e for e in iter(lambda: sub.get(timeout_s=60), None) if e["kind"] == "run_start")
        endpoint = start["controller_service"].removeprefix("grpc://")
        with grpc.insecure_channel(endpoint) as channel:
            stub = controller_pb2_grpc.ControllerServiceStub(channel)
            seen["robots"] = [r.name for r in stub.ListRobots(controller_pb2.ListRobotsRequest(), timeout=5).robots]
            before = stub.GetState(controller_pb2.GetStateRequest(robot="sia_arm"), timeout=5)
            home = codec.decode_tensor(before.setpoint_rad)
            target = home.copy()
            target[0] += 0.3
            rows = np.linspace(home, target, 50)  # 50 rows, 20 ms apart: one second
            request = controller_pb2.Setpoint(robot="sia_arm", joint_pos_rad=codec.encode_tensor(rows), dt_s=0.02)
            for _state in stub.StreamSetpoints(iter([request]), timeout=10):
                pass
            threading.Event().wait(1.5)
            after = stub.GetState(controller_pb2.GetStateRequest(robot="sia_arm"), timeout=5)
            seen["moved"] = codec.decode_tensor(after.setpoint_rad) - home
            seen["state"] = after.lifecycle_state

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    seen["thread"] = thread


def test_outside_client_streams_setpoints_to_an_external_robot(tmp_path):
    overrides = ["episodes:=1", "sim.realtime:=true", "sim.max_episode_s:=4", "workload.random.count:=1",
                 "controller_service.serve:=true", "cell.robots[1].external:=true"]
    seen = {}
    result = run_scenario(load("launch/two_robots.yaml", overrides), runs_dir=tmp_path,
                          events_hook=lambda stream: drive_from_outside(stream, seen))
    seen["thread"].join(timeout=10)
    assert seen["robots"] == ["gp7_arm", "sia_arm"]
    assert seen["moved"][0] == pytest.approx(0.3, abs=1e-6) and np.allclose(seen["moved"][1:], 0.0)
    assert seen["state"] == "ACTIVE"
    events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    assert events[0]["controller_service"].startswith("grpc://127.0.0.1:")


def test_external_robot_without_the_service_is_refused():
    with pytest.raises(ScenarioError, match=r"cell.robots\[1\].external needs controller_service.serve: true"):
        load("launch/two_robots.yaml", ["cell.robots[1].external:=true"])
