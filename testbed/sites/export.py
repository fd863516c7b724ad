"""``testbed datasets export``: a dataset leaves its site, with the rules applied before it goes.

Every field of the dataset is decided from its card's class under the law of the origin's jurisdiction
(profile rules) and the card's own terms; the most restrictive decision wins. Fields are then dropped,
pseudonymized (keyed hash, key kept at the origin site), coarsened or aggregated, and the output gets a
new card saying what was done under which rule, plus ``export_report.json`` with every decision.

Supported: raw order logs (``orders.csv`` + ``card.yaml``), imported order datasets (``orders.parquet``) and
LeRobot datasets (allow and drop only: their features are arrays). Of a LeRobot dataset only the files the
format consists of leave, written from the decided features; a column or file that ``meta/info.json`` does not
declare is refused unless the exporter leaves it behind by name (``testbed.sites.lerobot_export``).

Every export attempt (allowed, refused, or failed on the way) is appended to a hash-chained audit log kept at
the origin: ``<dataset>.audit.jsonl`` beside the dataset directory unless ``audit=`` (``--audit FILE``) names
another. A default log that cannot be written refuses the export before anything is read or written: no export
goes unaudited. ``export_report.json`` lists what was left behind.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
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
from testbed.sites.audit import AuditError, AuditLog
from testbed.sites.keys import load_or_create_key
from testbed.sites.lerobot_export import Inventory, Undeclared, lerobot_inventory, write_lerobot
from testbed.sites.profile import Citation, Profiles, Transformation
from testbed.sites.rules import Decision, decide, decide_terms, most_restrictive
from testbed.sites.transform import Pseudonymizer, transform_column

REPORT_FILENAME = "export_report.json"
REQUESTED = "requested-drop"
UNDECLARED_LEFT = "not declared in meta/info.json features, so no rule decides it; left behind on request (--drop)"
# columns an imported order table adds to the log's own: each is as sensitive as the column it comes from
DERIVED_COLUMNS: Mapping[str, str | None] = {"row": None, "utc_offset_min": "timestamp",
                                             "part_type_raw": "part_type"}
LEROBOT_BOOKKEEPING = frozenset({"timestamp", "frame_index", "episode_index", "index", "task_index"})
AUDIT_SUFFIX = ".audit.jsonl"


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
        left_behind: what was not a declared field and stayed at the origin (LeRobot: undeclared columns,
            files, info keys), each with where it was found and why.
        files: the data and metadata files written (LeRobot), relative to ``out``.
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
    left_behind: tuple[Mapping[str, Any], ...] = ()
    files: tuple[str, ...] = ()

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
            "left_behind": [dict(x) for x in self.left_behind],
            "files": list(self.files),
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
    audit: str | Path | None = None,
) -> ExportReport:
    """Export a dataset to a site in ``to_jurisdiction`` with the transfer rules applied.

    Args:
        source: a dataset directory with ``card.yaml``.
        out: the directory to write (must not exist, or be empty).
        to_site: the destination site's name (recorded).
        to_jurisdiction: the destination's jurisdiction.
        profiles: the rules.
        conditions: records meeting rules' conditions, by rule id.
        drop: fields the exporter chooses to leave behind; for a LeRobot dataset also a column or file that
            ``meta/info.json`` does not declare (``operator_id``, ``orders.csv``), which is refused otherwise.
        key_file: the origin site's pseudonymization key (default: ``testbed.sites.keys`` for its site).
        audit: the hash-chained audit log (``testbed.sites.audit``) this attempt is appended to, whatever its
            outcome: ``dataset_export`` with the report, ``dataset_export_refused`` with the reason and what was
            refused, or ``dataset_export_failed`` with the error. Default: ``default_audit_path(source)``.

    Returns:
        the report, also written as ``out/export_report.json``.

    Raises:
        ComplianceDenied: a field may not leave (names the field, the rule and its citation), the terms
            let nothing leave, or a LeRobot dataset holds columns or files no feature declares (names each).
        DatasetError: the source is not a dataset, a field has no data class, or ``out`` is not empty.
        AuditError: the audit log cannot be opened or continued (nothing is exported).
    """
    source, out = Path(source), Path(out)
    kind = dataset_kind(source)  # not a dataset: nothing to export, nothing to audit
    had_files = out.is_dir() and any(out.iterdir())  # such an out is refused: whatever is in it is not ours
    log = _open_audit(source, audit)  # opened first: no export goes out unrecorded
    attempt = {"source": str(source), "out": str(out), "to_site": to_site, "to_jurisdiction": to_jurisdiction}
    try:
        try:
            report = _export(source, kind, out, to_site, to_jurisdiction, profiles, dict(conditions or {}), drop,
                             key_file)
        except ComplianceDenied as exc:
            log.append("dataset_export_refused", **attempt, reason=str(exc),
                       refused=list(getattr(exc, "refused", ())))
            raise
        except BaseException as exc:  # a failure part-way may have written some of out: that is recorded too
            wrote = not had_files and out.is_dir() and any(out.iterdir())
            log.append("dataset_export_failed", **attempt, error=f"{type(exc).__name__}: {exc}", out_written=wrote)
            raise
        record = report.to_json()
        record["dataset_kind"] = record.pop("kind")  # ``kind`` is the audit record's own
        log.append("dataset_export", out=str(out), **record)
        return report
    finally:
        log.detach()


def default_audit_path(source: str | Path) -> Path:
    """Where an export of ``source`` is audited unless told otherwise: ``<dataset>.audit.jsonl`` beside it.

    Beside the dataset, not in it (the dataset's files, and so its digest, stay as they are), and not in the
    exporter's home: everyone who exports the dataset appends to the one log its keeper can find next to it.
    """
    resolved = Path(source).resolve()
    return resolved.with_name(resolved.name + AUDIT_SUFFIX)


def _open_audit(source: Path, audit: str | Path | None) -> AuditLog:
    if audit is not None:
        return AuditLog(audit)
    path = default_audit_path(source)
    try:
        return AuditLog(path)
    except AuditError as exc:
        raise AuditError(f"{exc}; nothing was exported: every export is audited, by default in {path.name} beside "
                         "the dataset; name a writable log with --audit FILE") from exc


class ExportRefused(ComplianceDenied):
    """An export refused by the rules; ``refused`` lists what was refused (fields, columns, files) for the audit."""

    def __init__(self, message: str, refused: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(message)
        self.refused = tuple(refused)


def _export(
    source: Path,
    kind: str,
    out: Path,
    to_site: str,
    to_jurisdiction: str,
    profiles: Profiles,
    conditions: dict[str, ConditionRecord],
    drop: Sequence[str],
    key_file: str | Path | None,
) -> ExportReport:
    card = load_card(source)
    inventory = lerobot_inventory(source) if kind == "lerobot" else None
    # a LeRobot dataset's fields are its features: the inventory has read meta/info.json, once
    columns = _fields_of(source, kind) if inventory is None else [
        k for k in inventory.info["features"] if k not in LEROBOT_BOOKKEEPING]
    undeclared: dict[str, Undeclared] = inventory.undeclared if inventory is not None else {}
    unknown = [c for c in drop if c not in columns and c not in undeclared]
    if unknown:
        raise DatasetError(f"--drop {unknown[0]}: not a field of {source} (fields: {', '.join(columns)}"
                           f"{'; undeclared: ' + ', '.join(undeclared) if undeclared else ''})")
    refused_items = [u for name, u in undeclared.items() if name not in drop]
    if refused_items:
        shown = "; ".join(u.describe() for u in refused_items)
        flags = " ".join(f"--drop {u.name}" for u in refused_items)
        raise ExportRefused(
            f"{source}: not part of the LeRobot dataset as meta/info.json declares it, so no transfer rule decides "
            f"whether it may go from {card.origin.site} [{card.origin.jurisdiction}] to {to_site} [{to_jurisdiction}]: "
            f"{shown}; remove it from the dataset, declare it (meta/info.json features and {CARD_FILENAME} "
            f"data_classes), or leave it behind with {flags}",
            [u.to_json("not declared in meta/info.json features; no rule decides it") for u in refused_items])
    left_behind = tuple(u.to_json(UNDECLARED_LEFT) for name, u in undeclared.items() if name in drop)
    fields = tuple(_decide_field(name, card, to_jurisdiction, profiles, conditions, name in drop) for name in columns)
    refused = [f for f in fields if f.decision.action == "deny"]
    if refused:
        first = refused[0]
        d = first.decision
        more = f" (+{len(refused) - 1} more)" if len(refused) > 1 else ""
        hint = f"; record it with --condition {d.rule_id}={d.condition.any_of[0]}:REF" if (
            d.condition is not None and d.condition_ref is None) else ""
        raise ExportRefused(
            f"{source}: field {first.field} ({', '.join(first.classes)}) may not go from {card.origin.site} "
            f"[{card.origin.jurisdiction}] to {to_site} [{to_jurisdiction}]: denied by {d.cited()}: {d.reason}"
            f"{hint}; or leave it behind with --drop {first.field}{more}",
            [{**f.to_json(), "kind": "field"} for f in refused],
        )
    if all(f.decision.label in ("drop", "aggregate") for f in fields):
        raise ExportRefused(f"{source}: no field may go from {card.origin.site} [{card.origin.jurisdiction}] to "
                               f"{to_site} [{to_jurisdiction}]; nothing to export",
                       [{**f.to_json(), "kind": "field"} for f in fields])
    _prepare_out(out)
    pseudonymizer = None
    if any(f.decision.label == "pseudonymize" for f in fields):
        pseudonymizer = Pseudonymizer(load_or_create_key(card.origin.site, key_file), card.origin.site)
    decided = {f.field: f.decision.transformation for f in fields}
    written: list[str] = []
    if kind == "order_log":
        aggregates = _export_csv(source / RAW_LOG_FILENAME, out / RAW_LOG_FILENAME, decided, pseudonymizer)
    elif kind == "orders":
        aggregates = _export_parquet(source / ORDERS_FILENAME, out / ORDERS_FILENAME, decided, pseudonymizer)
    elif inventory is not None:
        aggregates, written = _export_lerobot(source, out, decided, inventory, drop)
    report = ExportReport(str(source), str(out), kind, card.origin.site, str(card.origin.jurisdiction), to_site,
                          to_jurisdiction, fields, pseudonymizer.key_id if pseudonymizer else None, aggregates,
                          left_behind, tuple(written))
    save_card(_exported_card(card, report, source), out)
    (out / REPORT_FILENAME).write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return report


def _fields_of(source: Path, kind: str) -> list[str]:
    """The columns of an order log or order table."""
    if kind == "order_log":
        with (source / RAW_LOG_FILENAME).open(newline="", encoding="utf-8-sig") as f:
            return [c.strip() for c in next(csv.reader(f), [])]
    return list(pq.read_schema(source / ORDERS_FILENAME).names)


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


def _export_lerobot(src: Path, dst: Path, decided: Mapping[str, Transformation | None], inventory: Inventory,
                    drop: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    unsupported = {k: t.kind for k, t in decided.items() if t is not None and t.kind != "drop"}
    if unsupported:
        name, kind = next(iter(unsupported.items()))
        raise DatasetError(f"{src}: feature {name} would need {kind}, which LeRobot features (arrays) do not "
                           f"support here; leave it behind with --drop {name}")
    dropped = {k for k, t in decided.items() if t is not None} | {n for n in drop if n in inventory.undeclared}
    return {}, write_lerobot(src, dst, inventory, dropped)


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
    if report.left_behind:
        done.append("left behind what meta/info.json does not declare: "
                    + ", ".join(f"{x['kind']} {x['name']}" for x in report.left_behind))
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
