"""A run driven by a policy server in another process, when that process dies or misbehaves."""

import json
import threading

import numpy as np
import pyarrow.parquet as pq

from testbed.bridge import spawn_policy_server
from testbed.eval.runner import run_scenario
from testbed.scenario import load


def read_events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_killed_policy_server_stops_the_episode_and_the_next_one_reconnects(tmp_path):
    first = spawn_policy_server("expert")
    servers = [first]

    def chaos(stream):
        sub = stream.subscribe(maxlen=100000)

        def watch():
            killed = False
            while (event := sub.get(timeout_s=120)) is not None:
                if not killed and event["kind"] == "pick" and event["episode"] == 0:
                    first.proc.kill()  # the model host dies while the robot carries a part
                    killed = True
                if event["kind"] == "episode_end" and event["episode"] == 0:
                    servers.append(spawn_policy_server("expert", port=first.port))  # it comes back
                    return

        threading.Thread(target=watch, daemon=True).start()

    scenario = load("launch/factory_cell.yaml", ["episodes:=2", "seed:=4", "policy.serve:=null",
                                                 f"policy.endpoint:={first.endpoint}", "policy.deadline_s:=0.3"])
    try:
        result = run_scenario(scenario, runs_dir=tmp_path, events_hook=chaos)
    finally:
        for server in servers:
            server.close()
    events = read_events(result.run_dir)
    ends = {e["episode"]: e for e in events if e["kind"] == "episode_end"}
    assert ends[0]["reason"] == "protective_stop" and not ends[0]["success"]
    assert ends[0]["policy_timeouts"] > 0
    stops = [e for e in events if e["kind"] == "protective_stop"]
    assert stops and stops[0]["episode"] == 0 and stops[0]["reason"] == "stream_timeout"
    assert ends[1]["success"]  # reconnected to the restarted server
    assert result.metrics["episodes"] == 2 and result.metrics["safety_stops"] == 1
    assert len(servers) == 2


def test_policy_answering_nan_never_moves_the_robot(tmp_path):
    scenario = load("launch/factory_cell.yaml", ["episodes:=1", "sim.max_episode_s:=3", "policy.serve:=null",
                                                 "policy.builtin:=testbed.bridge.reference:HoldPolicy",
                                                 "policy.args:={fault: nan}"])
    result = run_scenario(scenario, runs_dir=tmp_path)
    events = read_events(result.run_dir)
    timeouts = [e for e in events if e["kind"] == "policy_timeout"]
    assert timeouts and "NaN" in timeouts[0]["reason"]
    stop = next(e for e in events if e["kind"] == "protective_stop")
    assert stop["reason"] == "stream_timeout" and stop["t"] < 1.0
    trace = pq.read_table(result.run_dir / "joint_states.parquet").to_pydict()
    moved = np.abs(np.asarray(trace["position"]) - np.asarray(trace["position"][0])).max()
    assert moved < 1e-3  # the robot held where it stood
