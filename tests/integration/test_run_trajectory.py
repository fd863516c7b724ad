"""A run exposes its robots over gRPC: an outside client moves the external SIA10F through a joint trajectory."""

import threading

import grpc
import numpy as np

from testbed.bridge import codec
from testbed.bridge.generated import controller_pb2, controller_pb2_grpc
from testbed.eval.runner import run_scenario
from testbed.scenario import load


def follow_from_outside(stream, seen):
    sub = stream.subscribe(maxlen=100000)

    def client():
        start = next(e for e in iter(lambda: sub.get(timeout_s=60), None) if e["kind"] == "run_start")
        endpoint = start["controller_service"].removeprefix("grpc://")
        with grpc.insecure_channel(endpoint) as channel:
            stub = controller_pb2_grpc.ControllerServiceStub(channel)
            info = next(r for r in stub.ListRobots(controller_pb2.ListRobotsRequest(), timeout=5).robots
                        if r.name == "sia_arm")
            # run_start comes before the episode resets the robots: wait for a cycle of the episode
            before = stub.GetState(controller_pb2.GetStateRequest(robot="sia_arm"), timeout=5)
            while before.cycle < 1:
                threading.Event().wait(0.01)
                before = stub.GetState(controller_pb2.GetStateRequest(robot="sia_arm"), timeout=5)
            home = codec.decode_tensor(before.setpoint_rad).copy()
            offsets = [np.zeros(7), np.zeros(7), np.zeros(7)]
            offsets[0][[0, 1]] = [0.15, 0.05]
            offsets[1][[0, 1, 3]] = [0.3, 0.1, 0.1]
            offsets[2][[0, 3]] = [0.3, 0.2]
            velocities = [np.zeros(7), np.zeros(7), np.zeros(7)]
            velocities[0][0] = velocities[1][0] = 0.2
            # the joints in reverse order, as a caller with its own joint order would send them
            names = list(reversed(info.joint_names))
            points = [
                controller_pb2.TrajectoryPoint(positions=(home + off)[::-1], velocities=vel[::-1], time_from_start_s=t)
                for off, vel, t in zip(offsets, velocities, (0.5, 1.0, 1.5), strict=True)
            ]
            request = controller_pb2.FollowTrajectoryRequest(
                robot="sia_arm", joint_names=names, points=points, goal_tolerance=[0.01] * 7, goal_time_tolerance_s=1.0
            )
            seen["items"] = list(stub.FollowTrajectory(request, timeout=20))
            seen["goal"] = home + offsets[2]
            after = stub.GetState(controller_pb2.GetStateRequest(robot="sia_arm"), timeout=5)
            seen["setpoint"] = codec.decode_tensor(after.setpoint_rad)
            seen["measured"] = codec.decode_tensor(after.joint_pos_rad)
            seen["state"] = after.lifecycle_state

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    seen["thread"] = thread


def test_outside_client_moves_the_external_robot_through_a_trajectory(tmp_path):
    overrides = ["episodes:=1", "sim.realtime:=true", "sim.max_episode_s:=5", "workload.random.count:=1",
                 "controller_service.serve:=true", "cell.robots[1].external:=true"]
    seen = {}
    run_scenario(load("launch/two_robots.yaml", overrides), runs_dir=tmp_path,
                 events_hook=lambda stream: follow_from_outside(stream, seen))
    seen["thread"].join(timeout=10)
    items = seen["items"]
    last = items[-1]
    assert last.result.code == controller_pb2.TRAJECTORY_RESULT_SUCCESSFUL, last.result.text
    assert len(items) > 20  # feedback all along the 1.5 s
    # the simulated arm followed: measured within the default path tolerance all the way
    errors = np.array([codec.decode_tensor(item.error) for item in items])
    assert np.max(np.abs(errors)) < 0.1
    np.testing.assert_allclose(seen["setpoint"], seen["goal"], atol=1e-9)
    np.testing.assert_allclose(seen["measured"], seen["goal"], atol=0.01)
    assert seen["state"] == "ACTIVE"
