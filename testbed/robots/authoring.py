"""Write robot.urdf files from compact designs built of primitive shapes.

A design lists links (mass and primitive shapes in the link frame) and joints
(origin in the parent frame, axis, limits). Rendering computes each link's
centre of mass and principal inertia from its shapes (solid box, cylinder and
sphere formulas, mass shared by volume, parallel-axis theorem), so that the
inertias in the URDF always agree with the geometry. Collision and visual
geometry are the same primitives.

Run ``python -m testbed.robots.authoring [ROBOTS_DIR]`` to rewrite every
``<model>/robot.urdf`` from :mod:`testbed.robots.designs`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape

import numpy as np

Vec3 = tuple[float, float, float]
ShapeKind = Literal["box", "cylinder", "sphere"]

#: Material colours (RGBA) used by the designs.
COLORS: dict[str, tuple[float, float, float, float]] = {
    "yaskawa_blue": (0.05, 0.30, 0.65, 1.0),
    "white": (0.92, 0.92, 0.90, 1.0),
    "grey": (0.35, 0.35, 0.38, 1.0),
    "black": (0.08, 0.08, 0.08, 1.0),
}


@dataclass(frozen=True)
class Shape:
    """One solid primitive in a link frame.

    ``size`` is (x, y, z) for a box, (radius, length) for a cylinder along its
    local z, (radius,) for a sphere. ``xyz``/``rpy`` place its centre.
    """

    kind: ShapeKind
    size: tuple[float, ...]
    xyz: Vec3 = (0.0, 0.0, 0.0)
    rpy: Vec3 = (0.0, 0.0, 0.0)

    @property
    def volume_m3(self) -> float:
        """Volume of the solid in m^3."""
        if self.kind == "box":
            return self.size[0] * self.size[1] * self.size[2]
        if self.kind == "cylinder":
            return math.pi * self.size[0] ** 2 * self.size[1]
        return 4.0 / 3.0 * math.pi * self.size[0] ** 3

    def inertia_about_centre(self, mass_kg: float) -> np.ndarray:
        """Inertia tensor (3, 3) in kg m^2 about the shape centre, in its own axes."""
        if self.kind == "box":
            x, y, z = self.size
            d = (y * y + z * z, x * x + z * z, x * x + y * y)
            return np.diag([mass_kg * v / 12.0 for v in d])
        if self.kind == "cylinder":
            r, h = self.size
            side = mass_kg * (3.0 * r * r + h * h) / 12.0
            return np.diag([side, side, mass_kg * r * r / 2.0])
        r = self.size[0]
        return np.eye(3) * (2.0 / 5.0 * mass_kg * r * r)


def segment(start: Vec3, end: Vec3, radius: float) -> Shape:
    """A cylinder of ``radius`` whose axis runs from ``start`` to ``end`` (link frame, m)."""
    a = np.asarray(start, dtype=float)
    b = np.asarray(end, dtype=float)
    d = b - a
    length = float(np.linalg.norm(d))
    u = d / length
    # rotate local z onto u: first pitch about y, then yaw about z (URDF rpy = Rz(yaw) Ry(pitch) Rx(roll))
    pitch = math.atan2(math.hypot(u[0], u[1]), u[2])
    yaw = math.atan2(u[1], u[0]) if math.hypot(u[0], u[1]) > 1e-12 else 0.0
    centre = (a + b) / 2.0
    return Shape("cylinder", (radius, length), _vec(centre), (0.0, pitch, yaw))


@dataclass(frozen=True)
class LinkDesign:
    """A link: total mass and the shapes that carry it (empty shapes: a massless frame)."""

    name: str
    mass_kg: float = 0.0
    shapes: tuple[Shape, ...] = ()
    color: str = "grey"


@dataclass(frozen=True)
class JointDesign:
    """A joint; limits in rad (m for prismatic), effort in N m (N), velocity in rad/s (m/s)."""

    name: str
    kind: Literal["revolute", "prismatic", "fixed"]
    parent: str
    child: str
    xyz: Vec3 = (0.0, 0.0, 0.0)
    rpy: Vec3 = (0.0, 0.0, 0.0)
    axis: Vec3 = (0.0, 0.0, 1.0)
    lower: float = 0.0
    upper: float = 0.0
    effort: float = 0.0
    velocity: float = 0.0


@dataclass(frozen=True)
class RobotDesign:
    """A whole robot: links in tree order, joints, and the XML comment that documents it."""

    name: str
    comment: str
    links: tuple[LinkDesign, ...]
    joints: tuple[JointDesign, ...]
    colors: dict[str, tuple[float, float, float, float]] = field(default_factory=lambda: dict(COLORS))


def rpy_to_matrix(rpy: Vec3) -> np.ndarray:
    """Rotation matrix of URDF fixed-axis roll, pitch, yaw: Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def matrix_to_rpy(rot: np.ndarray) -> Vec3:
    """Inverse of :func:`rpy_to_matrix` (pitch in [-pi/2, pi/2])."""
    sp = -float(rot[2, 0])
    pitch = math.asin(max(-1.0, min(1.0, sp)))
    if abs(math.cos(pitch)) > 1e-9:
        roll = math.atan2(rot[2, 1], rot[2, 2])
        yaw = math.atan2(rot[1, 0], rot[0, 0])
    else:  # gimbal lock: put everything in yaw
        roll = 0.0
        yaw = math.atan2(-rot[0, 1], rot[1, 1])
    return (roll, pitch, yaw)


@dataclass(frozen=True)
class MassProperties:
    """Mass, centre of mass (link frame) and principal inertia with its frame orientation."""

    mass_kg: float
    com_xyz: Vec3
    principal_rpy: Vec3
    principal_inertia: Vec3


