"""Part types the cell handles: shape, size, mass and colour of each."""

from __future__ import annotations

from dataclasses import dataclass

import pybullet as p

from testbed.scenario.workload import PART_TYPES


@dataclass(frozen=True)
class PartType:
    """Geometry and mass of one part type; boxes are long along the belt (y)."""

    name: str
    shape: str  # "box" or "cylinder"
    size_m: tuple[float, float, float]  # box: x, y, z extents; cylinder: diameter, diameter, height
    mass_kg: float
    rgba: tuple[float, float, float, float]

    @property
    def half_height_m(self) -> float:
        return self.size_m[2] / 2.0

    @property
    def index(self) -> int:
        return PART_TYPES.index(self.name)


PART_FRICTION = 0.8  # lateral friction of every part (a randomized episode may draw another)

# Small electronics parts, sized so a 30 mm suction cup fits on each top face.
PART_CATALOGUE: dict[str, PartType] = {
    "capacitor": PartType("capacitor", "cylinder", (0.036, 0.036, 0.035), 0.04, (0.15, 0.35, 0.85, 1.0)),
    "connector": PartType("connector", "box", (0.030, 0.050, 0.022), 0.06, (0.95, 0.55, 0.10, 1.0)),
    "module": PartType("module", "box", (0.045, 0.045, 0.015), 0.09, (0.10, 0.60, 0.25, 1.0)),
}


def create_part_body(client: int, part: PartType, position: tuple[float, float, float]) -> int:
    """Create one dynamic part body at ``position`` and return its body id."""
    sx, sy, sz = part.size_m
    if part.shape == "cylinder":
        col = p.createCollisionShape(p.GEOM_CYLINDER, radius=sx / 2, height=sz, physicsClientId=client)
        vis = p.createVisualShape(p.GEOM_CYLINDER, radius=sx / 2, length=sz, rgbaColor=part.rgba,
                                  physicsClientId=client)
    else:
        half = [sx / 2, sy / 2, sz / 2]
        col = p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=client)
        vis = p.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=part.rgba, physicsClientId=client)
    body = p.createMultiBody(part.mass_kg, col, vis, basePosition=position, physicsClientId=client)
    # no linear damping (pybullet's default is 0.04): on the frictionless belt a part glides at the belt's
    # speed between the cell's checks instead of slowing down
    p.changeDynamics(body, -1, lateralFriction=PART_FRICTION, spinningFriction=0.001, rollingFriction=0.0005,
                     linearDamping=0.0, physicsClientId=client)
    return body
