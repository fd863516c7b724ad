from pathlib import Path

import numpy as np
import pytest

from testbed.errors import ComplianceDenied, ScenarioError
from testbed.scenario import PartArrival, load
from testbed.sites.flows import check_flows, plan_flows

REPO = Path(__file__).resolve().parents[2]
TRILATERAL = REPO / "launch" / "trilateral.yaml"


def trilateral(*overrides):
    return load(TRILATERAL, overrides).scenario


def test_trilateral_plans_workload_observations_and_actions():
    plan = check_flows(trilateral())
    routes = {f.id: (f.source.name, f.target.name) for f in plan.flows}
    assert routes == {"workload": ("kr-gumi-plant", "jp-nagoya-cell"),
                      "observations": ("jp-nagoya-cell", "us-west-models"),
                      "actions": ("us-west-models", "jp-nagoya-cell")}
    fields = {f.name: f for flow in plan.flows for f in flow.fields}
    assert set(fields) == {"workload.t_s", "workload.part_type", "workload.order_id", "observation.state",
                           "observation.environment_state", "action"}
    assert fields["workload.t_s"].classes == ("industrial-confidential",)  # from the card's timestamp
    assert fields["workload.part_type"].decision.rule_id == "kr-public"
    assert fields["observation.state"].decision.rule_id == "jp-industrial-confidential"
    assert fields["action"].decision.rule_id == "us-industrial-confidential"
    assert all(f.decision.action == "allow" for f in fields.values())


def test_trilateral_uses_the_us_west_tokyo_link():
    plan = check_flows(trilateral())
    assert plan.flow("observations").link.rtt_ms == 105
    assert plan.links[("jp-nagoya-cell", "us-west-models")].rtt_ms == 105
    assert plan.links[("jp-nagoya-cell", "kr-gumi-plant")].rtt_ms == 32


def test_the_contract_is_what_lets_the_workload_leave_korea():
    plan = check_flows(trilateral())
    t_s = next(f for f in plan.flow("workload").fields if f.name == "workload.t_s")
    assert [(d.rule_id, d.label) for d in t_s.considered] == [("kr-industrial-confidential", "allow"),
                                                            ("kr-data-platform-terms", "allow")]
    assert t_s.considered[1].condition_ref.ref == "DSA-HANBIT-2025-014"


def test_without_the_contract_the_launch_is_refused_naming_field_rule_and_citation():
    with pytest.raises(ComplianceDenied) as caught:
        check_flows(trilateral("sites.conditions:={}"))
    message = str(caught.value)
    assert "\n" not in message
    assert "workload field workload.t_s (industrial-confidential)" in message
    assert "rule kr-data-platform-terms (Terms of use of Korean national data platforms" in message
    assert "sites.conditions.kr-data-platform-terms" in message


def test_camera_images_sent_to_the_us_without_consent_are_denied():
    scenario = trilateral("cell.cameras:=[{name: overhead}]")
    with pytest.raises(ComplianceDenied, match=r"observations field observation\.images\.overhead \(personal\) "
                                               r"jp-nagoya-cell \[JP\] -> us-west-models \[US\]: denied by rule "
                                               r"jp-appi-28-personal-abroad \(Act on the Protection of Personal "
                                               r"Information \(APPI\) art\. 28\)"):
        check_flows(scenario)


def test_consent_or_a_policy_that_reads_no_images_lets_the_run_go():
    consent = "sites.conditions.jp-appi-28-personal-abroad:={kind: consent, ref: JP-CONSENT-7}"
    check_flows(trilateral("cell.cameras:=[{name: overhead}]", consent))
    plan = check_flows(trilateral("cell.cameras:=[{name: overhead}]"),
                       observation_keys=["observation.state", "observation.environment_state"])
    assert "observation.images.overhead" not in plan.flow("observations").sent_fields()


def test_a_personal_field_leaving_korea_is_pseudonymized_and_a_tensor_cannot_be():
    order_id = plan_flows(trilateral("sites.data_classes:={workload.order_id: personal}"))
    field = next(f for f in order_id.flow("workload").fields if f.name == "workload.order_id")
    assert field.decision.label == "pseudonymize" and not field.refused
    scenario = trilateral("sites.placement.cell:=kr-gumi-plant", "sites.data_classes:={observation.state: personal}")
    with pytest.raises(ComplianceDenied, match=r"pseudonymize cannot apply to a tensor field"):
        check_flows(scenario)


