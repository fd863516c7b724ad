import os
import time

import pytest

from testbed.errors import ScenarioError
from testbed.eval.cost import CostSettings, energy_meter, rapl_zones
from testbed.eval.stats import summarize

MAX_UJ = 262_143_328_850  # a real package's max_energy_range_uj


def write_counter(zone, value_uj):
    """Replace energy_uj atomically, as the kernel's counter never shows a half-written value."""
    tmp = zone / "energy_uj.tmp"
    tmp.write_text(f"{value_uj}\n")
    os.replace(tmp, zone / "energy_uj")


def fake_powercap(root, packages=(("package-0", 1_000_000),), *, with_psys=True, with_subzone=True):
    """A powercap class directory laid out like /sys/class/powercap on an Intel machine."""
    zones = []
    for index, (name, start_uj) in enumerate(packages):
        zone = root / f"intel-rapl:{index}"
        zone.mkdir(parents=True)
        (zone / "name").write_text(f"{name}\n")
        (zone / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
        write_counter(zone, start_uj)
        zones.append(zone)
    if with_subzone:  # the core sub-zone is part of package-0's figure: counting it would count twice
        sub = root / "intel-rapl:0:0"
        sub.mkdir()
        (sub / "name").write_text("core\n")
        (sub / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
        write_counter(sub, 5)
    if with_psys:  # the platform zone overlaps the packages
        psys = root / f"intel-rapl:{len(packages)}"
        psys.mkdir()
        (psys / "name").write_text("psys\n")
        (psys / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
        write_counter(psys, 7)
    (root / "dtpm").mkdir()  # other powercap classes sit beside RAPL
    return zones


def test_only_package_zones_are_read(tmp_path):
    fake_powercap(tmp_path, (("package-0", 10), ("package-1", 20)))
    zones, reason = rapl_zones(tmp_path)
    assert reason == ""
    assert [z.name for z in zones] == ["package-0", "package-1"]
    assert all(z.max_energy_range_uj == MAX_UJ for z in zones)


def test_meter_sums_what_every_package_counted(tmp_path):
    zone0, zone1 = fake_powercap(tmp_path, (("package-0", 1_000_000), ("package-1", 2_000_000)))
    meter = energy_meter(tmp_path, poll_s=None)
    assert meter.method == "rapl"
    with meter:
        write_counter(zone0, 1_000_000 + 30_000_000)  # 30 J
        write_counter(zone1, 2_000_000 + 12_500_000)  # 12.5 J
    assert meter.measurement.joules == pytest.approx(42.5)
    assert meter.measurement.method == "rapl"
    assert "package-0, package-1" in meter.measurement.note


def test_a_counter_that_wraps_around_counts_across_the_wrap(tmp_path):
    (zone,) = fake_powercap(tmp_path, (("package-0", MAX_UJ - 4_000_000),))
    with energy_meter(tmp_path, poll_s=None) as meter:
        write_counter(zone, 6_000_000)  # passed the range and started again from 0
    assert meter.measurement.joules == pytest.approx(10.0)


def test_samples_between_start_and_stop_catch_more_than_one_wrap(tmp_path):
    (zone,) = fake_powercap(tmp_path, (("package-0", 0),))
    meter = energy_meter(tmp_path, poll_s=None).start()
    # four times 0.6 of the range (0.6, 0.2, 0.8, 0.4): the counter wraps twice; start/stop alone would see 0.4
    for step in (1, 2, 3, 4):
        write_counter(zone, int(step * 0.6 * MAX_UJ) % MAX_UJ)
        meter.sample()
    measurement = meter.stop()
    assert measurement.joules == pytest.approx(4 * 0.6 * MAX_UJ / 1e6, rel=1e-9)


def test_background_sampling_thread_starts_and_stops(tmp_path):
    (zone,) = fake_powercap(tmp_path, (("package-0", 0),))
    with energy_meter(tmp_path, poll_s=0.01) as meter:
        for value in (1_000_000, 2_000_000, 3_000_000):
            write_counter(zone, value)
            time.sleep(0.03)
    assert meter.measurement.joules == pytest.approx(3.0)
    assert "sampled every 0.01 s" in meter.measurement.note
    assert meter._thread is None


def test_no_powercap_directory_measures_nothing_and_says_why(tmp_path):
    meter = energy_meter(tmp_path / "powercap", poll_s=None)
    assert meter.method == "unavailable"
    with meter:
        pass
    assert meter.measurement.joules is None
    expected = f"RAPL not used: no {tmp_path / 'powercap'} (no powercap interface on this machine)"
    assert meter.measurement.note == expected


def test_a_package_without_its_range_makes_the_whole_reading_unavailable(tmp_path):
    zone0, _ = fake_powercap(tmp_path, (("package-0", 1), ("package-1", 2)))
    (zone0 / "max_energy_range_uj").unlink()
    zones, reason = rapl_zones(tmp_path)
    assert zones == []
    assert f"{zone0}: energy_uj/max_energy_range_uj unreadable" in reason


def test_only_psys_is_not_a_package_reading(tmp_path):
    fake_powercap(tmp_path, (), with_psys=True, with_subzone=False)
    assert rapl_zones(tmp_path) == ([], f"only psys zones under {tmp_path}")


def test_declared_fallback_in_the_summary_uses_cpu_seconds_times_watts(tmp_path):
    with energy_meter(tmp_path / "absent", poll_s=None) as meter:
        pass
    rows = [{"episode_id": "v0/expert/0000", "policy": "expert", "variation": "v0", "variation_label": "base",
             "success": True, "parts_placed": 1, "cycle_times_s": [2.0], "sim_s": 20.0, "wall_s": 1.0, "cpu_s": 0.5,
             "policy_latency_ms_p50": None, "policy_latency_ms_p95": None}]
    summary = summarize(rows, cost=CostSettings(cpu_watts_per_core=8.0), wall_s=1.0, workers=1,
                        energy=meter.measurement)
    assert summary["cost"]["method"] == "declared: 8 W per busy core"
    assert summary["cost"]["note"].startswith("RAPL not used: no ")
    assert summary["groups"][0]["energy_j_per_episode"] == pytest.approx(4.0)


def test_rapl_measurement_in_the_summary(tmp_path):
    (zone,) = fake_powercap(tmp_path, (("package-0", 0),))
    with energy_meter(tmp_path, poll_s=None) as meter:
        write_counter(zone, 50_000_000)
    rows = [{"episode_id": f"v0/expert/{e:04d}", "policy": "expert", "variation": "v0", "variation_label": "base",
             "success": True, "parts_placed": 1, "cycle_times_s": [2.0], "sim_s": 20.0, "wall_s": 1.0, "cpu_s": cpu,
             "policy_latency_ms_p50": None, "policy_latency_ms_p95": None} for e, cpu in enumerate((2.0, 3.0))]
    summary = summarize(rows, cost=CostSettings(), wall_s=1.0, workers=1, energy=meter.measurement)
    assert summary["cost"]["method"] == "rapl"
    assert summary["cost"]["rapl"]["joules"] == pytest.approx(50.0)
    assert summary["groups"][0]["energy_j_per_episode"] == pytest.approx(25.0)


def test_cost_defaults_are_declared_and_bad_figures_refused():
    cost = CostSettings()
    assert (cost.price_per_core_hour, cost.currency, cost.cpu_watts_per_core) == (0.0425, "USD", 10.0)
    assert cost.declared_method == "declared: 10 W per busy core"
    assert "declared assumptions" in CostSettings.__doc__
    with pytest.raises(ScenarioError, match=r"cost.price_per_core_hour: expected a non-negative number, got -1"):
        CostSettings(price_per_core_hour=-1)
    with pytest.raises(ScenarioError, match=r"cost.cpu_watts_per_core: expected a non-negative number, got nan"):
        CostSettings(cpu_watts_per_core=float("nan"))
    with pytest.raises(ScenarioError, match=r"cost.currency: expected a currency name"):
        CostSettings(currency=" ")
