import shutil
from pathlib import Path

import pytest

from testbed.errors import ScenarioError
from testbed.sites.profile import STANDARD_CLASSES, load_profiles

PROFILES = Path(__file__).resolve().parents[2] / "launch" / "sites"


def test_shipped_profiles_cover_three_jurisdictions_and_every_class(profiles):
    assert sorted(profiles.jurisdictions) == ["JP", "KR", "US"]
    for code in profiles.jurisdictions:
        ruled = {r.rule.data_class for r in profiles.rules if r.rule.from_ == code}
        assert ruled == set(STANDARD_CLASSES), code


def test_every_rule_cites_a_law_with_a_plain_summary(profiles):
    for located in profiles.rules:
        citation = located.rule.citation
        assert citation.law and len(citation.summary) > 40, located.rule.id
        assert "http" not in citation.summary


def test_profiles_say_they_are_not_legal_advice():
    for path in sorted(PROFILES.glob("*.yaml")):
        text = path.read_text()
        if "kind: jurisdiction" in text:
            assert "not legal advice" in text.lower(), path


def test_link_defaults_match_published_inter_region_round_trips(profiles):
    us_tokyo = profiles.link("us-west", "tokyo")
    us_seoul = profiles.link("seoul", "us-west")
    seoul_tokyo = profiles.link("tokyo", "seoul")
    assert 100 <= us_tokyo.rtt_ms <= 140 and 100 <= us_seoul.rtt_ms <= 140
    assert 30 <= seoul_tokyo.rtt_ms <= 40
    for link in (us_tokyo, us_seoul, seoul_tokyo):
        assert "AWS" in link.source and "assumption" in link.source


def test_safety_profiles_cite_the_national_adoptions(profiles):
    assert "KS B ISO 10218-1" in profiles.jurisdictions["KR"].safety.standard.law
    assert "JIS B 8433-1" in profiles.jurisdictions["JP"].safety.standard.law
    assert "R15.06" in profiles.jurisdictions["US"].safety.standard.law
    assert all(p.safety.reduced_speed_tcp_m_s == 0.25 for p in profiles.jurisdictions.values())


@pytest.fixture
def copied(tmp_path):
    target = tmp_path / "sites"
    shutil.copytree(PROFILES, target)
    return target


def test_a_misspelt_key_names_file_line_and_suggestion(copied):
    path = copied / "kr.yaml"
    path.write_text(path.read_text().replace("    data_class: personal\n", "    data_clas: personal\n"))
    with pytest.raises(ScenarioError, match=r"kr\.yaml:\d+ rules\[1\]\.data_clas: unknown key 'data_clas'\. "
                                            r"Did you mean 'data_class'\?"):
        load_profiles(copied)


def test_transform_without_a_transformation_is_refused(copied):
    path = copied / "us.yaml"
    path.write_text(path.read_text().replace("  - id: us-personal\n    data_class: personal\n    from: US\n"
                                             "    to: \"*\"\n    action: allow\n",
                                             "  - id: us-personal\n    data_class: personal\n    from: US\n"
                                             "    to: \"*\"\n    action: transform\n"))
    with pytest.raises(ScenarioError, match=r"us\.yaml:\d+ rules\[1\]: action transform needs a transformation"):
        load_profiles(copied)


def test_two_rules_for_one_class_and_route_are_refused(copied):
    (copied / "extra.yaml").write_text((copied / "jp.yaml").read_text()
                                       .replace("jurisdiction: JP", "jurisdiction: XX"))
    with pytest.raises(ScenarioError, match="already"):
        load_profiles(copied)


def test_a_jurisdiction_without_a_profile_names_the_file_to_add(profiles):
    with pytest.raises(ScenarioError, match=r"no profile for jurisdiction 'DE'.*de\.yaml"):
        profiles.jurisdiction("DE")
