import json
import threading
from pathlib import Path

import pytest

from testbed.scenario import load
from testbed.sites.audit import AuditLog, verify
from testbed.sites.flows import check_flows
from testbed.sites.meter import FlowMeter, open_run_audit
from testbed.sites.safety import cell_safety

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def scenario():
    return load(REPO / "launch" / "trilateral.yaml").scenario


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_run_audit_opens_with_profiles_decisions_and_safety(tmp_path, scenario):
    plan = check_flows(scenario)
    audit = open_run_audit(tmp_path, plan, run_id="r1", scenario="trilateral", safety=cell_safety(scenario))
    audit.close()
    written = records(tmp_path / "audit.jsonl")
    assert written[0]["kind"] == "audit_open" and written[0]["run_id"] == "r1"
    assert all(len(sha) == 64 for sha in written[0]["profiles"].values())
    assert written[0]["links"]["jp-nagoya-cell<->us-west-models"]["rtt_ms"] == 105
    decisions = [r for r in written if r["kind"] == "rule_decision"]
    assert len(decisions) == 6 and {d["rule"] for d in decisions} >= {"kr-public", "us-industrial-confidential"}
    assert [r["kind"] for r in written[-2:]] == ["safety_profile", "audit_closed"]
    assert verify(tmp_path).ok


def test_the_meter_writes_one_record_per_busy_flow_per_interval(tmp_path, scenario):
    plan = check_flows(scenario)
    meter = FlowMeter(plan)
    audit = AuditLog(tmp_path / "audit.jsonl")
    meter.add("observations", 120)
    meter.add("observations", 130)
    meter.add("actions", 300, messages=2)
    assert meter.flush_to(audit, 1.0) == 2
    assert meter.flush_to(audit, 2.0) == 0  # nothing since: nothing written
    meter.add("actions", 10)
    assert meter.flush_to(audit, 3.0) == 1
    audit.close()
    flows = [r for r in records(tmp_path / "audit.jsonl") if r["kind"] == "flow"]
    obs = flows[0]
    assert (obs["flow"], obs["from"], obs["to"], obs["bytes"], obs["messages"]) == (
        "observations", "jp-nagoya-cell", "us-west-models", 250, 2)
    assert sorted(obs["fields"]) == ["observation.environment_state", "observation.state"]
    assert obs["rules"]["observation.state"] == "jp-industrial-confidential" and obs["interval_s"] == 1.0
    assert flows[-1]["t_s"] == 3.0 and flows[-1]["interval_s"] == 1.0  # the interval (2, 3]
    assert meter.totals()["actions"] == {"bytes": 310, "messages": 3}
    assert verify(tmp_path).ok


def test_the_meter_counts_from_many_threads(scenario):
    meter = FlowMeter(check_flows(scenario))

    def send():
        for _ in range(1000):
            meter.add("observations", 3)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert meter.totals()["observations"] == {"bytes": 12000, "messages": 4000}


def test_only_planned_flows_are_counted(scenario):
    meter = FlowMeter(check_flows(scenario))
    assert meter.tracks("workload") and not meter.tracks("model")
    with pytest.raises(KeyError):
        meter.add("model", 10)
