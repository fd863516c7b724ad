"""Read the parts of a URDF the testbed relies on: links, joints and their limits.

Pure xml.etree, no simulator: the control loop and the loader use it without pybullet.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import RobotDescriptionError

_MOVABLE = ("revolute", "prismatic", "continuous")


@dataclass(frozen=True)
class UrdfJoint:
    """One URDF joint; limits in rad (m for prismatic), effort in N m (N), velocity in rad/s (m/s)."""

    name: str
    kind: str
    parent: str
    child: str
    origin_xyz: tuple[float, float, float]
    origin_rpy: tuple[float, float, float]
    axis: tuple[float, float, float]
    lower: float
    upper: float
    effort: float
    velocity: float

    @property
    def movable(self) -> bool:
        """True for revolute, prismatic and continuous joints."""
        return self.kind in _MOVABLE


@dataclass(frozen=True)
class UrdfRobot:
    """A parsed URDF: robot name, link names, joints in file order and link masses in kg."""

    name: str
    links: tuple[str, ...]
    joints: tuple[UrdfJoint, ...]
    link_mass_kg: dict[str, float]

    def joint(self, name: str) -> UrdfJoint | None:
        """The joint called ``name``, or None."""
        for joint in self.joints:
            if joint.name == name:
                return joint
        return None

    @property
    def movable_joints(self) -> tuple[UrdfJoint, ...]:
        """Joints that move, in file order."""
        return tuple(j for j in self.joints if j.movable)


def _floats(path: Path, where: str, text: str | None, default: str, count: int) -> tuple[float, ...]:
    parts = (text if text is not None else default).split()
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise RobotDescriptionError(f"{path}: {where}: expected {count} finite numbers, got {text!r}")
    return values


def _vec3(path: Path, where: str, text: str | None, default: str) -> tuple[float, float, float]:
    x, y, z = _floats(path, where, text, default, 3)
    return (x, y, z)


def _attr(path: Path, where: str, element: ET.Element, key: str) -> str:
    value = element.get(key)
    if value is None:
        raise RobotDescriptionError(f"{path}: {where}: missing attribute '{key}'")
    return value


def parse_urdf(path: Path) -> UrdfRobot:
    """Parse ``path``.

    Raises:
        RobotDescriptionError: the file is missing, not XML, not a <robot>, or a joint lacks
            parent/child/limits or refers to an unknown link.
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError as exc:
        raise RobotDescriptionError(f"{path}: file not found") from exc
    except ET.ParseError as exc:
        raise RobotDescriptionError(f"{path}: malformed XML: {exc}") from exc
    if root.tag != "robot":
        raise RobotDescriptionError(f"{path}: expected a <robot> root element, got <{root.tag}>")
    links: list[str] = []
    masses: dict[str, float] = {}
    for link in root.findall("link"):
        name = _attr(path, "link", link, "name")
        links.append(name)
        mass = link.find("inertial/mass")
        masses[name] = float(mass.get("value", "0")) if mass is not None else 0.0
    joints = []
    for element in root.findall("joint"):
        name = _attr(path, "joint", element, "name")
        where = f"joint '{name}'"
        kind = _attr(path, where, element, "type")
        parent_el, child_el = element.find("parent"), element.find("child")
        if parent_el is None or child_el is None:
            raise RobotDescriptionError(f"{path}: {where}: expected <parent> and <child> elements")
        parent = _attr(path, where + " <parent>", parent_el, "link")
        child = _attr(path, where + " <child>", child_el, "link")
        for link_name in (parent, child):
            if link_name not in links:
                raise RobotDescriptionError(f"{path}: {where}: refers to unknown link '{link_name}'")
        origin = element.find("origin")
        xyz = _vec3(path, where + " origin xyz", None if origin is None else origin.get("xyz"), "0 0 0")
        rpy = _vec3(path, where + " origin rpy", None if origin is None else origin.get("rpy"), "0 0 0")
        axis_el = element.find("axis")
        axis = _vec3(path, where + " axis", None if axis_el is None else axis_el.get("xyz"), "1 0 0")
        lower = upper = effort = velocity = 0.0
        if kind in _MOVABLE:
            limit = element.find("limit")
            if limit is None:
                raise RobotDescriptionError(f"{path}: {where}: a {kind} joint needs a <limit> element")
            effort, velocity = (
                _floats(path, f"{where} limit {key}", _attr(path, where + " <limit>", limit, key), "", 1)[0]
                for key in ("effort", "velocity")
            )
            if kind == "continuous":
                lower, upper = -math.inf, math.inf
            else:
                lower, upper = (
                    _floats(path, f"{where} limit {key}", limit.get(key), "0", 1)[0] for key in ("lower", "upper")
                )
                if lower > upper:
                    raise RobotDescriptionError(f"{path}: {where}: limit lower {lower} is above upper {upper}")
        joints.append(UrdfJoint(name, kind, parent, child, xyz, rpy, axis, lower, upper, effort, velocity))
    return UrdfRobot(_attr(path, "robot", root, "name"), tuple(links), tuple(joints), masses)
