"""Events the control loop records: state transitions, stops, refused and clamped commands."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ControlEvent:
    """One thing that happened in the control loop.

    Args:
        t_s: control time (simulated or wall seconds, whatever ``tick`` is given) it happened at.
        robot: index of the robot in the loop.
        kind: ``state_change``, ``protective_stop``, ``emergency_stop``, ``fault``,
            ``command_rejected``, ``limit_clamped`` or ``tcp_speed_limited`` (the loop started holding
            the robot to its TCP speed limit: ``limit_m_s``, ``commanded_bound_m_s``).
        detail: JSON-friendly facts about it (``reason``, ``from``/``to`` states, joint indices, ...).
    """

    t_s: float
    robot: int
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)
