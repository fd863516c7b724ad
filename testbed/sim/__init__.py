"""The pybullet factory cell: robots on pedestals, conveyor stations, bins, pooled parts, suction, cameras.

Entry point: ``build_cell(cell_config, physics_hz, arrivals)``.
"""

from testbed.sim.cell import Cell, PartEvent, build_cell
from testbed.sim.observations import ENV_STATE_DIM, ENV_STATE_NAMES

__all__ = ["ENV_STATE_DIM", "ENV_STATE_NAMES", "Cell", "PartEvent", "build_cell"]
