"""Load ``robots/<model>/`` (robot.urdf + controller.yaml) into a checked :class:`RobotModel`."""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

import testbed
from testbed.errors import RobotDescriptionError
from testbed.robots.urdf import UrdfRobot, parse_urdf

#: Environment variable that points the loader at another robots directory.
ROBOTS_DIR_ENV = "TESTBED_ROBOTS_DIR"

RobotKind = Literal["articulated", "scara"]
_KINDS = ("articulated", "scara")
_TOP_KEYS = (
    "model",
    "description",
    "kind",
    "joints",
    "cycle_s",
    "tcp_link",
    "flange_link",
    "payload_kg",
    "home_rad",
    "limits",
    "gains",
)
_LIMIT_KEYS = ("velocity", "acceleration", "jerk", "tcp_speed_m_s")
_OPTIONAL_LIMIT_KEYS = ("reduced_tcp_speed_m_s",)
_GAIN_KEYS = ("position_gain", "velocity_gain", "max_force")
# numbers in controller.yaml are written with 6 decimals; allow that rounding against the URDF
_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class RobotModel:
    """A robot description checked against its URDF.

    Arrays are float64 of shape (n_joints,), read-only, in the order of ``joint_names``; angles in
    rad, prismatic positions in m (velocities rad/s or m/s, and so on).
    """

    name: str
    description: str
    root: Path
    urdf_path: Path
    kind: RobotKind
    joint_names: tuple[str, ...]
    joint_types: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    position_gain: np.ndarray
    velocity_gain: np.ndarray
    max_force: np.ndarray
    home: np.ndarray
    cycle_s: float  # the real controller's cycle, for reference: the simulated loop ticks once per physics step
    tcp_link: str
    flange_link: str
    payload_kg: float
    tcp_speed_m_s: float
    reduced_tcp_speed_m_s: float = 0.25

    @property
    def n_joints(self) -> int:
        """Number of moving joints."""
        return len(self.joint_names)

    @property
    def controller_path(self) -> Path:
        """Path of the controller.yaml this model was read from."""
        return self.root / "controller.yaml"


def default_robots_dir() -> Path:
    """``$TESTBED_ROBOTS_DIR`` if set, else the repository's ``robots/`` beside the package."""
    env = os.environ.get(ROBOTS_DIR_ENV)
    if env:
        return Path(env)
    return Path(testbed.__file__).resolve().parents[1] / "robots"


def known_robots(robots_dir: Path | None = None) -> list[str]:
    """Sorted names of the models in ``robots_dir`` (directories holding a robot.urdf)."""
    base = robots_dir if robots_dir is not None else default_robots_dir()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "robot.urdf").is_file())


def load_robot(name: str, robots_dir: Path | None = None) -> RobotModel:
    """Load and check ``<robots_dir>/<name>/``.

    Args:
        name: model directory name, e.g. ``"gp7"``.
        robots_dir: where the models live; default :func:`default_robots_dir`.

    Raises:
        RobotDescriptionError: unknown model (with a suggestion), or a controller.yaml that is
            malformed or disagrees with the URDF; the message names the file and field.
    """
    base = robots_dir if robots_dir is not None else default_robots_dir()
    known = known_robots(base)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise RobotDescriptionError(f"unknown robot '{name}'.{hint} (known: {', '.join(known) or f'none in {base}'})")
    root = base / name
    urdf_path = root / "robot.urdf"
    return _build(name, root, urdf_path, parse_urdf(urdf_path), _ControllerFile(root / "controller.yaml"))


class _ControllerFile:
    """controller.yaml values plus the line of each key, for located error messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise RobotDescriptionError(f"{path}: file not found (every model needs a controller.yaml)") from exc
        try:
            self.data = yaml.safe_load(text)
            self.node = yaml.compose(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise RobotDescriptionError(f"{path}{where}: malformed YAML: {exc}") from exc
        if not isinstance(self.data, dict):
            raise RobotDescriptionError(f"{path}: expected a mapping of settings at the top level")

    def where(self, *keys: str) -> str:
        """``file:line field.path`` for ``keys`` (line of the deepest key found)."""
        line = None
        node: Any = self.node
        for key in keys:
            found = None
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if key_node.value == key:
                        found, line = value_node, key_node.start_mark.line + 1
                        break
            if found is None:
                break
            node = found
        located = f"{self.path}{'' if line is None else f':{line}'}"
        return f"{located} {'.'.join(keys)}" if keys else located

    def fail(self, keys: tuple[str, ...], message: str) -> RobotDescriptionError:
        """An error located at ``keys``."""
        return RobotDescriptionError(f"{self.where(*keys)}: {message}")

    def section(self, key: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
        """The mapping at ``key``, with its keys checked."""
        value = self.data.get(key) if key else self.data
        keys = (key,) if key else ()
        if not isinstance(value, dict):
            raise self.fail(keys, f"expected a mapping with keys {', '.join(required)}, got {value!r}")
        for k in value:
            if k not in required and k not in optional:
                close = difflib.get_close_matches(str(k), required + optional, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise self.fail((*keys, str(k)), f"unknown key.{hint} (allowed: {', '.join(required + optional)})")
        for k in required:
            if k not in value:
                raise self.fail(keys, f"missing key '{k}'")
        return value

    def number(self, keys: tuple[str, ...], value: Any, *, positive: bool = True) -> float:
        """A finite number (> 0 when ``positive``, else >= 0)."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(keys, f"expected a finite number, got {value!r}")
        if value < 0 or (positive and value == 0):
            raise self.fail(keys, f"expected a {'positive' if positive else 'non-negative'} number, got {value!r}")
        return float(value)

    def array(self, keys: tuple[str, ...], value: Any, n: int, *, positive: bool) -> np.ndarray:
        """A list of ``n`` finite numbers as a read-only float64 array."""
        if not isinstance(value, list):
            raise self.fail(keys, f"expected a list of {n} numbers (one per joint), got {value!r}")
        if len(value) != n:
            raise self.fail(keys, f"expected {n} values (one per joint), got {len(value)}")
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise self.fail(keys, f"entry {i}: expected a finite number, got {v!r}")
            if positive and v <= 0:
                raise self.fail(keys, f"entry {i}: expected a positive number, got {v!r}")
        return _frozen(np.asarray(value, dtype=np.float64))

    def string(self, keys: tuple[str, ...], value: Any) -> str:
        """A non-empty string."""
        if not isinstance(value, str) or not value:
            raise self.fail(keys, f"expected a non-empty string, got {value!r}")
        return value


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _check_within_urdf(
    cfg: _ControllerFile,
    keys: tuple[str, ...],
    values: np.ndarray,
    urdf_values: np.ndarray,
    what: str,
    joints: list[str],
) -> None:
    over = np.flatnonzero(values > urdf_values * (1 + _TOLERANCE) + _TOLERANCE)
    if over.size:
        i = int(over[0])
        raise cfg.fail(keys, f"{joints[i]}: {values[i]} is above the URDF {what} limit {urdf_values[i]} of robot.urdf")


