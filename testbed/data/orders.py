"""Production-order logs (CSV) -> validated order datasets -> conveyor workloads.

A factory log is one CSV row per part released to the line, the way
manufacturing data platforms export process data. ``import_orders`` checks
every row (each problem located by row and column), keeps the good rows in
``orders.parquet``, reports the bad ones in ``import_report.json`` and copies
the dataset card. ``load_order_workload`` turns an imported directory into
the ``PartArrival`` list the conveyor plays. The column set is documented in
``datasets/README.md``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from testbed.data.card import DatasetCard, load_card, save_card
from testbed.errors import DatasetError
from testbed.scenario.workload import PART_TYPES, PartArrival

ORDERS_FILENAME = "orders.parquet"
REPORT_FILENAME = "import_report.json"
ORDERS_FORMAT_VERSION = "1"

# Names factory systems use for the part families the cell knows (matched case-insensitively).
PART_TYPE_ALIASES: Mapping[str, str] = {
    "cap": "capacitor",
    "mlcc": "capacitor",
    "e-cap": "capacitor",
    "conn": "connector",
    "cnt": "connector",
    "b2b": "connector",
    "mod": "module",
    "pcba": "module",
}

SHIFTS = ("A", "B", "C")
MAX_DIMENSION_MM = 1000.0
MAX_WEIGHT_G = 50_000.0
MAX_LINE_SPEED_M_MIN = 120.0


class _CellError(ValueError):
    """One cell failed its check; the message says what was expected and what arrived."""


def _text(value: str) -> str:
    value = value.strip()
    if not value:
        raise _CellError("expected a value, got an empty cell")
    return value


def _optional_text(value: str) -> str | None:
    return value.strip() or None


def _number(upper: float, unit: str) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value.strip())
        except ValueError:
            raise _CellError(f"expected a positive number, got {value!r}") from None
        if not math.isfinite(number) or number <= 0:
            raise _CellError(f"expected a positive number, got {value!r}")
        if number > upper:
            raise _CellError(f"expected at most {upper:g} {unit}, got {value!r}")
        return number

    return parse


def _timestamp(value: str) -> dt.datetime:
    text = value.strip()
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _CellError(f"expected an ISO-8601 time like 2024-05-13T08:30:00+09:00, got {value!r}") from None
    if stamp.tzinfo is None:
        raise _CellError(f"expected a UTC offset (e.g. +09:00) in the time, got {value!r}")
    return stamp


def _part_type(value: str) -> str:
    key = value.strip().lower()
    if key in PART_TYPES:
        return key
    if key in PART_TYPE_ALIASES:
        return PART_TYPE_ALIASES[key]
    raise _CellError(
        f"unknown part type {value!r} (known: {', '.join(PART_TYPES)}; aliases: {', '.join(sorted(PART_TYPE_ALIASES))})"
    )


def _shift(value: str) -> str | None:
    text = value.strip().upper()
    if not text:
        return None
    if text not in SHIFTS:
        raise _CellError(f"expected a shift in {', '.join(SHIFTS)} or empty, got {value!r}")
    return text


@dataclass(frozen=True)
class _Column:
    parse: Callable[[str], Any]
    arrow_type: pa.DataType
    required: bool


# The log's columns, in export order. Documented in datasets/README.md.
COLUMNS: Mapping[str, _Column] = {
    "timestamp": _Column(_timestamp, pa.timestamp("us", tz="UTC"), True),
    "work_order": _Column(_text, pa.string(), True),
    "line": _Column(_text, pa.string(), True),
    "shift": _Column(_shift, pa.string(), False),
    "station": _Column(_optional_text, pa.string(), False),
    "part_id": _Column(_text, pa.string(), True),
    "part_type": _Column(_part_type, pa.string(), True),
    "length_mm": _Column(_number(MAX_DIMENSION_MM, "mm"), pa.float64(), True),
    "width_mm": _Column(_number(MAX_DIMENSION_MM, "mm"), pa.float64(), True),
    "height_mm": _Column(_number(MAX_DIMENSION_MM, "mm"), pa.float64(), True),
    "weight_g": _Column(_number(MAX_WEIGHT_G, "g"), pa.float64(), True),
    "target_bin": _Column(_text, pa.string(), True),
    "line_speed_m_min": _Column(_number(MAX_LINE_SPEED_M_MIN, "m/min"), pa.float64(), True),
    "lot_no": _Column(_optional_text, pa.string(), False),
    "operator_id": _Column(_optional_text, pa.string(), False),
}
REQUIRED_COLUMNS = tuple(name for name, col in COLUMNS.items() if col.required)


@dataclass(frozen=True)
class RowError:
    """One problem in one row of a log.

    Args:
        row: 1-based line number in the CSV file (the header is line 1).
        column: the column at fault, or ``None`` for the row as a whole.
        message: what was expected and what arrived.
    """

    row: int
    column: str | None
    message: str

    def located(self, source: str) -> str:
        """``source:row column name: message``, the form users see."""
        where = f" column {self.column}" if self.column else ""
        return f"{source}:{self.row}{where}: {self.message}"


@dataclass(frozen=True)
class ImportReport:
    """What ``import_orders`` kept and rejected.

    Args:
        source: the CSV path as given.
        out_dir: the written dataset directory.
        rows_total: data rows read (header excluded).
        rows_imported: rows written to ``orders.parquet``.
        errors: every problem found, located; a row with any error is rejected.
        warnings: non-fatal notes (ignored columns, mapped part-type names).
        part_type_counts: imported rows per canonical part type.
        source_sha256: hash of the CSV bytes, for provenance.
    """

    source: str
    out_dir: str
    rows_total: int
    rows_imported: int
    errors: tuple[RowError, ...] = ()
    warnings: tuple[str, ...] = ()
    part_type_counts: Mapping[str, int] = field(default_factory=dict)
    source_sha256: str = ""

    @property
    def rows_rejected(self) -> int:
        """Rows with at least one error."""
        return len({e.row for e in self.errors})

    def error_lines(self) -> list[str]:
        """Every error in ``file:row column c: message`` form."""
        name = Path(self.source).name
        return [e.located(name) for e in self.errors]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict, as written to ``import_report.json``."""
        data = asdict(self)
        data["rows_rejected"] = self.rows_rejected
        data["errors"] = [{**asdict(e), "text": e.located(Path(self.source).name)} for e in self.errors]
        data["warnings"] = list(self.warnings)
        return data


