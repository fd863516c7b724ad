"""A run across sites: the trilateral scenario end to end, what crosses, the audit, a denied flow, real-time links."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import ComplianceDenied
from testbed.eval.runner import run_scenario
from testbed.scenario import load
from testbed.sites import verify

REPO = Path(__file__).resolve().parents[2]
TRILATERAL = REPO / "launch" / "trilateral.yaml"
RAW_IDENTIFIERS = ("WO2024", "OP-", "L240513", "CONN-", "ASSY-")


@pytest.fixture(autouse=True)
def keys_and_cwd(tmp_path, monkeypatch):
    monkeypatch.setenv("TESTBED_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.chdir(REPO)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_trilateral_run_sends_only_planned_fields_and_audits_every_flow(tmp_path, monkeypatch):
    received = tmp_path / "received.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    overrides = ["episodes:=2", "policy.serve:=recording_policies:RecordingExpert",
                 f"policy.args:={{robot: gp7, out: {received}}}", "cell.cameras:=[{name: overhead}]"]
    result = run_scenario(load(TRILATERAL, overrides), runs_dir=tmp_path / "runs")
    m = result.metrics
    assert m["success_rate"] >= 0.9
    # the policy sits ~105 ms away: the latency the controller saw is the link's, drawn per request
    assert 90 < m["policy_latency_ms"]["p50"] < 130
    observations = read_jsonl(received)
    assert observations
    # the cell has a camera the policy does not read: it never leaves the site, and nothing unplanned does
    assert {key for o in observations for key in o} == {"observation.state", "observation.environment_state"}
    text = received.read_text()
    assert not any(raw in text for raw in RAW_IDENTIFIERS)

    audit = read_jsonl(result.run_dir / "audit.jsonl")
    assert verify(result.run_dir / "audit.jsonl").ok
    decisions = {(r["flow"], r["field"]) for r in audit if r["kind"] == "rule_decision"}
    assert decisions == {("workload", "workload.t_s"), ("workload", "workload.part_type"),
                         ("workload", "workload.order_id"), ("observations", "observation.state"),
                         ("observations", "observation.environment_state"), ("actions", "action")}
    flows = [r for r in audit if r["kind"] == "flow"]
    assert {r["flow"] for r in flows} == {"workload", "observations", "actions"}
    sent = sum(r["messages"] for r in flows if r["flow"] == "observations")
    assert sent == len(observations)
    assert all(r["bytes"] > 0 for r in flows if r["flow"] != "workload")
    assert audit[-1]["kind"] == "audit_closed" and audit[-1]["outcome"] == "run_end"


def test_a_denied_flow_stops_the_launch_before_any_episode(tmp_path):
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "launch", str(TRILATERAL), "sites.conditions:={}",
                           "--runs-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "TESTBED_KEYS_DIR": str(tmp_path / "keys")})
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: workload field workload.t_s (industrial-confidential)")
    assert "kr-data-platform-terms" in line and "Traceback" not in done.stderr
    (run_dir,) = tmp_path.iterdir()
    events = read_jsonl(run_dir / "events.jsonl")
    assert "episode_start" not in [e["kind"] for e in events]
    assert events[-1]["kind"] == "run_aborted" and events[-1]["reason"].startswith("ComplianceDenied: ")


def test_a_denied_observation_is_refused_with_its_rule_and_citation(tmp_path):
    with pytest.raises(ComplianceDenied, match=r"observation\.images\.overhead \(personal\).*"
                                               r"jp-appi-28-personal-abroad"):
        run_scenario(load(TRILATERAL, ["episodes:=1", "policy.args:={robot: gp7}", "cell.cameras:=[{name: overhead}]",
                                       "policy.serve:=testbed.bridge.reference:HoldPolicy",
                                       "policy.args:={image: '96'}"]), runs_dir=tmp_path)


def test_lockstep_link_delays_are_reproducible_and_the_pipeline_keeps_the_robot_fed(tmp_path):
    runs = [run_scenario(load(TRILATERAL, ["episodes:=1", f"policy.request_mode:={mode}"]),
                         runs_dir=tmp_path / f"{mode}{i}")
            for i, mode in enumerate(("pipelined", "pipelined", "blocking"))]
    first, again, blocking = (r.metrics for r in runs)
    assert first["policy_latency_ms"] == again["policy_latency_ms"]
    assert first["episode_results"] == again["episode_results"]
    # a synchronous client on the same link holds for most of every round trip
    assert blocking["starved_steps"] > 20 * first["starved_steps"]
    assert first["late_chunks"] == 0


def test_a_realtime_run_reaches_its_policy_through_the_emulated_link(tmp_path):
    overrides = ["episodes:=1", "sim.realtime:=true", "sim.max_episode_s:=2.5", "workload.orders:=null",
                 "workload.parts:=[{t: 0.0, type: module}]", "sites.conditions:={}"]
    result = run_scenario(load(TRILATERAL, overrides), runs_dir=tmp_path)
    latency = result.metrics["policy_latency_ms"]
    # loopback answers in ~1-5 ms; through the relay each answer pays the ~105 ms round trip
    assert latency["p50"] > 90
    assert result.metrics["policy_timeouts"] == 0
