import shutil
from pathlib import Path

import pytest

from testbed.errors import ScenarioError
from testbed.scenario import load
from testbed.sites.safety import apply_site_safety, cell_safety, effective_controller_settings

REPO = Path(__file__).resolve().parents[2]
TRILATERAL = REPO / "launch" / "trilateral.yaml"


def trilateral(*overrides):
    return load(TRILATERAL, overrides).scenario


@pytest.fixture
def strict_jp(tmp_path):
    """Profiles whose JP safety caps speed_scale at 0.8 and requires reduced speed."""
    target = tmp_path / "sites"
    shutil.copytree(REPO / "launch" / "sites", target)
    jp = target / "jp.yaml"
    jp.write_text(jp.read_text().replace("  speed_scale_max: 1.0\n  require_reduced_speed: false\n",
                                         "  speed_scale_max: 0.8\n  require_reduced_speed: true\n"))
    return f"sites.profiles:={target}"


def test_the_cell_sites_profile_applies_to_the_jp_cell():
    safety = cell_safety(trilateral())
    assert safety.site == "jp-nagoya-cell" and "JIS B 8433-1" in safety.standard.law
    assert safety.manual_reset_after_protective_stop and safety.reduced_speed_tcp_m_s == 0.25


def test_settings_the_launch_leaves_out_take_the_sites_values(strict_jp):
    (settings,) = effective_controller_settings(trilateral(strict_jp))
    assert settings.speed_scale == 0.8 and settings.reduced_speed and settings.tcp_speed_limit_m_s == 0.25


def test_a_launch_setting_looser_than_the_site_names_both_values(strict_jp):
    with pytest.raises(ScenarioError, match=r"cell\.robots\[0\]\.controller\.speed_scale: 0\.9 is looser than site "
                                            r"'jp-nagoya-cell''s speed_scale_max 0\.8 \(JIS B 8433-1"):
        effective_controller_settings(trilateral(strict_jp, "cell.robots[0].controller.speed_scale:=0.9"))
    with pytest.raises(ScenarioError, match=r"tcp_speed_limit_m_s: 0\.5 is looser than .* TCP ceiling 0\.25"):
        effective_controller_settings(trilateral(strict_jp, "cell.robots[0].controller.tcp_speed_limit_m_s:=0.5"))
    with pytest.raises(ScenarioError, match=r"reduced_speed: False is looser"):
        effective_controller_settings(trilateral(strict_jp, "cell.robots[0].controller.reduced_speed:=false"))


def test_a_launch_may_tighten_the_site():
    (settings,) = effective_controller_settings(trilateral("cell.robots[0].controller.speed_scale:=0.5",
                                                           "cell.robots[0].controller.tcp_speed_limit_m_s:=0.1"))
    assert settings.speed_scale == 0.5 and settings.tcp_speed_limit_m_s == 0.1


def test_a_site_entry_may_tighten_its_jurisdiction_but_not_loosen_it(strict_jp):
    tightened = "sites.sites[2].safety:={collaborative: true, speed_scale_max: 0.5}"
    safety = cell_safety(trilateral(tightened))
    assert safety.collaborative and safety.tcp_ceiling_m_s == 0.25 and safety.speed_scale_max == 0.5
    (settings,) = effective_controller_settings(trilateral(tightened))
    assert settings.speed_scale == 0.5 and settings.tcp_speed_limit_m_s == 0.25
    with pytest.raises(ScenarioError, match=r"safety\.require_reduced_speed: False is looser than the JP profile's "
                                            r"True"):
        cell_safety(trilateral(strict_jp, "sites.sites[2].safety:={require_reduced_speed: false}"))


def test_reduced_speed_asked_by_the_launch_keeps_the_models_reduced_limit():
    (settings,) = effective_controller_settings(trilateral("cell.robots[0].controller.reduced_speed:=true"))
    assert settings.reduced_speed and settings.tcp_speed_limit_m_s == 0.25


def test_without_sites_nothing_changes():
    scenario = load(REPO / "launch" / "factory_cell.yaml").scenario
    assert apply_site_safety(scenario) is scenario
    assert effective_controller_settings(scenario) == tuple(r.controller for r in scenario.cell.robots)


def test_apply_site_safety_returns_the_scenario_with_the_settings_in_place(strict_jp):
    applied = apply_site_safety(trilateral(strict_jp))
    assert applied.cell.robots[0].controller.speed_scale == 0.8 and applied.name == "trilateral"


def test_the_applied_scenario_reloads_as_it_was(strict_jp, tmp_path):
    import yaml

    applied = apply_site_safety(trilateral(strict_jp))
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(applied.model_dump(mode="json"), sort_keys=False))
    again = load(path).scenario
    assert apply_site_safety(again) == applied