def _read_header(reader: Any, source: str) -> list[str]:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DatasetError(f"{source}:1: the file is empty; expected a header row") from None
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise DatasetError(f"{source}:1: duplicated column(s) {', '.join(duplicated)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DatasetError(
            f"{source}:1: missing required column(s) {', '.join(missing)} "
            f"(header has: {', '.join(header)}; see datasets/README.md)"
        )
    return header


def _resolve_card(csv_path: Path, card: DatasetCard | Path | None) -> DatasetCard:
    if isinstance(card, DatasetCard):
        return card
    card_path = Path(card) if card is not None else csv_path.parent / "card.yaml"
    if not card_path.exists():
        raise DatasetError(
            f"{csv_path}: no dataset card at {card_path}; put card.yaml beside the CSV or pass one with --card"
        )
    return load_card(card_path)


def import_orders(
    csv_path: Path,
    out_dir: Path,
    *,
    card: DatasetCard | Path | None = None,
    encoding: str = "utf-8-sig",
) -> ImportReport:
    """Validate a production-order CSV log and write it as an order dataset.

    Good rows go to ``out_dir/orders.parquet`` in file order, bad rows are listed
    in ``out_dir/import_report.json``; the card (``card`` or ``card.yaml`` beside
    the CSV) is copied to ``out_dir/card.yaml`` with its provenance filled in.

    Args:
        csv_path: the log; header row then one row per part (see ``COLUMNS``).
        out_dir: directory to create or overwrite the dataset in.
        card: a card, a path to one, or ``None`` to use ``card.yaml`` beside the CSV.
        encoding: text encoding of the CSV (Korean exports are often ``cp949``).

    Returns:
        the report; also written as ``import_report.json``.

    Raises:
        DatasetError: the file cannot be read, its header lacks a required
            column, the card is missing or invalid, or no row is valid.
    """
    csv_path, out_dir = Path(csv_path), Path(out_dir)
    source = csv_path.name
    try:
        raw = csv_path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{csv_path}: cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{csv_path}: not valid {encoding} text at byte {exc.start}; re-save it as UTF-8 "
            f"or pass the encoding (e.g. --encoding cp949)"
        ) from exc
    dataset_card = _resolve_card(csv_path, card)

    reader = csv.reader(text.splitlines(keepends=True))
    header = _read_header(reader, source)
    used = [c for c in COLUMNS if c in header]
    index = {name: header.index(name) for name in used}
    ignored = [h for h in header if h not in COLUMNS]
    warnings = [f"{source}:1: column(s) {', '.join(ignored)} not recognised, ignored"] if ignored else []

    values: dict[str, list[Any]] = {name: [] for name in used}
    rows: list[int] = []
    raw_types: list[str] = []
    offsets: list[int] = []
    errors: list[RowError] = []
    first_seen: dict[str, int] = {}
    rows_total = 0
    for cells in reader:
        row = reader.line_num
        if not any(c.strip() for c in cells):
            continue  # blank lines are not rows
        rows_total += 1
        if len(cells) != len(header):
            errors.append(RowError(row, None, f"expected {len(header)} fields, got {len(cells)}"))
            continue
        parsed: dict[str, Any] = {}
        row_errors = []
        for name in used:
            try:
                parsed[name] = COLUMNS[name].parse(cells[index[name]])
            except _CellError as exc:
                row_errors.append(RowError(row, name, str(exc)))
        part_id = parsed.get("part_id")
        if part_id is not None and part_id in first_seen:
            row_errors.append(
                RowError(row, "part_id", f"duplicate part id {part_id!r}, first at row {first_seen[part_id]}")
            )
        if row_errors:
            errors.extend(row_errors)
            continue
        first_seen[part_id] = row
        rows.append(row)
        raw_types.append(cells[index["part_type"]].strip())
        stamp: dt.datetime = parsed["timestamp"]
        offset = stamp.utcoffset() or dt.timedelta(0)
        offsets.append(int(offset.total_seconds() // 60))
        parsed["timestamp"] = stamp.astimezone(dt.UTC)
        for name in used:
            values[name].append(parsed[name])

    report = ImportReport(
        source=str(csv_path),
        out_dir=str(out_dir),
        rows_total=rows_total,
        rows_imported=len(rows),
        errors=tuple(errors),
        warnings=tuple(warnings),
        part_type_counts=dict(sorted(Counter(values["part_type"]).items())),
        source_sha256=hashlib.sha256(raw).hexdigest(),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_FILENAME).write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    if not rows:
        raise DatasetError(
            f"{csv_path}: no valid rows ({len(errors)} problem(s)); first: {report.error_lines()[0]}"
            if errors
            else f"{csv_path}: no data rows after the header"
        )

    columns: dict[str, pa.Array] = {"row": pa.array(rows, pa.int32())}
    for name in used:
        columns[name] = pa.array(values[name], COLUMNS[name].arrow_type)
        if name == "timestamp":
            columns["utc_offset_min"] = pa.array(offsets, pa.int16())
        if name == "part_type":
            columns["part_type_raw"] = pa.array(raw_types, pa.string())
    metadata = {
        "testbed.orders_version": ORDERS_FORMAT_VERSION,
        "testbed.source_columns": json.dumps(used),
        "testbed.source": source,
    }
    table = pa.table(columns).replace_schema_metadata(metadata)
    pq.write_table(table, out_dir / ORDERS_FILENAME)

    provenance = dataset_card.provenance.model_copy(
        update={"derived_from": f"{source} (sha256 {report.source_sha256[:16]})"}
    )
    save_card(dataset_card.model_copy(update={"kind": "orders", "provenance": provenance}), out_dir)
    return report


def read_orders(dataset_dir: Path) -> pa.Table:
    """The imported orders table of ``dataset_dir``, in log order.

    Raises:
        DatasetError: ``orders.parquet`` is missing or not an order table.
    """
    path = Path(dataset_dir) / ORDERS_FILENAME
    if not path.is_file():
        raise DatasetError(f"{path}: not found; import a log first with `testbed datasets import-orders`")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: not a readable parquet file: {exc}") from exc
    missing = [c for c in ("row", *REQUIRED_COLUMNS) if c not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def source_columns(table: pa.Table) -> list[str]:
    """The CSV columns an imported table came from (its card's fields)."""
    meta = table.schema.metadata or {}
    raw = meta.get(b"testbed.source_columns")
    return list(json.loads(raw)) if raw else [c for c in COLUMNS if c in table.column_names]


def load_order_workload(dataset_dir: Path, *, time_scale: float = 1.0, limit: int | None = None) -> list[PartArrival]:
    """Part arrivals from an imported order dataset, in time order.

    Args:
        dataset_dir: a directory written by ``import_orders``.
        time_scale: factor applied to the log's time gaps; ``0.1`` plays the
            log ten times faster than it happened.
        limit: keep only the first ``limit`` arrivals.

    Returns:
        one ``PartArrival`` per order, ``t_s`` relative to the first order,
        ``order_id`` the work order. ``bin`` is left ``None``: the cell sorts by
        part type, the factory's own bin code stays in ``orders.parquet``.

    Raises:
        DatasetError: the directory holds no order table, or the arguments are out of range.
    """
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise DatasetError(f"workload.orders time_scale: expected a positive number, got {time_scale!r}")
    if limit is not None and limit < 1:
        raise DatasetError(f"workload.orders limit: expected a positive integer or none, got {limit!r}")
    table = read_orders(dataset_dir).sort_by([("timestamp", "ascending"), ("row", "ascending")])
    if limit is not None:
        table = table.slice(0, limit)
    micros = table.column("timestamp").cast(pa.int64()).to_numpy()
    if len(micros) == 0:
        return []
    t_s = (micros - micros[0]) * 1e-6 * time_scale
    part_types = table.column("part_type").to_pylist()
    unknown = sorted(set(part_types) - set(PART_TYPES))
    if unknown:
        raise DatasetError(
            f"{Path(dataset_dir) / ORDERS_FILENAME}: part type(s) {', '.join(unknown)} unknown to the cell "
            f"(known: {', '.join(PART_TYPES)})"
        )
    orders = table.column("work_order").to_pylist()
    return [PartArrival(t_s=float(t), part_type=p, order_id=o) for t, p, o in zip(t_s, part_types, orders, strict=True)]
