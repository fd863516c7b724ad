"""A policy for tests that writes down everything it receives (imported by ``testbed serve-policy`` via PYTHONPATH)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from testbed.policies.expert import ExpertPolicy


class RecordingExpert(ExpertPolicy):
    """The expert, appending each observation it receives (keys, dtypes, shapes and raw bytes) to ``out``."""

    def __init__(self, out: str, robot: str = "gp7", **kwargs: str) -> None:
        super().__init__(robot=robot, **kwargs)
        self._out = Path(out)

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        record = {key: {"dtype": str(v.dtype), "shape": list(v.shape), "bytes": v.tobytes().hex()}
                  for key, v in obs.items()}
        with self._out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return super().act(obs)
