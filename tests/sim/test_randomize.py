"""Domain randomization: draws from (seed, episode) alone, and every drawn quantity reaches the pybullet world."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pybullet as p
import pytest

from testbed.errors import ScenarioError
from testbed.scenario import load
from testbed.scenario.arrivals import plan_arrivals
from testbed.scenario.randomize import EpisodeDraw, PartDraw, draw_episode
from testbed.scenario.schema import CameraConfig, CellConfig, RandomizeConfig
from testbed.scenario.workload import PART_TYPES, PartArrival
from testbed.sim.cell import PICK_ZONE_M, build_cell
from testbed.sim.parts import PART_CATALOGUE, PART_FRICTION

ROOT = Path(__file__).resolve().parents[2]
RANDOMIZED = ROOT / "launch/factory_cell_randomized.yaml"
WIDE = RandomizeConfig(part_lateral_m=(-0.03, 0.03), part_yaw_deg=(-90, 90), part_mass_scale=(0.5, 2.0),
                       part_friction=(0.3, 1.0), stopper_absent_probability=0.5, conveyor_speed_scale=(0.75, 1.25),
                       camera_eye_jitter_m=0.05, camera_target_jitter_m=0.03, light_azimuth_deg=(0, 360),
                       light_elevation_deg=(30, 85), light_colour_jitter=0.3, light_ambient=(0.3, 0.8),
                       part_mix_concentration=1.0)


@pytest.fixture
def cell():
    arrivals = [[PartArrival(0.0, name) for name in PART_TYPES for _ in range(2)]]
    built = build_cell(CellConfig(cameras=(CameraConfig(),)), 240.0, arrivals)
    yield built
    built.close()


def _steps(cell, seconds):
    events = []
    for _ in range(round(seconds / cell.dt_s)):
        cell.step()
        events += cell.update_parts()
    return events


def _slot(cell, body):
    return next(s for s in cell.parts if s.body == body)


def _spawned(cell, part_type):
    return next(s for s in cell.parts if s.kind.name == part_type and s.status == "conveying")


# ---- draws ------------------------------------------------------------------------------------------------------


def test_a_draw_depends_only_on_seed_and_episode():
    forward = [draw_episode(WIDE, 7, e) for e in range(12)]
    backward = [draw_episode(WIDE, 7, e) for e in reversed(range(12))][::-1]
    alone = draw_episode(WIDE, 7, 5)
    assert forward == backward
    assert forward[5] == alone
    parts_in_order = [alone.part(i) for i in range(6)]
    parts_out_of_order = {i: draw_episode(WIDE, 7, 5).part(i) for i in (5, 2, 0, 4, 1, 3)}
    assert parts_in_order == [parts_out_of_order[i] for i in range(6)]
    assert draw_episode(WIDE, 8, 5) != alone  # another seed, another episode
    assert len({d.conveyor_speed_scale for d in forward}) == 12
    assert {d.stopper for d in forward} == {True, False}


def test_one_range_changing_leaves_the_other_draws_alone():
    base = draw_episode(WIDE, 3, 2)
    other = draw_episode(WIDE.model_copy(update={"stopper_absent_probability": 0.9, "part_mass_scale": (1, 3)}), 3, 2)
    assert (other.conveyor_speed_scale, other.light, other.part_mix) == (base.conveyor_speed_scale, base.light,
                                                                         base.part_mix)
    assert [other.part(i).yaw_rad for i in range(4)] == [base.part(i).yaw_rad for i in range(4)]


def test_the_default_block_draws_the_nominal_cell():
    draw = draw_episode(RandomizeConfig(), 0, 3)
    assert (draw.conveyor_speed_scale, draw.stopper, draw.light, draw.part_mix) == (1.0, True, None, None)
    assert draw.camera_eye_offset_m == draw.camera_target_offset_m == (0.0, 0.0, 0.0)
    assert draw.part(4) == PartDraw()


def test_draws_stay_inside_their_ranges():
    for episode in range(30):
        draw = draw_episode(WIDE, 11, episode)
        assert 0.75 <= draw.conveyor_speed_scale <= 1.25
        assert all(abs(v) <= 0.05 for v in draw.camera_eye_offset_m)
        assert draw.part_mix is not None and math.isclose(sum(draw.part_mix), 1.0)
        assert draw.light is not None and 0.3 <= draw.light.ambient <= 0.8
        part = draw.part(episode)
        assert -0.03 <= part.lateral_m <= 0.03 and abs(part.yaw_rad) <= math.pi / 2
        assert 0.5 <= part.mass_scale <= 2.0 and part.friction is not None and 0.3 <= part.friction <= 1.0


# ---- the world ----------------------------------------------------------------------------------------------------


def test_part_pose_mass_and_friction_reach_the_world(cell):
    draw = EpisodeDraw(0, 0, config=RandomizeConfig(part_lateral_m=(0.025, 0.025), part_yaw_deg=(40, 40),
                                                    part_mass_scale=(1.8, 1.8), part_friction=(0.35, 0.35)))
    cell.reset_episode(draw)
    assert cell.spawn(PartArrival(0.0, "connector"))
    slot = _spawned(cell, "connector")
    pos, orn = p.getBasePositionAndOrientation(slot.body, physicsClientId=cell.client)
    assert pos[0] == pytest.approx(cell.stations[0].belt_x + 0.025)
    assert p.getEulerFromQuaternion(orn)[2] == pytest.approx(math.radians(40))
    info = p.getDynamicsInfo(slot.body, -1, physicsClientId=cell.client)
    assert info[0] == pytest.approx(PART_CATALOGUE["connector"].mass_kg * 1.8)
    assert info[1] == pytest.approx(0.35)
    # the next nominal episode gets the pooled body back as built
    cell.reset_episode(None)
    assert cell.spawn(PartArrival(0.0, "connector"))
    nominal = _spawned(cell, "connector")
    info = p.getDynamicsInfo(nominal.body, -1, physicsClientId=cell.client)
    assert (info[0], info[1]) == pytest.approx((PART_CATALOGUE["connector"].mass_kg, PART_FRICTION))
    pos, orn = p.getBasePositionAndOrientation(nominal.body, physicsClientId=cell.client)
    assert pos[0] == pytest.approx(cell.stations[0].belt_x) and orn == (0, 0, 0, 1)


def test_conveyor_speed_reaches_the_world(cell):
    def travel(draw):
        cell.reset_episode(draw)
        assert cell.spawn(PartArrival(0.0, "module"))
        slot = _spawned(cell, "module")
        _steps(cell, 0.5)
        y0 = p.getBasePositionAndOrientation(slot.body, physicsClientId=cell.client)[0][1]
        _steps(cell, 1.0)
        return p.getBasePositionAndOrientation(slot.body, physicsClientId=cell.client)[0][1] - y0

    nominal, fast = travel(None), travel(EpisodeDraw(0, 0, conveyor_speed_scale=1.25))
    assert cell.conveyor_speed == pytest.approx(0.25)
    assert nominal == pytest.approx(0.2, rel=0.01)  # 0.2 m/s for 1 s: parts glide at the belt's speed
    assert fast / nominal == pytest.approx(1.25, rel=0.02)


def test_with_the_stopper_a_part_waits_at_the_pick_station(cell):
    cell.reset_episode(EpisodeDraw(0, 0, stopper=True))
    assert cell.spawn(PartArrival(0.0, "capacitor"))
    events = _steps(cell, 7.0)
    assert not events and cell.part_ready(0)
    assert cell.environment_state(0)[6] == 1.0


def test_without_the_stopper_a_moving_part_is_in_reach_then_falls_off_the_belt(cell):
    station = cell.stations[0]
    cell.reset_episode(EpisodeDraw(0, 0, stopper=False))
    stopper = p.getBasePositionAndOrientation(station.stopper_body, physicsClientId=cell.client)[0]
    assert stopper[2] < 0  # taken away
    assert cell.spawn(PartArrival(0.0, "capacitor"))
    slot = _spawned(cell, "capacitor")
    seen = []
    events = []
    for _ in range(int(7.0 / cell.dt_s)):
        cell.step()
        events += cell.update_parts()
        if cell.part_ready(0):
            seen.append(cell.environment_state(0).copy())
    assert len(seen) > 100  # in reach for a while, and moving while it is
    assert seen[0][1] == pytest.approx(station.belt_y_end - PICK_ZONE_M, abs=0.01)
    assert seen[-1][1] - seen[0][1] > PICK_ZONE_M - 0.05
    assert all(s[6] == 1.0 and s[7] == 0.0 for s in seen)
    assert [(e.kind, e.detail.get("reason")) for e in events] == [("drop", "fell off the conveyor")]
    assert slot.status == "dropped"
    # the next episode with a stopper has it back in place
    cell.reset_episode(None)
    back = p.getBasePositionAndOrientation(station.stopper_body, physicsClientId=cell.client)[0]
    assert back == pytest.approx(station.stopper_xyz)


def test_camera_pose_and_light_change_the_image(cell):
    cell.reset_episode(None)
    nominal = cell.render(0)
    cell.reset_episode(EpisodeDraw(0, 0, camera_eye_offset_m=(0.04, -0.03, 0.05)))
    moved = cell.render(0)
    lit = draw_episode(RandomizeConfig(light_azimuth_deg=(200, 200), light_ambient=(0.3, 0.3),
                                       light_colour_jitter=0.5), 0, 0)
    cell.reset_episode(lit)
    relit = cell.render(0)
    cell.reset_episode(None)
    again = cell.render(0)
    assert np.array_equal(nominal, again)
    assert np.mean(np.abs(moved.astype(int) - nominal)) > 1.0
    assert np.mean(np.abs(relit.astype(int) - nominal)) > 1.0


def test_a_neutral_draw_leaves_the_episode_unchanged(cell):
    def trajectory(draw):
        cell.reset_episode(draw)
        cell.spawn(PartArrival(0.0, "connector"))
        body = _spawned(cell, "connector").body
        out = []
        for _ in range(5):
            _steps(cell, 1.0)
            out.append(p.getBasePositionAndOrientation(body, physicsClientId=cell.client))
        return out

    assert trajectory(draw_episode(RandomizeConfig(), 4, 1)) == trajectory(None)


# ---- launch files and workload ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("override", "message"), [
    ("randomize.part_yaw_deg:=[30, 10]", r"randomize.part_yaw_deg: expected \[low, high\] with low <= high, got "
                                         r"\[30, 10\]"),
    ("randomize.part_mass_scale:=[0, 2]", r"randomize.part_mass_scale: expected values > 0.0"),
    ("randomize.stopper_absent_probability:=1.5", r"randomize.stopper_absent_probability: expected .*less than or "
                                                  r"equal to 1"),
    ("randomize.part_lateral_m:=[0.1]", r"randomize.part_lateral_m"),
    ("randomize.yaw_deg:=[0, 1]", r"randomize.yaw_deg: unknown key 'yaw_deg'. Did you mean 'part_yaw_deg'\?"),
])
def test_bad_randomize_values_name_the_field(override, message):
    with pytest.raises(ScenarioError, match=message):
        load(RANDOMIZED, [override])


def test_a_part_mix_needs_a_random_workload():
    with pytest.raises(ScenarioError, match=r"randomize.part_mix_concentration: a part mix needs a random workload"):
        load(ROOT / "launch/factory_cell.yaml", ["randomize.part_mix_concentration:=1.0", "workload.random:=null",
                                                  "workload.parts:=[{t: 0, type: module}]"])


def test_the_part_mix_is_drawn_per_episode_and_the_pool_fits_the_busiest_episode():
    mixed = ["randomize.part_mix_concentration:=0.1", "workload.random.count:=4"]
    scenario = load(ROOT / "launch/factory_cell.yaml", ["episodes:=12", *mixed]).scenario
    plans = plan_arrivals(scenario)
    longer = load(ROOT / "launch/factory_cell.yaml", ["episodes:=20", *mixed]).scenario
    assert plan_arrivals(longer)[:12] == plans  # an episode's parts do not depend on how many episodes run
    mixes = [draw_episode(scenario.randomize, scenario.seed, e).part_mix for e in range(12)]
    assert len({max(m) for m in mixes if m}) == 12
    lopsided = sum(len({a.part_type for a in plan}) == 1 for plan in plans)
    assert lopsided >= 4  # a small concentration makes most episodes one type (uniform: 1 in 9)
    plain = plan_arrivals(load(ROOT / "launch/factory_cell.yaml", ["episodes:=12", mixed[1]]).scenario)
    assert plain != plans
    built = build_cell(scenario.cell, 240.0, plans)
    try:
        pool = {name: sum(s.kind.name == name for s in built.parts) for name in PART_TYPES}
        busiest = {name: max(sum(a.part_type == name for a in plan) for plan in plans) for name in PART_TYPES}
        assert all(pool[name] >= max(1, busiest[name]) for name in PART_TYPES)
        assert max(busiest.values()) == 4
    finally:
        built.close()
