"""Part arrivals: what the conveyor delivers and when."""

from __future__ import annotations

from dataclasses import dataclass

# The cell knows these part types; each has its own bin.
PART_TYPES: tuple[str, ...] = ("capacitor", "connector", "module")


@dataclass(frozen=True)
class PartArrival:
    """One part placed on the conveyor's infeed at episode time ``t_s``.

    Args:
        t_s: seconds after episode start.
        part_type: one of ``PART_TYPES``.
        order_id: the work order it came from (free text, recorded in events).
        bin: target bin name; defaults to the bin of its type.
    """

    t_s: float
    part_type: str
    order_id: str = ""
    bin: str | None = None
