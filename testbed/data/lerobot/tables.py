"""Small metadata tables: ``meta/tasks.parquet`` written and read without pandas.

LeRobot writes tasks with pandas: the task text is the frame's index and
``task_index`` its one column. We write the same layout (the pandas schema
metadata names the index column) so ``pandas.read_parquet`` gives LeRobot the
index it expects, and read both that layout and a plain ``task`` column.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from testbed.errors import DatasetError

_INDEX_COLUMN = "__index_level_0__"


def tasks_table(tasks: list[str]) -> pa.Table:
    """Tasks in order of their index, as LeRobot's pandas frame would store them."""
    pandas_meta = {
        "index_columns": [_INDEX_COLUMN],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": _INDEX_COLUMN,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema(
        [("task_index", pa.int64()), (_INDEX_COLUMN, pa.string())],
        metadata={b"pandas": json.dumps(pandas_meta).encode()},
    )
    return pa.Table.from_arrays([pa.array(range(len(tasks)), pa.int64()), pa.array(tasks, pa.string())], schema=schema)


def read_parquet(path: Path, what: str = "parquet file") -> pa.Table:
    """Read a whole parquet file, raising ``DatasetError`` that names it if it is missing or unreadable.

    Args:
        path: the file.
        what: what the file is, for the message (e.g. ``"data file"``).
    """
    if not path.exists():
        raise DatasetError(f"{path}: {what} is missing")
    try:
        return pq.read_table(path, memory_map=True)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: {what} is not readable parquet (truncated or corrupt?): {exc}") from exc


def read_tasks_parquet(path: Path) -> dict[int, str]:
    """task_index -> task text from a v3.0 ``meta/tasks.parquet``.

    Raises:
        DatasetError: naming the file if it is missing or has no task text column.
    """
    table = read_parquet(path, "tasks file")
    text_column = next((c for c in ("task", _INDEX_COLUMN) if c in table.column_names), None)
    if text_column is None and table.schema.metadata and b"pandas" in table.schema.metadata:
        index_columns = json.loads(table.schema.metadata[b"pandas"]).get("index_columns", [])
        text_column = next((c for c in index_columns if isinstance(c, str) and c in table.column_names), None)
    if "task_index" not in table.column_names or text_column is None:
        raise DatasetError(f"{path}: expected columns task_index and the task text (task or pandas index)")
    indices = table.column("task_index").to_pylist()
    texts = table.column(text_column).to_pylist()
    return {int(i): str(t) for i, t in zip(indices, texts, strict=True)}
