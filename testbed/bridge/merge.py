"""Merging a newly arrived action chunk with the one still executing (asynchronous inference).

Rows are tagged with the policy step they apply at: row k of a chunk computed for
step s applies at step s + k. Where the new chunk and the executing one cover the
same steps, the rule decides the row sent to the controller, as LeRobot's
asynchronous inference aggregates overlapping chunks:

- ``latest``: the new chunk's row (the newest observation wins);
- ``average``: the mean of the two rows;
- ``weighted``: ``(1 - weight) * old + weight * new``, leaning towards the new chunk for weight > 0.5.
"""

from __future__ import annotations

import numpy as np

from testbed.errors import BridgeConfigError, SpecMismatch
from testbed.policies.source import ActionChunk

MERGE_RULES = ("latest", "average", "weighted")


def merge_chunks(
    executing: np.ndarray, executing_step: int, new: ActionChunk, rule: str = "latest", weight: float = 0.5
) -> np.ndarray:
    """Merge ``new`` into the executing chunk over the steps both cover.

    Args:
        executing: float32 ``(n, action_dim)``; row 0 applies at ``executing_step``.
        executing_step: policy step of ``executing[0]``.
        new: the arriving chunk; its row 0 applies at ``new.step``.
        rule: one of ``MERGE_RULES``.
        weight: share of the new row under ``weighted``, in [0, 1].

    Returns:
        float32 ``(len(new.actions), action_dim)`` aligned with ``new``: row k applies at
        ``new.step + k``. Rows outside the overlap are the new chunk's own rows. The caller
        drops rows for steps already executed.

    Raises:
        BridgeConfigError: unknown rule or weight outside [0, 1].
        SpecMismatch: the two chunks differ in action dimension.
    """
    if rule not in MERGE_RULES:
        raise BridgeConfigError(f"policy merge rule {rule!r}: expected one of {', '.join(MERGE_RULES)}")
    if not 0.0 <= weight <= 1.0:
        raise BridgeConfigError(f"policy merge weight {weight}: expected a number in [0, 1]")
    fresh = np.asarray(new.actions, dtype=np.float32)
    old = np.asarray(executing, dtype=np.float32)
    if old.ndim != 2 or fresh.ndim != 2 or old.shape[1] != fresh.shape[1]:
        raise SpecMismatch(
            f"merge_chunks: executing chunk {old.shape} and new chunk {fresh.shape} differ in action_dim"
        )
    out = fresh.copy()
    if rule == "latest":
        return out
    # overlap in steps: [max(starts), min(ends))
    start = max(executing_step, new.step)
    stop = min(executing_step + old.shape[0], new.step + fresh.shape[0])
    if stop <= start:
        return out
    old_rows = old[start - executing_step : stop - executing_step]
    new_rows = fresh[start - new.step : stop - new.step]
    share = 0.5 if rule == "average" else weight
    out[start - new.step : stop - new.step] = (1.0 - share) * old_rows + share * new_rows
    return out
