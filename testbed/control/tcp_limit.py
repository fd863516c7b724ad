"""The TCP speed limit a robot's controller settings ask to be monitored, shared by runs and the gym env."""

from __future__ import annotations

import math


def monitored_tcp_limit_m_s(*, reduced_speed: bool, reduced_limit_m_s: float,
                            tcp_speed_limit_m_s: float | None) -> float:
    """The lowest of the TCP speed limits that apply, ``inf`` when none does.

    Args:
        reduced_speed: the controller runs in reduced-speed mode, so the model's reduced limit applies.
        reduced_limit_m_s: the model's reduced-speed TCP limit (``reduced_tcp_speed_m_s``).
        tcp_speed_limit_m_s: an explicit limit from the settings (or a site profile), or None.

    An explicit limit tightens reduced-speed mode but never loosens it: with ``reduced_speed`` and
    a higher explicit limit, the reduced limit is the one monitored. The model's own
    ``tcp_speed_m_s`` is a capability figure, not a monitored limit, and is not considered.
    """
    limits = [math.inf]
    if reduced_speed:
        limits.append(float(reduced_limit_m_s))
    if tcp_speed_limit_m_s is not None:
        limits.append(float(tcp_speed_limit_m_s))
    return min(limits)
