"""A run driven by a policy server in another process, when that process dies or misbehaves."""

import json
import os
import signal
import threading
from pathlib import Path

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

    # episode 1 waits for the restarted server as long as spawn_policy_server does (30 s): a new
    # process can take more than the default 10 s to come up on a loaded machine
    scenario = load("launch/factory_cell.yaml", ["episodes:=2", "seed:=4", "policy.serve:=null",
                                                 f"policy.endpoint:={first.endpoint}", "policy.deadline_s:=0.3",
                                                 "policy.reconnect_s:=30"])
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


CHATTY_BYTES = 64 * 1024


def test_served_policy_printing_64kb_per_call_finishes_a_two_episode_run(tmp_path):
    policy = ("policy:={serve: 'testbed.bridge.reference:HoldPolicy', "
              f"args: {{print_bytes: '{CHATTY_BYTES}'}}, deadline_s: 2.0}}")
    scenario = load("launch/factory_cell.yaml", ["episodes:=2", "sim.max_episode_s:=2", policy])
    result = run_scenario(scenario, runs_dir=tmp_path)
    events = read_events(result.run_dir)
    kinds = [e["kind"] for e in events]
    assert "policy_timeout" not in kinds and "protective_stop" not in kinds  # a stalled server gives both
    ends = [e for e in events if e["kind"] == "episode_end"]
    assert [e["reason"] for e in ends] == ["max_episode_s reached"] * 2
    assert events[0]["kind"] == "run_start" and events[0]["policy_logs"] == ["logs/policy-arm1.log"]
    log = result.run_dir / "logs" / "policy-arm1.log"
    requests = round(2.0 * 10)  # HoldPolicy asks to be called at 10 Hz
    assert log.stat().st_size >= 2 * requests * CHATTY_BYTES
    assert result.metrics["episodes"] == 2


def _served_policy_pids():
    """Process ids of this process's `serve-policy` children (Linux /proc)."""
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            cmdline = (status.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # the process ended while we looked
        if int(fields.get("PPid", "0").strip()) == os.getpid() and b"serve-policy" in cmdline:
            pids.append(int(status.parent.name))
    return pids


def test_killed_served_policy_is_recorded_and_the_run_completes(tmp_path):
    killed: list[int] = []
    failures: list[BaseException] = []
    watchers: list[threading.Thread] = []

    def chaos(stream):
        sub = stream.subscribe(maxlen=100000)

        def watch():
            try:
                while (event := sub.get(timeout_s=120)) is not None:
                    if event["kind"] == "pick" and event["episode"] == 0:
                        for pid in _served_policy_pids():
                            os.kill(pid, signal.SIGKILL)  # the model process dies while the robot carries a part
                            killed.append(pid)
                        return
            except BaseException as exc:  # reported to the test, never lost with the thread
                failures.append(exc)

        watcher = threading.Thread(target=watch, name="chaos", daemon=True)
        watchers.append(watcher)
        watcher.start()

    scenario = load("launch/factory_cell.yaml", ["episodes:=2", "seed:=4", "policy.deadline_s:=0.3"])
    result = run_scenario(scenario, runs_dir=tmp_path, events_hook=chaos)
    for watcher in watchers:
        watcher.join(10)
        assert not watcher.is_alive()
    assert not failures and len(killed) == 1
    events = read_events(result.run_dir)
    assert events[-1]["kind"] == "run_end"
    ends = {e["episode"]: e for e in events if e["kind"] == "episode_end"}
    assert ends[0]["reason"] == ends[1]["reason"] == "protective_stop"
    log = result.run_dir / "logs" / "policy-arm1.log"
    why = [e["reason"] for e in events if e["kind"] == "policy_timeout"]
    ended = f"the policy server process {killed[0]} ended (killed by SIGKILL); its output is in {log}"
    assert why and all(ended in reason for reason in why[-3:]), why
    assert "listening on" in log.read_text()
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["episodes"] == 2 and metrics["safety_stops"] == 2 and metrics["success_rate"] == 0.0
