"""The pybullet factory cell: robots on pedestals, conveyor stations, bins, pooled parts, suction, cameras.

Entry point: ``build_cell(cell_config, physics_hz, arrivals)``.
"""

from testbed.sim.cell import Cell, PartEvent, build_cell

__all__ = ["Cell", "PartEvent", "build_cell"]
