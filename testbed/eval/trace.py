"""Joint states at the policy rate, kept for bag export and plots: ``joint_states.parquet``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pybullet as p


class JointTrace:
    """Collects (t, episode, robot, positions, commands, TCP pose) rows and writes them once at the end."""

    def __init__(self, path: Path, cell: Any) -> None:
        self.path = path
        self._cell = cell
        self._written = False
        self._rows: dict[str, list] = {k: [] for k in ("t_s", "episode", "robot", "joint_names", "position",
                                                       "command", "tcp_pose_world")}

    def add(self, t_s: float, episode: int, robot: int, measured: np.ndarray, command: np.ndarray) -> None:
        handle = self._cell.robots[robot]
        n = handle.model.n_joints
        link = p.getLinkState(handle.body, handle.tcp_link, computeForwardKinematics=True,
                              physicsClientId=self._cell.client)
        rows = self._rows
        rows["t_s"].append(t_s)
        rows["episode"].append(episode)
        rows["robot"].append(handle.config.name)
        rows["joint_names"].append(list(handle.model.joint_names))
        rows["position"].append(measured[robot, :n].tolist())
        rows["command"].append(command[robot, :n].tolist())
        rows["tcp_pose_world"].append([*link[4], *link[5]])

    def close(self) -> None:
        """Write the rows gathered so far (once; later calls do nothing)."""
        if self._written:
            return
        self._written = True
        schema = pa.schema([("t_s", pa.float64()), ("episode", pa.int32()), ("robot", pa.string()),
                            ("joint_names", pa.list_(pa.string())), ("position", pa.list_(pa.float64())),
                            ("command", pa.list_(pa.float64())), ("tcp_pose_world", pa.list_(pa.float64()))])
        # a signal between two of add's appends leaves one row short in some columns: drop that row
        rows = min(len(column) for column in self._rows.values())
        columns = {name: column[:rows] for name, column in self._rows.items()}
        pq.write_table(pa.table(columns, schema=schema), self.path)
