"""Factory data: production-order logs, dataset cards, recording features, inspection and ROS 2 bag export.

LeRobot-format episodes live in ``testbed.data.lerobot``. Modules load lazily
through this namespace's attributes so that importing one part (e.g. the order
importer inside the run loop) does not pull in the others (rosbags, pybullet).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataClass": "testbed.data.card",
    "DatasetCard": "testbed.data.card",
    "Jurisdiction": "testbed.data.card",
    "load_card": "testbed.data.card",
    "save_card": "testbed.data.card",
    "ImportReport": "testbed.data.orders",
    "RowError": "testbed.data.orders",
    "import_orders": "testbed.data.orders",
    "load_order_workload": "testbed.data.orders",
    "read_orders": "testbed.data.orders",
    "check_dataset": "testbed.data.inspect",
    "describe_dataset": "testbed.data.inspect",
    "episode_features": "testbed.data.record",
    "BagExport": "testbed.data.bag",
    "export_bag": "testbed.data.bag",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'testbed.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
