"""The conveyor: parts glide on a frictionless belt at its speed, are corrected at the checks, and stop short of
the stopper at the step their front reaches it, with no per-part pybullet call in between."""

from __future__ import annotations

import itertools
import math

import pybullet as p
import pytest

import testbed.sim.cell as cell_module
from testbed.scenario.randomize import EpisodeDraw
from testbed.scenario.schema import CellConfig
from testbed.scenario.workload import PartArrival
from testbed.sim.cell import STOP_SHORT_M, build_cell

CHECK_EVERY = 4  # the runner's PART_CHECK_EVERY: update_parts after every 4th step


@pytest.fixture
def cell():
    built = build_cell(CellConfig(), 240.0, [[PartArrival(0.0, "connector")] * 2 + [PartArrival(0.0, "module")]])
    yield built
    built.close()


@pytest.fixture
def part_calls(monkeypatch):
    """How many per-part pybullet calls (pose, velocity, velocity reset) the cell made, by name."""
    counts = {"pose": 0, "velocity": 0, "reset_velocity": 0}

    def counting(name, call):
        def counted(*args, **kwargs):
            counts[name] += 1
            return call(*args, **kwargs)
        return counted

    monkeypatch.setattr(cell_module, "_get_pose", counting("pose", cell_module._get_pose))
    monkeypatch.setattr(cell_module, "_get_velocity", counting("velocity", cell_module._get_velocity))
    monkeypatch.setattr(cell_module, "_reset_velocity", counting("reset_velocity", cell_module._reset_velocity))
    return counts


def _spawn(cell, part_type="connector"):
    before = {s.body for s in cell.parts if s.status == "conveying"}
    assert cell.spawn(PartArrival(0.0, part_type))
    return next(s for s in cell.parts if s.status == "conveying" and s.body not in before)


def _y(cell, slot):
    return p.getBasePositionAndOrientation(slot.body, physicsClientId=cell.client)[0][1]


def _vy(cell, slot):
    return p.getBaseVelocity(slot.body, physicsClientId=cell.client)[0][1]


def _run(cell, steps, events=None):
    """``steps`` physics steps with the runner's check rate; the events of the checks go to ``events``."""
    for _ in range(steps):
        cell.step()
        if cell.physics_steps % CHECK_EVERY == 0:
            found = cell.update_parts()
            if events is not None:
                events += found


def test_a_part_glides_at_belt_speed_with_no_per_step_driving(cell, part_calls):
    cell.reset_episode()
    slot = _spawn(cell)
    y0, steps = _y(cell, slot), 120
    for _ in range(steps):  # no checks at all: nothing but the physics moves it
        cell.step()
    assert _y(cell, slot) - y0 == pytest.approx(cell.conveyor_speed * steps * cell.dt_s, abs=1e-6)
    assert part_calls == {"pose": 0, "velocity": 0, "reset_velocity": 0}
    # with the checks (which read every conveying part anyway) a gliding part is not forced again either
    _run(cell, 120)
    assert part_calls["reset_velocity"] == 0
    assert _vy(cell, slot) == pytest.approx(cell.conveyor_speed, abs=1e-9)


def test_a_part_stops_short_of_the_stopper_at_the_step_its_front_gets_there(cell, part_calls):
    cell.reset_episode()
    station = cell.stations[0]
    slot = _spawn(cell)
    start, y0 = cell.physics_steps, _y(cell, slot)
    stop_front = station.belt_y_end - STOP_SHORT_M
    # the first step before which the front is at the stop: the belt stops the part for that step
    expected = math.ceil((stop_front - (y0 + slot.half_len_y_m)) / (cell.conveyor_speed * cell.dt_s))
    ys = [y0]
    while cell.physics_steps - start < expected + 40:
        _run(cell, 1)
        ys.append(_y(cell, slot))
    moved = [b - a for a, b in itertools.pairwise(ys)]
    assert all(d == pytest.approx(cell.conveyor_speed * cell.dt_s, rel=1e-6) for d in moved[:expected])
    assert all(abs(d) < 1e-9 for d in moved[expected:])
    front = ys[-1] + slot.half_len_y_m
    assert stop_front <= front < stop_front + cell.conveyor_speed * cell.dt_s  # 2 mm short of the stopper's face
    assert part_calls["reset_velocity"] == 1  # the stop; nothing else on the way
    assert slot.status == "ready" and cell.part_ready(0)


def test_a_part_blocked_behind_another_is_pushed_again(cell):
    cell.reset_episode()
    first = _spawn(cell)
    _run(cell, round(6.0 / cell.dt_s))
    assert first.status == "ready"
    second = _spawn(cell)
    _run(cell, round(6.0 / cell.dt_s))
    # it ran into the waiting part and is held there, pushed again at every check
    gap = (_y(cell, first) - first.half_len_y_m) - (_y(cell, second) + second.half_len_y_m)
    assert abs(gap) < 0.002
    assert second.status == "conveying"
    assert _vy(cell, second) == pytest.approx(cell.conveyor_speed)  # the check just gave it the belt's speed
    assert first.status == "ready" and abs(_vy(cell, first)) < 1e-3  # the waiting part stays at the stop
    # the waiting part is taken: the blocked part moves on to the stop
    first.status = "placed"
    p.resetBasePositionAndOrientation(first.body, first.park_xyz, (0, 0, 0, 1), physicsClientId=cell.client)
    y_blocked = _y(cell, second)
    _run(cell, round(1.0 / cell.dt_s))
    assert _y(cell, second) - y_blocked > first.half_len_y_m * 2 - 0.002
    assert second.status == "ready"
    assert _y(cell, second) + second.half_len_y_m >= cell.stations[0].belt_y_end - STOP_SHORT_M


def test_a_slowed_part_is_given_the_belt_speed_at_the_next_check(cell, part_calls):
    cell.reset_episode()
    slot = _spawn(cell, "module")
    _run(cell, 40)
    p.resetBaseVelocity(slot.body, (0.05, 0.02, 0), (0, 0, 1.0), physicsClientId=cell.client)  # a knock
    _run(cell, CHECK_EVERY)
    vel, ang = p.getBaseVelocity(slot.body, physicsClientId=cell.client)
    assert vel[0] == pytest.approx(0.0, abs=1e-9) and vel[1] == pytest.approx(cell.conveyor_speed)
    assert ang[2] == pytest.approx(0.0, abs=1e-9)
    assert part_calls["reset_velocity"] == 1
    # and it still stops short of the stopper, from the new prediction
    _run(cell, round(6.0 / cell.dt_s))
    front = _y(cell, slot) + slot.half_len_y_m
    stop_front = cell.stations[0].belt_y_end - STOP_SHORT_M
    assert slot.status == "ready" and stop_front <= front < stop_front + 0.002


def test_without_the_stopper_a_part_glides_off_the_belt_end(cell):
    cell.reset_episode(EpisodeDraw(0, 0, stopper=False))
    slot = _spawn(cell)
    events = []
    _run(cell, round(7.0 / cell.dt_s), events)
    assert [(e.kind, e.detail.get("reason")) for e in events] == [("drop", "fell off the conveyor")]
    assert slot.status == "dropped"
    assert _y(cell, slot) > cell.stations[0].belt_y_end