def _build(name: str, root: Path, urdf_path: Path, urdf: UrdfRobot, cfg: _ControllerFile) -> RobotModel:
    top = cfg.section("", _TOP_KEYS)
    model = cfg.string(("model",), top["model"])
    if model != name:
        raise cfg.fail(("model",), f"expected '{name}' (the directory name), got '{model}'")
    kind = top["kind"]
    if kind not in _KINDS:
        raise cfg.fail(("kind",), f"expected one of {', '.join(_KINDS)}, got {kind!r}")
    joints = top["joints"]
    if not isinstance(joints, list) or not joints or not all(isinstance(j, str) for j in joints):
        raise cfg.fail(("joints",), f"expected a list of joint names, got {joints!r}")
    movable = [j.name for j in urdf.movable_joints]
    for joint_name in joints:
        joint = urdf.joint(joint_name)
        if joint is None or not joint.movable:
            what = "has no joint" if joint is None else "has only a fixed joint"
            raise cfg.fail(
                ("joints",), f"{urdf_path.name} {what} '{joint_name}' (movable joints: {', '.join(movable)})"
            )
    if joints != movable:
        raise cfg.fail(
            ("joints",), f"expected every movable joint of {urdf_path.name} in order: {movable}, got {joints}"
        )
    urdf_joints = [urdf.joint(j) for j in joints]
    n = len(joints)
    lower = _frozen(np.array([j.lower for j in urdf_joints if j is not None]))
    upper = _frozen(np.array([j.upper for j in urdf_joints if j is not None]))
    urdf_velocity = np.array([j.velocity for j in urdf_joints if j is not None])
    urdf_effort = np.array([j.effort for j in urdf_joints if j is not None])
    for key in ("tcp_link", "flange_link"):
        link = cfg.string((key,), top[key])
        if link not in urdf.links:
            raise cfg.fail((key,), f"{urdf_path.name} has no link '{link}'")

    limits = cfg.section("limits", _LIMIT_KEYS, _OPTIONAL_LIMIT_KEYS)
    velocity = cfg.array(("limits", "velocity"), limits["velocity"], n, positive=True)
    _check_within_urdf(cfg, ("limits", "velocity"), velocity, urdf_velocity, "velocity", joints)
    gains = cfg.section("gains", _GAIN_KEYS)
    max_force = cfg.array(("gains", "max_force"), gains["max_force"], n, positive=True)
    _check_within_urdf(cfg, ("gains", "max_force"), max_force, urdf_effort, "effort", joints)
    home = cfg.array(("home_rad",), top["home_rad"], n, positive=False)
    outside = np.flatnonzero((home < lower - _TOLERANCE) | (home > upper + _TOLERANCE))
    if outside.size:
        i = int(outside[0])
        raise cfg.fail(
            ("home_rad",),
            f"{joints[i]}: {home[i]} is outside the joint range [{lower[i]}, {upper[i]}] of the URDF",
        )
    return RobotModel(
        name=name,
        description=cfg.string(("description",), top["description"]),
        root=root,
        urdf_path=urdf_path,
        kind=kind,
        joint_names=tuple(joints),
        joint_types=tuple(j.kind for j in urdf_joints if j is not None),
        lower=lower,
        upper=upper,
        velocity=velocity,
        acceleration=cfg.array(("limits", "acceleration"), limits["acceleration"], n, positive=True),
        jerk=cfg.array(("limits", "jerk"), limits["jerk"], n, positive=True),
        position_gain=cfg.array(("gains", "position_gain"), gains["position_gain"], n, positive=True),
        velocity_gain=cfg.array(("gains", "velocity_gain"), gains["velocity_gain"], n, positive=False),
        max_force=max_force,
        home=home,
        cycle_s=cfg.number(("cycle_s",), top["cycle_s"]),
        tcp_link=top["tcp_link"],
        flange_link=top["flange_link"],
        payload_kg=cfg.number(("payload_kg",), top["payload_kg"], positive=False),
        tcp_speed_m_s=cfg.number(("limits", "tcp_speed_m_s"), limits["tcp_speed_m_s"]),
        reduced_tcp_speed_m_s=cfg.number(
            ("limits", "reduced_tcp_speed_m_s"), limits.get("reduced_tcp_speed_m_s", 0.25)
        ),
    )
