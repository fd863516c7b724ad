import numpy as np
import pybullet as p
import pytest

from testbed.policies.expert import ExpertPolicy
from testbed.scenario import load
from testbed.scenario.schema import CellConfig
from testbed.scenario.workload import PartArrival
from testbed.sim.cell import BIN_INNER_M, build_cell


@pytest.fixture
def cell():
    arrivals = [[PartArrival(0.0, "capacitor"), PartArrival(0.0, "module"), PartArrival(0.0, "connector")]]
    built = build_cell(CellConfig(), 240.0, arrivals)
    yield built
    built.close()


def _steps(cell, seconds):
    for _ in range(int(seconds / cell.dt_s)):
        cell.step()
        cell.update_parts()


def test_conveyor_brings_a_part_to_the_stopper(cell):
    cell.reset_episode()
    assert cell.spawn(PartArrival(0.0, "connector"))
    _steps(cell, 6.0)
    env = cell.environment_state(0)
    assert env[6] == 1.0  # ready at the pick station
    assert env[5] == 1.0  # connector is type index 1
    assert abs(env[0] - 0.45) < 0.01 and abs(env[1]) < 0.04


def test_reset_restores_the_built_world_exactly(cell):
    cell.reset_episode()
    first = cell.read_joint_positions().copy()
    cell.spawn(PartArrival(0.0, "capacitor"))
    cell.apply_joint_commands(first + 0.3)
    _steps(cell, 1.0)
    assert not np.allclose(cell.read_joint_positions(), first)
    cell.reset_episode()
    np.testing.assert_array_equal(cell.read_joint_positions(), first)
    assert all(slot.status == "parked" for slot in cell.parts)


def test_suction_seizes_a_part_only_within_reach(cell):
    cell.reset_episode()
    cell.spawn(PartArrival(0.0, "module"))
    _steps(cell, 6.0)
    cell.set_suction(0, True)
    assert cell.update_parts() == []  # the tool is far above the part: nothing to seize
    assert cell.robots[0].held is None


def test_pool_has_one_body_per_part_of_the_busiest_episode():
    arrivals = [[PartArrival(0.0, "capacitor")] * 4, [PartArrival(0.0, "module")] * 2]
    built = build_cell(CellConfig(), 240.0, arrivals)
    try:
        kinds = [slot.kind.name for slot in built.parts]
        assert kinds.count("capacitor") == 4 and kinds.count("module") == 2 and kinds.count("connector") == 1
    finally:
        built.close()


def test_camera_renders_rgb_at_the_configured_size():
    scenario = load("launch/factory_cell.yaml", ["cell.cameras:=[{name: overhead, width: 64, height: 48}]"]).scenario
    built = build_cell(scenario.cell, 240.0, [[]])
    try:
        image = built.render(0)
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        assert image.std() > 0  # not a blank frame
    finally:
        built.close()


def test_expert_reaches_every_bin_with_the_tool_down():
    expert = ExpertPolicy("gp7")
    try:
        for bin_xyz in ((0.05, 0.45, 0.05), (0.30, 0.40, 0.05), (-0.20, 0.42, 0.05)):  # rims, base frame
            target = np.array([bin_xyz[0], bin_xyz[1], bin_xyz[2] + 0.10])
            q = expert._ik(target, expert.model.home)
            assert np.linalg.norm(expert._fk(q) - target) < 0.005
            assert np.all(q >= expert.model.lower) and np.all(q <= expert.model.upper)
            orn = p.getLinkState(expert._body, expert._tcp, physicsClientId=expert._client)[5]
            tool_z = np.array(p.getMatrixFromQuaternion(orn)).reshape(3, 3)[:, 2]
            assert tool_z[2] < -0.99
    finally:
        expert.close()


def test_bin_inner_size_holds_every_part_type():
    from testbed.sim.parts import PART_CATALOGUE

    assert all(max(kind.size_m[:2]) < BIN_INNER_M / 2 for kind in PART_CATALOGUE.values())
