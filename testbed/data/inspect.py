"""Describe and check any dataset directory: imported orders or LeRobot episodes.

``describe_dataset`` gives what ``testbed datasets info`` prints;
``check_dataset`` lists every problem ``testbed datasets validate`` reports.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from testbed.data.card import CARD_FILENAME, DatasetCard, card_to_dict, load_card
from testbed.data.orders import (
    ORDERS_FILENAME,
    REPORT_FILENAME,
    ImportReport,
    import_orders,
    read_orders,
    source_columns,
)
from testbed.errors import DatasetError
from testbed.scenario.workload import PART_TYPES

# LeRobot's bookkeeping columns carry no factory information, so cards need not classify them.
RAW_LOG_FILENAME = "orders.csv"
BOOKKEEPING_FEATURES = frozenset({"timestamp", "frame_index", "episode_index", "index", "task_index"})


def dataset_kind(path: Path) -> str:
    """``"orders"`` or ``"lerobot"`` from the files present.

    Raises:
        DatasetError: the directory is neither.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: not a directory")
    if (path / ORDERS_FILENAME).is_file():
        return "orders"
    if (path / "meta" / "info.json").is_file():
        return "lerobot"
    if (path / RAW_LOG_FILENAME).is_file():
        return "order_log"
    raise DatasetError(f"{path}: neither an order dataset ({ORDERS_FILENAME}), a raw order log ({RAW_LOG_FILENAME}) "
                       "nor a LeRobot dataset (meta/info.json)")


@contextmanager
def _imported(path: Path) -> Iterator[tuple[Path, ImportReport]]:
    """A raw ``orders.csv`` (with its ``card.yaml``) imported into a scratch directory, for reading only."""
    with tempfile.TemporaryDirectory() as scratch:
        yield Path(scratch), import_orders(path / RAW_LOG_FILENAME, Path(scratch))


def _order_log_summary(path: Path) -> dict[str, Any]:
    with _imported(path) as (scratch, report):
        summary = _order_summary(scratch)
    summary.update(kind="order_log", source=RAW_LOG_FILENAME, rows_total=report.rows_total,
                   rejected_rows=report.rows_rejected)
    return summary


def _order_log_problems(path: Path) -> list[str]:
    try:
        with _imported(path) as (_, report):
            pass
    except DatasetError as exc:
        return [str(exc)]
    problems = [f"{path}/{line}" for line in report.error_lines()]
    card, card_problems = _card_problems(path, _csv_columns(path / RAW_LOG_FILENAME))
    if card is not None and card.kind != "orders":
        card_problems.append(f"{path / CARD_FILENAME} kind: expected 'orders' for an order log, got {card.kind!r}")
    return problems + card_problems


def _csv_columns(csv_path: Path) -> list[str]:
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        return [c.strip() for c in next(csv.reader(f), [])]


def _order_summary(path: Path) -> dict[str, Any]:
    table = read_orders(path)
    micros = table.column("timestamp").cast(pa.int64()).to_numpy()
    part_types = table.column("part_type").to_pylist()
    summary: dict[str, Any] = {
        "kind": "orders",
        "orders": table.num_rows,
        "work_orders": len(set(table.column("work_order").to_pylist())),
        "part_types": {p: part_types.count(p) for p in sorted(set(part_types))},
        "span_s": float((micros.max() - micros.min()) * 1e-6) if len(micros) else 0.0,
        "first": str(table.column("timestamp")[0]) if table.num_rows else None,
        "columns": source_columns(table),
    }
    report = path / REPORT_FILENAME
    if report.is_file():
        summary["rejected_rows"] = json.loads(report.read_text()).get("rows_rejected")
    return summary


def _lerobot_summary(path: Path) -> dict[str, Any]:
    from testbed.data.lerobot import read_dataset

    ds = read_dataset(path)
    return {
        "kind": "lerobot",
        "codebase_version": ds.version,
        "robot_type": ds.info.get("robot_type"),
        "fps": ds.fps,
        "episodes": ds.num_episodes,
        "frames": ds.num_frames,
        "tasks": sorted(ds.tasks.values()),
        "features": {k: {"dtype": f.dtype, "shape": list(f.shape)} for k, f in ds.features.items()},
    }


def describe_dataset(path: Path) -> dict[str, Any]:
    """Card and counts of a dataset directory, JSON-ready.

    Raises:
        DatasetError: the directory is not a dataset or cannot be read.
    """
    path = Path(path)
    kind = dataset_kind(path)
    summarize = {"orders": _order_summary, "order_log": _order_log_summary, "lerobot": _lerobot_summary}[kind]
    summary = summarize(path)
    summary["card"] = card_to_dict(load_card(path)) if (path / CARD_FILENAME).is_file() else None
    return summary


def _card_problems(path: Path, fields: list[str]) -> tuple[DatasetCard | None, list[str]]:
    try:
        card = load_card(path)
    except DatasetError as exc:
        return None, str(exc).splitlines()
    return card, [f"{path / CARD_FILENAME} {p}" for p in card.field_problems(fields)]


def _order_problems(path: Path) -> list[str]:
    try:
        table = read_orders(path)
    except DatasetError as exc:
        return [str(exc)]
    problems = []
    unknown = sorted(set(table.column("part_type").to_pylist()) - set(PART_TYPES))
    if unknown:
        problems.append(f"{path / ORDERS_FILENAME} column part_type: unknown to the cell: {', '.join(unknown)}")
    rows = table.column("row").to_pylist()
    if len(set(rows)) != len(rows):
        problems.append(f"{path / ORDERS_FILENAME} column row: source rows repeat")
    part_ids = table.column("part_id").to_pylist()
    if len(set(part_ids)) != len(part_ids):
        problems.append(f"{path / ORDERS_FILENAME} column part_id: part ids repeat")
    report_path = path / REPORT_FILENAME
    if not report_path.is_file():
        problems.append(f"{report_path}: missing (written by `testbed datasets import-orders`)")
    else:
        imported = json.loads(report_path.read_text()).get("rows_imported")
        if imported != table.num_rows:
            problems.append(f"{report_path} rows_imported: says {imported}, {ORDERS_FILENAME} has {table.num_rows}")
    card, card_problems = _card_problems(path, source_columns(table))
    if card is not None and card.kind != "orders":
        card_problems.append(f"{path / CARD_FILENAME} kind: expected 'orders' for an order dataset, got {card.kind!r}")
    return problems + card_problems


def _lerobot_problems(path: Path) -> list[str]:
    from testbed.data.lerobot import read_dataset, validate_dataset

    problems = list(validate_dataset(path))
    try:
        fields = [k for k in read_dataset(path).features if k not in BOOKKEEPING_FEATURES]
    except DatasetError as exc:  # validate_dataset has named it already, maybe with a relative path
        return problems if any(p in str(exc) for p in problems) else [*problems, str(exc)]
    card, card_problems = _card_problems(path, fields)
    if card is not None and card.kind not in ("episodes", "run"):
        card_problems.append(
            f"{path / CARD_FILENAME} kind: expected 'episodes' for a LeRobot dataset, got {card.kind!r}"
        )
    return problems + card_problems


def check_dataset(path: Path) -> list[str]:
    """Every problem of a dataset directory (structure, schema, stats, card), each located.

    Returns:
        an empty list when the dataset is sound.
    """
    path = Path(path)
    try:
        kind = dataset_kind(path)
    except DatasetError as exc:
        return [str(exc)]
    check = {"orders": _order_problems, "order_log": _order_log_problems, "lerobot": _lerobot_problems}[kind]
    return check(path)
