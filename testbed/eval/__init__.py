"""Running scenarios: the episode loop, its drivers, the event stream and the metrics.

Entry point: ``run_scenario(testbed.scenario.load(path, overrides))``. The names below are imported on
first use, so that evaluation workers can load their modules before pybullet (which prints on import).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"EventStream": "testbed.eval.events", "Subscription": "testbed.eval.events",
            "RunResult": "testbed.eval.runner", "run_scenario": "testbed.eval.runner"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'testbed.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
