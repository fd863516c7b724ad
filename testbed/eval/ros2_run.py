"""A run's ROS 2 side: what the runner tells the node about the cell, and how the node's requests reach the run.

The node (``testbed.ros2``) reads the run's event stream and snapshot; this module builds its view
of the cell (robots, fixed boxes, cameras, part shapes) from the built cell, hands it the
controller backend, gives the live snapshot the parts' poses, emits the events the node leaves
in its outbox into the run's stream, and, with ``ros2.commands: all``, lets a ROS 2 trajectory
take a robot over from its policy or job while it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import numpy as np
import pybullet as p

from testbed.eval.drivers import Driver, Episode
from testbed.eval.events import EventStream
from testbed.scenario.schema import Scenario
from testbed.sim.cell import BELT_WIDTH_M, BIN_INNER_M, BIN_WALL_HEIGHT_M, Cell
from testbed.sim.parts import PART_CATALOGUE

_BELT_RGBA = (0.15, 0.15, 0.15, 1.0)
_PEDESTAL_RGBA = (0.35, 0.35, 0.38, 1.0)
_PEDESTAL_SIDE_M = 0.28


def check_available(scenario: Scenario) -> None:
    """Before anything starts: a launch asking for ROS 2 without the extra fails in one line.

    Raises:
        FeatureUnavailable: rclpy, a message package or the built tf2_msgs is missing.
    """
    if scenario.ros2.enabled:
        from testbed.ros2 import require_ros2

        require_ros2()


def cell_spec(scenario: Scenario, cell: Cell) -> Any:
    """The node's view of the built cell: robots (URDF, base, who commands them), boxes, cameras, parts."""
    from testbed.ros2 import BoxSpec, CameraSpec, CellSpec, PartShape, RobotSpec

    everyone = scenario.ros2.commands == "all"
    robots = tuple(
        RobotSpec(name=h.config.name, model=h.model.name, urdf_path=h.model.urdf_path,
                  joint_names=tuple(h.model.joint_names), tcp_link=h.model.tcp_link,
                  base_xyz=tuple(float(v) for v in h.config.base.xyz),  # type: ignore[arg-type]
                  base_rpy_deg=tuple(float(v) for v in h.config.base.rpy_deg),  # type: ignore[arg-type]
                  commandable=everyone or h.config.external)
        for h in cell.robots)
    boxes: list[Any] = []
    for h in cell.robots:
        x, y, z = h.base_pos
        if z > 0.01:
            boxes.append(BoxSpec(f"pedestal_{h.config.name}", (x, y, z / 2), (_PEDESTAL_SIDE_M, _PEDESTAL_SIDE_M, z),
                                 _PEDESTAL_RGBA))
    for st in cell.stations:
        length = st.belt_y_end - st.belt_y_start
        boxes.append(BoxSpec(f"conveyor_{st.index}", (st.belt_x, (st.belt_y_start + st.belt_y_end) / 2, st.top_z / 2),
                             (BELT_WIDTH_M, length, st.top_z), _BELT_RGBA))
        type_of = {bin_name: part_type for part_type, bin_name in st.bin_for_type.items()}
        for name, (bx, by, bz) in st.bins.items():
            r, g, b, _ = PART_CATALOGUE[type_of[name]].rgba if name in type_of else (0.6, 0.6, 0.6, 1.0)
            boxes.append(BoxSpec(name, (bx, by, bz + BIN_WALL_HEIGHT_M / 2),
                                 (BIN_INNER_M + 0.01, BIN_INNER_M + 0.01, BIN_WALL_HEIGHT_M), (r, g, b, 0.5)))
    cameras = tuple(CameraSpec(c.name, c.width, c.height, c.fov_deg, tuple(c.eye), tuple(c.target))  # type: ignore[arg-type]
                    for c in scenario.cell.cameras)
    shapes = tuple((name, PartShape(tuple(k.size_m), tuple(k.rgba)))  # type: ignore[arg-type]
                   for name, k in PART_CATALOGUE.items())
    return CellSpec(scenario.name, robots, tuple(boxes), cameras, shapes)


def part_poses(cell: Cell) -> list[dict[str, Any]]:
    """Parts in play (not parked) with their world pose ``[x, y, z, qx, qy, qz, qw]``, for the live snapshot."""
    out = []
    for slot in cell.parts:
        if slot.status == "parked":
            continue
        pos, orn = p.getBasePositionAndOrientation(slot.body, physicsClientId=cell.client)
        out.append({"type": slot.kind.name, "status": slot.status, "pose": [*pos, *orn]})
    return out


class RunRos2:
    """The started node of a run and what the run loop asks of it (never blocking).

    Args:
        bridge: the started ``testbed.ros2.Ros2Bridge``.
        rate_hz: the node's publishing rate (the live snapshot is kept at least this fresh).
    """

    def __init__(self, bridge: Any, rate_hz: float) -> None:
        self.bridge = bridge
        self.rate_hz = rate_hz

    def drain(self, events: EventStream, t: float, episode: int | None) -> None:
        """Emit what the node left for the run (refused commands, trajectory ends) into the run's stream."""
        self.bridge.outbox.drain(lambda e: events.emit(e.kind, t, episode, e.robot, **e.fields))

    def yielding(self, drivers: list[Driver]) -> list[Driver]:
        """The drivers, each pausing while a ROS 2 trajectory drives its robot (``ros2.commands: all``)."""
        return [_Yielding(d, self.bridge.commanding) for d in drivers]


class _Yielding:
    """A driver that stands aside while a ROS 2 trajectory drives its robot; it resumes when that ends."""

    next_step = 0  # every step: a ROS 2 trajectory may end at any step

    def __init__(self, inner: Driver, commanding: Callable[[str], bool]) -> None:
        self.inner = inner
        self.index = inner.index
        self.name = inner.name
        self._commanding = commanding

    def reset(self, ep: Episode) -> None:
        self.inner.reset(ep)

    def cycle(self, ep: Episode, step: int, t: float, measured: np.ndarray) -> None:
        if not self._commanding(self.name):
            self.inner.cycle(ep, step, t, measured)

    def finish(self, ep: Episode, t: float, measured: np.ndarray) -> None:
        self.inner.finish(ep, t, measured)


def start_ros2(scenario: Scenario, cell: Cell, events: EventStream, backend: Any, stack: ExitStack) -> RunRos2 | None:
    """Start the run's node when ``ros2.enabled`` (closed, and its thread joined, when ``stack`` unwinds)."""
    cfg = scenario.ros2
    if not cfg.enabled:
        return None
    from testbed.ros2 import Ros2Bridge, Ros2Settings

    settings = Ros2Settings.of(cfg)
    bridge = Ros2Bridge(settings, cell_spec(scenario, cell), events, backend)
    stack.enter_context(bridge)
    return RunRos2(bridge, cfg.rate_hz)


__all__ = ["RunRos2", "cell_spec", "check_available", "part_poses", "start_ros2"]
