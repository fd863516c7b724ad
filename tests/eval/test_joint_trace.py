"""The joint trace keeps every whole row, even when a signal stopped ``add`` halfway through one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from testbed.eval.trace import JointTrace
from testbed.scenario.schema import CellConfig
from testbed.scenario.workload import PartArrival
from testbed.sim.cell import Cell, build_cell


@pytest.fixture
def cell() -> Iterator[Cell]:
    built = build_cell(CellConfig(), 240.0, [[PartArrival(0.0, "capacitor")]])
    yield built
    built.close()


class _InterruptedRead:
    """Stands for the command array, read when Ctrl-C arrives."""

    def __getitem__(self, _index: object) -> np.ndarray:
        raise KeyboardInterrupt


def test_a_row_cut_short_by_an_interrupt_is_dropped_and_the_rest_written(cell: Cell, tmp_path: Path) -> None:
    trace = JointTrace(tmp_path / "joint_states.parquet", cell)
    measured = cell.read_joint_positions()
    for step in range(3):
        trace.add(step / 240.0, 0, 0, measured, measured)
    with pytest.raises(KeyboardInterrupt):
        trace.add(3 / 240.0, 0, 0, measured, _InterruptedRead())  # type: ignore[arg-type]
    trace.close()
    table = pq.read_table(tmp_path / "joint_states.parquet")
    assert table.num_rows == 3
    assert table.column("t_s").to_pylist() == [0.0, 1 / 240.0, 2 / 240.0]
