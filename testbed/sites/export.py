"""``testbed datasets export``: a dataset leaves its site, with the rules applied before it goes.

Every field of the dataset is decided from its card's class under the law of the origin's jurisdiction
(profile rules) and the card's own terms; the most restrictive decision wins. Fields are then dropped,
pseudonymized (keyed hash, key kept at the origin site), coarsened or aggregated, and the output gets a
new card saying what was done under which rule, plus ``export_report.json`` with every decision.

Supported: raw order logs (``orders.csv`` + ``card.yaml``), imported order datasets (``orders.parquet``) and
LeRobot datasets (allow and drop only: their features are arrays).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from testbed.data.card import CARD_FILENAME, DatasetCard, load_card, save_card
from testbed.data.inspect import RAW_LOG_FILENAME, dataset_kind
from testbed.data.orders import ORDERS_FILENAME
from testbed.errors import ComplianceDenied, DatasetError
from testbed.scenario.schema import ConditionRecord
from testbed.sites.keys import load_or_create_key
from testbed.sites.profile import Citation, Profiles, Transformation
from testbed.sites.rules import Decision, decide, decide_terms, most_restrictive
from testbed.sites.transform import Pseudonymizer, transform_column

REPORT_FILENAME = "export_report.json"
REQUESTED = "requested-drop"
# columns an imported order table adds to the log's own: each is as sensitive as the column it comes from
DERIVED_COLUMNS: Mapping[str, str | None] = {"row": None, "utc_offset_min": "timestamp",
                                             "part_type_raw": "part_type"}
LEROBOT_BOOKKEEPING = frozenset({"timestamp", "frame_index", "episode_index", "index", "task_index"})


@dataclass(frozen=True)
class FieldExport:
    """What happened to one field.

    Args:
        field: its name.
        classes: its data classes.
        decision: the governing decision.
        considered: every decision weighed.
    """

    field: str
    classes: tuple[str, ...]
    decision: Decision
    considered: tuple[Decision, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, as in ``export_report.json``."""
        d = self.decision
        return {
            "field": self.field,
            "classes": list(self.classes),
            "action": d.label,
            "rule": d.rule_id,
            "citation": d.citation.short() if d.citation is not None else None,
            "condition": f"{d.condition_ref.kind}:{d.condition_ref.ref}" if d.condition_ref else None,
            "reason": d.reason,
            "considered": [{"rule": c.rule_id, "class": c.data_class, "action": c.label} for c in self.considered],
        }


