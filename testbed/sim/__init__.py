"""The pybullet factory cell: robots on pedestals, conveyor stations, bins, pooled parts, suction, cameras.

Entry point: ``build_cell(cell_config, physics_hz, arrivals)``; per-episode randomization:
``cell.reset_episode(draw_episode(scenario.randomize, seed, episode))``.
"""

from testbed.scenario.randomize import EpisodeDraw, draw_episode
from testbed.sim.cell import Cell, PartEvent, build_cell

__all__ = ["Cell", "EpisodeDraw", "PartEvent", "build_cell", "draw_episode"]