def test_export_controlled_model_weights_need_a_licence_to_leave_the_us():
    scenario = trilateral("policy:={builtin: expert}", "sites.data_classes:={policy.artifact: export-controlled}")
    with pytest.raises(ComplianceDenied, match=r"model field policy\.artifact .* rule us-ear-export-controlled "
                                               r"\(Export Administration Regulations \(EAR\)"):
        check_flows(scenario)
    licensed = "sites.conditions.us-ear-export-controlled:={kind: approval, ref: D123456}"
    plan = check_flows(trilateral("policy:={builtin: expert}", licensed,
                                  "sites.data_classes:={policy.artifact: export-controlled}"))
    assert [f.id for f in plan.flows] == ["workload", "model"]


def test_a_scenario_without_sites_has_no_flows():
    plan = check_flows(load(REPO / "launch" / "factory_orders.yaml").scenario)
    assert plan.local and plan.flows == () and plan.outbound("observations") is None


def test_parties_at_one_site_create_no_flow():
    plan = check_flows(trilateral("sites.placement:={cell: jp-nagoya-cell}"))
    assert plan.flows == ()


def test_a_condition_for_an_unknown_rule_suggests_the_closest():
    with pytest.raises(ScenarioError, match=r"sites\.conditions\.kr-data-platform-term: no rule has this id\. "
                                            r"Did you mean 'kr-data-platform-terms'\?"):
        plan_flows(trilateral("sites.conditions:={kr-data-platform-term: {kind: contract, ref: X}}"))


def test_a_condition_of_the_wrong_kind_names_what_the_rule_takes():
    with pytest.raises(ScenarioError, match=r"takes contract, got 'consent'"):
        plan_flows(trilateral("sites.conditions:={kr-data-platform-terms: {kind: consent, ref: X}}"))


def test_data_classes_for_an_unknown_field_or_class_are_refused():
    with pytest.raises(ScenarioError, match=r"sites\.data_classes\.observation\.stat: not a field of this run"):
        plan_flows(trilateral("sites.data_classes:={observation.stat: public}"))
    with pytest.raises(ScenarioError, match=r"unknown data class 'secret'"):
        plan_flows(trilateral("sites.data_classes:={action: secret}"))


def test_the_launch_file_cannot_declassify_a_card_field():
    plan = plan_flows(trilateral("sites.data_classes:={workload.t_s: public}"))
    t_s = next(f for f in plan.flow("workload").fields if f.name == "workload.t_s")
    assert t_s.classes == ("industrial-confidential", "public")


def test_a_link_override_replaces_the_default_and_says_so():
    plan = plan_flows(trilateral("sites.links:=[{between: [us-west-models, jp-nagoya-cell], rtt_ms: 180}]"))
    link = plan.flow("observations").link
    assert link.rtt_ms == 180 and link.jitter_ms == 2.0 and link.source.startswith("set in the launch file (rtt_ms)")


def test_sites_must_exist_and_be_unique():
    with pytest.raises(ScenarioError, match=r"placement\.policy: unknown site 'us-east'"):
        trilateral("sites.placement.policy:=us-east")


def test_dropped_order_ids_reach_the_cell_empty():
    plan = plan_flows(trilateral("sites.conditions:={}"))
    arrivals = [PartArrival(t_s=1.0, part_type="module", order_id="WO-7")]
    order = next(f for f in plan.flow("workload").fields if f.name == "workload.order_id")
    assert order.decision.label == "drop"
    with pytest.raises(ComplianceDenied):  # t_s is dropped too, and the run needs it
        plan.filter_arrivals(arrivals)
    allowed = check_flows(trilateral())
    assert allowed.filter_arrivals(arrivals) == arrivals


def test_outbound_filters_pass_the_planned_observations():
    plan = check_flows(trilateral())
    flt = plan.outbound("observations")
    assert flt.identity
    obs = {"observation.state": np.zeros(7, np.float32), "observation.environment_state": np.zeros(11, np.float32)}
    assert flt.apply(obs).keys() == obs.keys()


def test_decision_records_carry_rule_citation_and_condition():
    records = check_flows(trilateral()).decision_records()
    t_s = next(r for r in records if r["field"] == "workload.t_s")
    assert t_s["kind"] == "rule_decision" and t_s["from_jurisdiction"] == "KR" and t_s["to_jurisdiction"] == "JP"
    assert {c["rule"] for c in t_s["considered"]} == {"kr-industrial-confidential", "kr-data-platform-terms"}
    assert any(c["condition"] == "contract:DSA-HANBIT-2025-014" for c in t_s["considered"])