@dataclass(frozen=True)
class ExportReport:
    """The result of an export.

    Args:
        source: the dataset exported.
        out: the directory written.
        kind: ``order_log``, ``orders`` or ``lerobot``.
        origin_site: where the data was collected (its card's origin).
        from_jurisdiction: the origin's jurisdiction.
        to_site: the destination site.
        to_jurisdiction: the destination's jurisdiction.
        fields: one entry per field, in the data's order.
        key_id: the public fingerprint of the origin site's pseudonymization key, if one was used.
        aggregates: column -> summary, for aggregated columns.
    """

    source: str
    out: str
    kind: str
    origin_site: str
    from_jurisdiction: str
    to_site: str
    to_jurisdiction: str
    fields: tuple[FieldExport, ...]
    key_id: str | None = None
    aggregates: Mapping[str, Any] | None = None

    def by_action(self) -> dict[str, list[str]]:
        """Field names per action (allow, drop, pseudonymize, ...)."""
        out: dict[str, list[str]] = {}
        for f in self.fields:
            out.setdefault(f.decision.label, []).append(f.field)
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, as written to ``export_report.json``."""
        return {
            "source": self.source,
            "kind": self.kind,
            "origin_site": self.origin_site,
            "from_jurisdiction": self.from_jurisdiction,
            "to_site": self.to_site,
            "to_jurisdiction": self.to_jurisdiction,
            "pseudonymization_key_id": self.key_id,
            "pseudonymization_key_kept_at": self.origin_site if self.key_id else None,
            "fields": [f.to_json() for f in self.fields],
            "aggregates": dict(self.aggregates or {}),
        }


def export_dataset(
    source: str | Path,
    out: str | Path,
    *,
    to_site: str,
    to_jurisdiction: str,
    profiles: Profiles,
    conditions: Mapping[str, ConditionRecord] | None = None,
    drop: Sequence[str] = (),
    key_file: str | Path | None = None,
) -> ExportReport:
    """Export a dataset to a site in ``to_jurisdiction`` with the transfer rules applied.

    Args:
        source: a dataset directory with ``card.yaml``.
        out: the directory to write (must not exist, or be empty).
        to_site: the destination site's name (recorded).
        to_jurisdiction: the destination's jurisdiction.
        profiles: the rules.
        conditions: records meeting rules' conditions, by rule id.
        drop: fields the exporter chooses to leave behind.
        key_file: the origin site's pseudonymization key (default: ``testbed.sites.keys`` for its site).

    Returns:
        the report, also written as ``out/export_report.json``.

    Raises:
        ComplianceDenied: a field may not leave (names the field, the rule and its citation), or the terms
            let nothing leave.
        DatasetError: the source is not a dataset, a field has no data class, or ``out`` is not empty.
    """
    source, out = Path(source), Path(out)
    kind = dataset_kind(source)
    card = load_card(source)
    conditions = dict(conditions or {})
    columns = _fields_of(source, kind)
    unknown = [c for c in drop if c not in columns]
    if unknown:
        raise DatasetError(f"--drop {unknown[0]}: not a field of {source} (fields: {', '.join(columns)})")
    fields = tuple(_decide_field(name, card, to_jurisdiction, profiles, conditions, name in drop) for name in columns)
    refused = [f for f in fields if f.decision.action == "deny"]
    if refused:
        first = refused[0]
        d = first.decision
        more = f" (+{len(refused) - 1} more)" if len(refused) > 1 else ""
        hint = f"; record it with --condition {d.rule_id}={d.condition.any_of[0]}:REF" if (
            d.condition is not None and d.condition_ref is None) else ""
        raise ComplianceDenied(
            f"{source}: field {first.field} ({', '.join(first.classes)}) may not go from {card.origin.site} "
            f"[{card.origin.jurisdiction}] to {to_site} [{to_jurisdiction}]: denied by {d.cited()}: {d.reason}"
            f"{hint}; or leave it behind with --drop {first.field}{more}"
        )
    if all(f.decision.label in ("drop", "aggregate") for f in fields):
        raise ComplianceDenied(f"{source}: no field may go from {card.origin.site} [{card.origin.jurisdiction}] to "
                               f"{to_site} [{to_jurisdiction}]; nothing to export")
    _prepare_out(out)
    pseudonymizer = None
    if any(f.decision.label == "pseudonymize" for f in fields):
        pseudonymizer = Pseudonymizer(load_or_create_key(card.origin.site, key_file), card.origin.site)
    decided = {f.field: f.decision.transformation for f in fields}
    if kind == "order_log":
        aggregates = _export_csv(source / RAW_LOG_FILENAME, out / RAW_LOG_FILENAME, decided, pseudonymizer)
    elif kind == "orders":
        aggregates = _export_parquet(source / ORDERS_FILENAME, out / ORDERS_FILENAME, decided, pseudonymizer)
    else:
        aggregates = _export_lerobot(source, out, decided)
    report = ExportReport(str(source), str(out), kind, card.origin.site, str(card.origin.jurisdiction), to_site,
                          to_jurisdiction, fields, pseudonymizer.key_id if pseudonymizer else None, aggregates)
    save_card(_exported_card(card, report, source), out)
    (out / REPORT_FILENAME).write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return report


def _fields_of(source: Path, kind: str) -> list[str]:
    if kind == "order_log":
        with (source / RAW_LOG_FILENAME).open(newline="", encoding="utf-8-sig") as f:
            return [c.strip() for c in next(csv.reader(f), [])]
    if kind == "orders":
        return list(pq.read_schema(source / ORDERS_FILENAME).names)
    info = json.loads((source / "meta" / "info.json").read_text(encoding="utf-8"))
    return [k for k in info.get("features", {}) if k not in LEROBOT_BOOKKEEPING]


def _classes_of(name: str, card: DatasetCard) -> tuple[str, ...] | None:
    if name in card.data_classes:
        return (str(card.data_classes[name]),)
    if name in DERIVED_COLUMNS:
        parent = DERIVED_COLUMNS[name]
        if parent is None:
            return ("public",)  # a source line number carries nothing of the factory
        if parent in card.data_classes:
            return (str(card.data_classes[parent]),)
    return None


def _decide_field(
    name: str,
    card: DatasetCard,
    to_j: str,
    profiles: Profiles,
    conditions: Mapping[str, ConditionRecord],
    requested_drop: bool,
) -> FieldExport:
    classes = _classes_of(name, card)
    if classes is None:
        raise DatasetError(f"{CARD_FILENAME} data_classes: field {name!r} of the data has no data class, so no rule "
                           "can decide whether it may leave; add it to the card")
    from_j = str(card.origin.jurisdiction)
    considered = [decide(profiles.rules, c, from_j, to_j, conditions) for c in classes]
    for c in classes:
        terms = decide_terms(profiles, card, c, to_j, conditions)
        if terms is not None:
            considered.append(terms)
    decision = most_restrictive(considered)
    if requested_drop and decision.severity < 4:
        decision = Decision(classes[0], from_j, to_j, REQUESTED, "transform", Transformation(kind="drop"),
                            Citation(law="the exporter's choice", summary="left behind with --drop"),
                            reason="left behind on request (--drop)")
    return FieldExport(name, classes, decision, tuple(considered))


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: exists and is not an empty directory; export into a new directory")
    out.mkdir(parents=True, exist_ok=True)


def _export_csv(src: Path, dst: Path, decided: Mapping[str, Transformation | None],
                pseudonymizer: Pseudonymizer | None) -> dict[str, Any]:
    text = src.read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    width = len(header)
    body = [r + [""] * (width - len(r)) if len(r) < width else r[:width] for r in body]
    columns: list[tuple[str, list[Any]]] = []
    aggregates: dict[str, Any] = {}
    for i, name in enumerate(header):
        result = transform_column(name, [r[i] for r in body], decided[name], pseudonymizer)
        if result.summary is not None:
            aggregates[name] = result.summary
        if result.values is not None:
            columns.append((name, result.values))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([name for name, _ in columns])
    for j in range(len(body)):
        writer.writerow(["" if values[j] is None else values[j] for _, values in columns])
    dst.write_text(buffer.getvalue(), encoding="utf-8")
    return aggregates


def _export_parquet(src: Path, dst: Path, decided: Mapping[str, Transformation | None],
                    pseudonymizer: Pseudonymizer | None) -> dict[str, Any]:
    table = pq.read_table(src)
    kept: dict[str, pa.Array] = {}
    aggregates: dict[str, Any] = {}
    for name in table.column_names:
        change = decided[name]
        if change is None:
            kept[name] = table.column(name)
            continue
        result = transform_column(name, table.column(name).to_pylist(), change, pseudonymizer)
        if result.summary is not None:
            aggregates[name] = result.summary
        if result.values is not None:
            column_type = table.schema.field(name).type
            kept[name] = pa.array(result.values, pa.string() if change.kind == "pseudonymize" else column_type)
    meta = dict(table.schema.metadata or {})
    source_columns = json.loads(meta.get(b"testbed.source_columns", b"[]"))
    meta[b"testbed.source_columns"] = json.dumps([c for c in source_columns if c in kept]).encode()
    pq.write_table(pa.table(kept).replace_schema_metadata(meta), dst)
    return aggregates


def _export_lerobot(src: Path, dst: Path, decided: Mapping[str, Transformation | None]) -> dict[str, Any]:
    unsupported = {k: t.kind for k, t in decided.items() if t is not None and t.kind != "drop"}
    if unsupported:
        name, kind = next(iter(unsupported.items()))
        raise DatasetError(f"{src}: feature {name} would need {kind}, which LeRobot features (arrays) do not "
                           f"support here; leave it behind with --drop {name}")
    dropped = {k for k, t in decided.items() if t is not None}
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns(CARD_FILENAME))
    if not dropped:
        return {}
    for parquet in sorted((dst / "data").rglob("*.parquet")):
        table = pq.read_table(parquet)
        pq.write_table(table.drop_columns([c for c in table.column_names if c in dropped]), parquet)
    for parquet in sorted((dst / "meta").rglob("*.parquet")):
        table = pq.read_table(parquet)
        stale = [c for c in table.column_names if any(c.startswith(f"stats/{k}/") for k in dropped)]
        if stale:
            pq.write_table(table.drop_columns(stale), parquet)
    info_path = dst / "meta" / "info.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info["features"] = {k: v for k, v in info["features"].items() if k not in dropped}
    info_path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    stats_path = dst / "meta" / "stats.json"
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        stats_path.write_text(json.dumps({k: v for k, v in stats.items() if k not in dropped}, indent=2) + "\n",
                              encoding="utf-8")
    episodes_stats = dst / "meta" / "episodes_stats.jsonl"  # v2.1
    if episodes_stats.is_file():
        lines = []
        for line in episodes_stats.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            entry["stats"] = {k: v for k, v in entry.get("stats", {}).items() if k not in dropped}
            lines.append(json.dumps(entry))
        episodes_stats.write_text("\n".join(lines) + "\n", encoding="utf-8")
    videos = dst / "videos"  # v3.0: videos/<key>/..., v2.1: videos/chunk-000/<key>/...
    stale_videos = [p for p in videos.rglob("*") if p.is_dir() and p.name in dropped] if videos.is_dir() else []
    for video_dir in stale_videos:
        shutil.rmtree(video_dir, ignore_errors=True)
    return {}


def _exported_card(card: DatasetCard, report: ExportReport, source: Path) -> DatasetCard:
    kept = {f.field for f in report.fields if f.decision.label not in ("drop", "aggregate")}
    grouped: dict[tuple[str, str], list[FieldExport]] = {}
    for f in report.fields:
        if f.decision.label != "allow":
            grouped.setdefault((f.decision.label, f.decision.rule_id), []).append(f)
    done = []
    for (action, rule_id), group in grouped.items():
        citation = group[0].decision.citation
        cite = f" ({citation.short()})" if citation is not None else ""
        done.append(f"{_past(action)} {', '.join(f.field for f in group)} under {rule_id}{cite}")
    summary = "; ".join(done) if done else "every field sent as is"
    note = (f"{card.terms.note.strip()} " if card.terms.note.strip() else "") + (
        f"Exported on {dt.date.today().isoformat()} from {report.origin_site} [{report.from_jurisdiction}] to "
        f"{report.to_site} [{report.to_jurisdiction}]: {summary}. Pseudonymization key kept at "
        f"{report.origin_site}. Decisions per field: {REPORT_FILENAME}."
    )
    digest = _tree_digest(source)
    provenance = card.provenance.model_copy(update={
        "derived_from": f"{card.name} at {report.origin_site} (sha256 {digest[:16]})",
        "generator": f"testbed datasets export --to-site {report.to_site}",
    })
    classes = {k: v for k, v in card.data_classes.items() if k in kept}
    return card.model_copy(update={"data_classes": classes, "terms": card.terms.model_copy(update={"note": note}),
                                   "provenance": provenance})


def _past(action: str) -> str:
    return {"pseudonymize": "pseudonymized", "coarsen": "coarsened", "aggregate": "aggregated",
            "drop": "dropped"}[action]


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
