"""An evaluation's durable results: ``results.jsonl`` appended per episode, ``results.parquet`` at the end.

Each finished episode is one JSON line, flushed and fsync'ed before the next is accepted, so a process
killed at any moment leaves every earlier episode on disk; a torn last line (killed mid-write) is ignored
when read and cut off before the journal is appended to again, by the same rule (``_complete_end``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from testbed.errors import ResultsError

RESULTS_JSONL = "results.jsonl"
RESULTS_PARQUET = "results.parquet"

ROW_SCHEMA = pa.schema([
    ("episode_id", pa.string()),
    ("variation", pa.string()),
    ("variation_label", pa.string()),
    ("overrides", pa.string()),
    ("policy", pa.string()),
    ("seed", pa.int64()),
    ("episode", pa.int64()),
    ("success", pa.bool_()),
    ("end_reason", pa.string()),
    ("parts", pa.int64()),
    ("parts_placed", pa.int64()),
    ("parts_misplaced", pa.int64()),
    ("parts_dropped", pa.int64()),
    ("cycle_times_s", pa.list_(pa.float64())),
    ("cycle_time_s_mean", pa.float64()),
    ("sim_s", pa.float64()),
    ("collisions", pa.int64()),
    ("safety_stops", pa.int64()),
    ("policy_timeouts", pa.int64()),
    ("starved_steps", pa.int64()),
    ("late_chunks", pa.int64()),
    ("policy_latency_ms_p50", pa.float64()),
    ("policy_latency_ms_p95", pa.float64()),
    ("wall_s", pa.float64()),
    ("cpu_s", pa.float64()),
    ("worker", pa.string()),
])
COLUMNS = tuple(ROW_SCHEMA.names)
# what may differ between two runs of the same episode: where and how fast it ran
MEASURED = ("wall_s", "cpu_s", "worker", "policy_latency_ms_p50", "policy_latency_ms_p95")
OUTCOME_COLUMNS = tuple(c for c in COLUMNS if c not in MEASURED)
# the journal also keeps each episode's raw policy round trips (not a results column)
LATENCIES_KEY = "policy_latency_ms"
# the columns the workers leave null (no part placed, no policy round trip, not measured); the others are never null
NULLABLE = ("cycle_time_s_mean", "policy_latency_ms_p50", "policy_latency_ms_p95", "wall_s", "cpu_s")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_KINDS: dict[pa.DataType, tuple[str, Any]] = {  # a column's arrow type -> (what a JSON value must be, its check)
    pa.string(): ("a string", lambda v: isinstance(v, str)),
    pa.int64(): ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    pa.float64(): ("a number", _is_number),
    pa.bool_(): ("true or false", lambda v: isinstance(v, bool)),
    pa.list_(pa.float64()): ("a list of numbers", lambda v: isinstance(v, list) and all(_is_number(x) for x in v)),
}


def check_row(row: Any, where: str) -> dict[str, Any]:
    """``row`` if it is a result row: a JSON object with a string ``episode_id`` and each contract column present
    of its schema's type (null only where ``NULLABLE``), raw round trips a list of numbers or null.

    Columns a row lacks are not checked here (readers require their own, e.g. ``testbed compare``).

    Raises:
        ResultsError: naming ``where`` (``path:line``), the field, what was expected and what arrived.
    """
    if not isinstance(row, dict):
        raise ResultsError(f"{where}: expected a JSON object (one result row), got {type(row).__name__}")
    if "episode_id" not in row:
        raise ResultsError(f"{where}: expected a JSON object with an episode_id")
    if not isinstance(row["episode_id"], str) or not row["episode_id"]:
        raise ResultsError(f"{where}: episode_id: expected a string such as 'v0/default/0000', got "
                           f"{row['episode_id']!r}")
    for column in ROW_SCHEMA:
        if column.name not in row or (row[column.name] is None and column.name in NULLABLE):
            continue
        expected, fits = _KINDS[column.type]
        if not fits(row[column.name]):
            raise ResultsError(f"{where} (episode {row['episode_id']!r}): {column.name}: expected {expected}"
                               f"{' or null' if column.name in NULLABLE else ''}, got {row[column.name]!r}")
    raw = row.get(LATENCIES_KEY)
    if raw is not None and not _KINDS[pa.list_(pa.float64())][1](raw):
        raise ResultsError(f"{where} (episode {row['episode_id']!r}): {LATENCIES_KEY}: expected a list of numbers "
                           f"or null, got {raw!r}")
    return row


class Journal:
    """Appends result rows to ``results.jsonl``, each durable before ``append`` returns.

    Opening cuts off a torn last line left by a killed writer (the rule ``read_journal`` ignores it by), so new
    rows start on a line of their own and every row stays readable.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        _cut_torn_tail(path)
        self._file = path.open("a", encoding="utf-8")

    def append(self, row: dict[str, Any]) -> None:
        """Write one row as a line, flush and fsync it."""
        self._file.write(json.dumps(row, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _complete_end(data: bytes) -> int:
    """Where a journal's complete rows end: the one rule for a torn tail, shared by reading and appending.

    The text after the last newline was cut off mid-write; so was the last line before it when that line is
    not JSON (a killed writer's bytes that happened to end in a newline).
    """
    end = data.rfind(b"\n") + 1
    if end == 0:
        return 0
    start = data.rfind(b"\n", 0, end - 1) + 1  # the last line that ends in a newline
    last = data[start:end]
    if last.strip():
        try:
            json.loads(last)
        except ValueError:  # JSONDecodeError, or UnicodeDecodeError for a torn multi-byte character
            return start
    return end


def _cut_torn_tail(path: Path) -> None:
    """Truncate ``path`` after its last complete row (``_complete_end``), so an append starts a line of its own."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = _complete_end(data)
    if end != len(data):
        with path.open("r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every complete row in a journal, first occurrence of each ``episode_id`` kept, in file order.

    A torn tail (``_complete_end``: text after the last newline, and a last line that is not JSON) is ignored.

    Raises:
        ResultsError: a line before the torn tail is not JSON, or not a result row (``check_row``), naming its line.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(data[:_complete_end(data)].split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{path}:{number}: not a JSON row ({exc.msg}); expected one result per line") from exc
        except UnicodeDecodeError as exc:
            raise ResultsError(f"{path}:{number}: not a JSON row (not UTF-8: {exc.reason}); expected one result "
                               "per line") from exc
        row = check_row(row, f"{path}:{number}")
        rows.setdefault(row["episode_id"], row)
    return list(rows.values())


def result_rows(journal_rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The contract's columns of each row (the journal's extras dropped), sorted by episode_id."""
    return sorted(({c: r.get(c) for c in COLUMNS} for r in journal_rows), key=lambda r: r["episode_id"])


def write_parquet(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write rows (contract columns) to ``path`` with ``ROW_SCHEMA``, sorted by episode_id, atomically."""
    table = pa.Table.from_pylist(result_rows(rows), schema=ROW_SCHEMA)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_parquet(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``results.parquet``."""
    return pq.read_table(path).to_pylist()
