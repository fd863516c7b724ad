from pathlib import Path

import pytest

from testbed.data.card import load_card
from testbed.scenario.schema import ConditionRecord
from testbed.sites.profile import Citation, LocatedRule, Rule
from testbed.sites.rules import decide, decide_terms, most_restrictive

KR_ORDERS = Path(__file__).resolve().parents[2] / "datasets" / "kr_electronics_orders"


def test_personal_data_leaving_korea_without_consent_is_pseudonymized(profiles):
    d = decide(profiles.rules, "personal", "KR", "US", {})
    assert (d.rule_id, d.label) == ("kr-pipa-28-8-personal-abroad", "pseudonymize")
    assert d.citation.short() == "Personal Information Protection Act (PIPA) art. 28-8"
    assert "no consent or contract or approval recorded" in d.reason


def test_recorded_consent_lets_personal_data_leave_korea(profiles):
    consent = {"kr-pipa-28-8-personal-abroad": ConditionRecord(kind="consent", ref="CONSENT-2025-17")}
    d = decide(profiles.rules, "personal", "KR", "US", consent)
    assert d.label == "allow" and d.condition_ref.ref == "CONSENT-2025-17"


def test_personal_data_leaving_japan_without_consent_is_denied(profiles):
    d = decide(profiles.rules, "personal", "JP", "US", {})
    assert (d.rule_id, d.action) == ("jp-appi-28-personal-abroad", "deny")
    assert "APPI" in d.citation.short() and "art. 28" in d.citation.short()


def test_a_record_for_another_rule_does_not_count(profiles):
    wrong = {"kr-pipa-28-8-personal-abroad": ConditionRecord(kind="consent", ref="C-1")}
    assert decide(profiles.rules, "personal", "JP", "US", wrong).action == "deny"


@pytest.mark.parametrize("origin, rule", [("US", "us-ear-export-controlled"), ("KR", "kr-itpa-11-export-controlled"),
                                          ("JP", "jp-fefta-25-export-controlled")])
def test_export_controlled_data_needs_an_approval(profiles, origin, rule):
    target = "JP" if origin != "JP" else "US"
    denied = decide(profiles.rules, "export-controlled", origin, target, {})
    assert (denied.rule_id, denied.action) == (rule, "deny")
    approved = decide(profiles.rules, "export-controlled", origin, target,
                      {rule: ConditionRecord(kind="approval", ref="LIC-1")})
    assert approved.action == "allow"


def test_the_ear_rule_notes_the_2025_model_weights_rule_and_its_rescission(profiles):
    (rule,) = [r.rule for r in profiles.rules if r.rule.id == "us-ear-export-controlled"]
    summary = rule.citation.summary
    assert "January 2025" in summary and "rescinded in May 2025" in summary


def test_a_flow_inside_one_jurisdiction_is_domestic(profiles):
    d = decide(profiles.rules, "personal", "JP", "JP", {})
    assert (d.rule_id, d.action, d.citation) == ("domestic", "allow", None)


def test_a_class_no_rule_covers_is_denied_across_a_border(profiles):
    d = decide(profiles.rules, "biometric", "KR", "US", {})
    assert (d.rule_id, d.action) == ("no-rule", "deny")


def _rule(rule_id, src, dst, action, **extra):
    data = {"id": rule_id, "data_class": "personal", "from": src, "to": dst, "action": action,
            "citation": Citation(law="test", summary="test rule"), **extra}
    return LocatedRule(where="test", rule=Rule.model_validate(data))


def test_a_named_route_beats_a_wildcard():
    rules = [_rule("any-abroad", "KR", "*", "deny"), _rule("to-jp", "KR", "JP", "allow")]
    assert decide(rules, "personal", "KR", "JP", {}).rule_id == "to-jp"
    assert decide(rules, "personal", "KR", "US", {}).rule_id == "any-abroad"


def test_the_most_restrictive_decision_wins(profiles):
    allow = decide(profiles.rules, "public", "KR", "US", {})
    pseudo = decide(profiles.rules, "personal", "KR", "US", {})
    deny = decide(profiles.rules, "personal", "JP", "US", {})
    assert most_restrictive([allow, pseudo]) is pseudo
    assert most_restrictive([pseudo, deny, allow]) is deny


def test_card_terms_drop_confidential_fields_going_abroad(profiles):
    card = load_card(KR_ORDERS)
    d = decide_terms(profiles, card, "industrial-confidential", "US", {})
    assert (d.rule_id, d.label) == ("kr-data-platform-terms", "drop")
    assert decide_terms(profiles, card, "public", "US", {}) is None
    assert decide_terms(profiles, card, "industrial-confidential", "KR", {}) is None


def test_card_terms_leave_personal_data_to_the_law(profiles):
    assert decide_terms(profiles, load_card(KR_ORDERS), "personal", "US", {}) is None


def test_a_contract_with_the_provider_lifts_the_card_terms(profiles):
    contract = {"kr-data-platform-terms": ConditionRecord(kind="contract", ref="DSA-1")}
    d = decide_terms(profiles, load_card(KR_ORDERS), "industrial-confidential", "JP", contract)
    assert d.label == "allow" and d.condition_ref.ref == "DSA-1"


def test_a_card_that_lets_nothing_leave_refuses(profiles):
    card = load_card(KR_ORDERS)
    closed = card.model_copy(update={"terms": card.terms.model_copy(update={"export_allowed_classes": None})})
    d = decide_terms(profiles, closed, "public", "US", {})
    assert d.action == "deny" and "lets no field leave" in d.reason


def test_a_record_covers_only_the_jurisdictions_it_names(profiles):
    contract = {"kr-data-platform-terms": ConditionRecord(kind="contract", ref="DSA-1", to=("JP",))}
    card = load_card(KR_ORDERS)
    assert decide_terms(profiles, card, "industrial-confidential", "JP", contract).label == "allow"
    to_us = decide_terms(profiles, card, "industrial-confidential", "US", contract)
    assert to_us.label == "drop" and "covers JP, not US" in to_us.reason
