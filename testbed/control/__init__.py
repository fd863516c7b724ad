"""Industrial-style robot control: lifecycle, vectorized servo loop, safety limits.

Entry point: ``ControlLoop(models, dt_s)``; ``tick`` it once per control cycle.
"""

from testbed.control.events import ControlEvent
from testbed.control.lifecycle import Component, LifecycleState
from testbed.control.loop import ControllerComponent, ControlLoop
from testbed.control.model import RobotLimits

__all__ = [
    "Component",
    "ControlEvent",
    "ControlLoop",
    "ControllerComponent",
    "LifecycleState",
    "RobotLimits",
]
