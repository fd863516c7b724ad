"""A robot holding still is not sent its motor command again: the world moves exactly as if it were."""

import numpy as np
import pybullet as p

from testbed.scenario.schema import CellConfig
from testbed.scenario.workload import PartArrival
from testbed.sim.cell import build_cell


def _state(cell):
    joints = [p.getJointStates(r.body, r.joint_indices, physicsClientId=cell.client) for r in cell.robots]
    parts = [(p.getBasePositionAndOrientation(s.body, physicsClientId=cell.client),
              p.getBaseVelocity(s.body, physicsClientId=cell.client)) for s in cell.parts]
    return repr((joints, parts))


def test_repeated_commands_move_the_world_like_commands_sent_every_step():
    arrivals = [[PartArrival(0.0, "capacitor"), PartArrival(0.0, "module")]]
    cells = [build_cell(CellConfig(), 240.0, arrivals) for _ in range(2)]
    try:
        rng = np.random.default_rng(3)
        skipped = 0
        target = vel = None
        for episode in range(3):
            for cell in cells:
                cell.reset_episode()
                cell.spawn(PartArrival(0.0, "capacitor"))
            home = cells[0].read_joint_positions().copy()
            if episode != 1:  # episode 1 starts with the command episode 0 ended with: sent again after the reset
                target, vel = home, np.zeros_like(home)
            for step in range(400):
                if step % 50 == 0 and rng.random() < 0.6:  # hold still for a while, or move
                    target = home + rng.uniform(-0.3, 0.3, home.shape)
                    vel = rng.uniform(-0.5, 0.5, home.shape) * (rng.random() < 0.5)
                for i, cell in enumerate(cells):
                    if i == 1:
                        cell._sent_commands = None  # forget what was sent: send every step
                    sent_before = cell._sent_commands and list(cell._sent_commands)
                    cell.apply_joint_commands(target.copy(), vel.copy() if step % 3 else None)
                    if i == 0 and sent_before == cell._sent_commands and cell.t_s > 0:
                        skipped += 1
                    cell.step()
                    cell.update_parts()
                assert _state(cells[0]) == _state(cells[1]), (episode, step)
        assert skipped > 100  # the skip did happen
    finally:
        for cell in cells:
            cell.close()