def mass_properties(link: LinkDesign) -> MassProperties:
    """Centre of mass and principal inertia of a link whose mass is shared by shape volume."""
    if not link.shapes or link.mass_kg <= 0.0:
        return MassProperties(0.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    volumes = np.array([s.volume_m3 for s in link.shapes])
    masses = link.mass_kg * volumes / volumes.sum()
    centres = np.array([s.xyz for s in link.shapes], dtype=float)
    com = (masses[:, None] * centres).sum(axis=0) / link.mass_kg
    inertia = np.zeros((3, 3))
    for shape, m, c in zip(link.shapes, masses, centres, strict=True):
        rot = rpy_to_matrix(shape.rpy)
        inertia += rot @ shape.inertia_about_centre(float(m)) @ rot.T
        d = c - com
        inertia += float(m) * (float(d @ d) * np.eye(3) - np.outer(d, d))
    eigvals, eigvecs = np.linalg.eigh(inertia)
    # order and sign the principal axes so they stay as close as possible to the link axes
    dominant = np.argmax(np.abs(eigvecs), axis=0)
    if sorted(dominant.tolist()) == [0, 1, 2]:
        order = np.argsort(dominant)
        eigvals, eigvecs = eigvals[order], eigvecs[:, order]
        eigvecs = eigvecs * np.sign(np.diag(eigvecs))
    if np.linalg.det(eigvecs) < 0:
        eigvecs[:, 2] = -eigvecs[:, 2]
    return MassProperties(link.mass_kg, _vec(com), matrix_to_rpy(eigvecs), _vec(eigvals))


def _vec(v: np.ndarray | Vec3) -> Vec3:
    return (float(v[0]), float(v[1]), float(v[2]))


def _fmt(x: float) -> str:
    text = f"{round(x, 9):.9g}"
    return "0" if text in ("-0", "0") else text


def _triple(v: Vec3) -> str:
    return " ".join(_fmt(x) for x in v)


def _geometry(shape: Shape) -> str:
    if shape.kind == "box":
        return f'<box size="{_triple(_vec(shape.size))}"/>'
    if shape.kind == "cylinder":
        return f'<cylinder radius="{_fmt(shape.size[0])}" length="{_fmt(shape.size[1])}"/>'
    return f'<sphere radius="{_fmt(shape.size[0])}"/>'


def _link_xml(link: LinkDesign) -> list[str]:
    out = [f'  <link name="{link.name}">']
    props = mass_properties(link)
    ixx, iyy, izz = props.principal_inertia
    out += [
        "    <inertial>",
        f'      <origin xyz="{_triple(props.com_xyz)}" rpy="{_triple(props.principal_rpy)}"/>',
        f'      <mass value="{_fmt(props.mass_kg)}"/>',
        f'      <inertia ixx="{_fmt(ixx)}" ixy="0" ixz="0" iyy="{_fmt(iyy)}" iyz="0" izz="{_fmt(izz)}"/>',
        "    </inertial>",
    ]
    for shape in link.shapes:
        origin = f'<origin xyz="{_triple(shape.xyz)}" rpy="{_triple(shape.rpy)}"/>'
        out += [
            "    <visual>",
            f"      {origin}",
            f"      <geometry>{_geometry(shape)}</geometry>",
            f'      <material name="{link.color}"/>',
            "    </visual>",
            "    <collision>",
            f"      {origin}",
            f"      <geometry>{_geometry(shape)}</geometry>",
            "    </collision>",
        ]
    out.append("  </link>")
    return out


def _joint_xml(joint: JointDesign) -> list[str]:
    out = [
        f'  <joint name="{joint.name}" type="{joint.kind}">',
        f'    <parent link="{joint.parent}"/>',
        f'    <child link="{joint.child}"/>',
        f'    <origin xyz="{_triple(joint.xyz)}" rpy="{_triple(joint.rpy)}"/>',
    ]
    if joint.kind != "fixed":
        out += [
            f'    <axis xyz="{_triple(joint.axis)}"/>',
            f'    <limit lower="{_fmt(joint.lower)}" upper="{_fmt(joint.upper)}" '
            f'effort="{_fmt(joint.effort)}" velocity="{_fmt(joint.velocity)}"/>',
        ]
    out.append("  </joint>")
    return out


def render_urdf(design: RobotDesign) -> str:
    """The URDF text of ``design`` (deterministic: same design, same bytes)."""
    if "--" in design.comment:
        raise ValueError(f"robot {design.name!r}: an XML comment may not contain '--'")
    used = {link.color for link in design.links if link.shapes}
    out = ['<?xml version="1.0"?>', "<!--", escape(design.comment.strip("\n")), "-->"]
    out.append(f'<robot name="{design.name}">')
    for name in sorted(used):
        rgba = " ".join(_fmt(c) for c in design.colors[name])
        out.append(f'  <material name="{name}"><color rgba="{rgba}"/></material>')
    children = {j.child: j for j in design.joints}
    for link in design.links:
        if link.name in children:
            out += _joint_xml(children[link.name])
        out += _link_xml(link)
    out.append("</robot>")
    return "\n".join(out) + "\n"


def write_all(robots_dir: Path) -> list[Path]:
    """Write ``robots_dir/<model>/robot.urdf`` for every design; returns the paths written."""
    from testbed.robots.designs import DESIGNS

    paths = []
    for design in DESIGNS:
        path = robots_dir / design.name / "robot.urdf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_urdf(design), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "robots"
    for written in write_all(target):
        print(written)
