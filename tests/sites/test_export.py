import csv
import io
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from testbed.data.card import load_card
from testbed.data.inspect import check_dataset
from testbed.data.orders import import_orders
from testbed.errors import ComplianceDenied, DatasetError
from testbed.scenario.schema import ConditionRecord
from testbed.sites.export import export_dataset

REPO = Path(__file__).resolve().parents[2]
KR_ORDERS = REPO / "datasets" / "kr_electronics_orders"
DEMOS = REPO / "datasets" / "expert_demos"
CONFIDENTIAL = sorted(k for k, v in load_card(KR_ORDERS).data_classes.items() if v == "industrial-confidential")


def to_us(profiles, out, source=KR_ORDERS, **kwargs):
    # the default log goes beside the source: never beside the shipped dataset in the repository
    kwargs.setdefault("audit", Path(out).parent / "origin" / "exports.jsonl")
    return export_dataset(source, out, to_site="us-west", to_jurisdiction="US", profiles=profiles, **kwargs)


def read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_the_kr_log_sent_to_the_us_has_no_raw_operator_id_and_no_confidential_field(profiles, tmp_path):
    out = tmp_path / "out"
    to_us(profiles, out)
    data = (out / "orders.csv").read_bytes()
    assert b"OP-" not in data
    header = data.split(b"\n", 1)[0].decode().split(",")
    assert not set(header) & set(CONFIDENTIAL)
    assert header == ["shift", "station", "part_type", "length_mm", "width_mm", "height_mm", "weight_g", "target_bin",
                      "operator_id"]
    for value in CONFIDENTIAL:
        assert value.encode() not in data
    source = read_csv(KR_ORDERS / "orders.csv")
    exported = read_csv(out / "orders.csv")
    assert len(exported) == len(source)
    assert all(row["operator_id"].startswith("psn-") for row in exported)
    # one operator, one pseudonym: the log stays useful for per-operator statistics
    pairs = {(s["operator_id"], e["operator_id"]) for s, e in zip(source, exported, strict=True)}
    assert len({raw for raw, _ in pairs}) == len({pseudo for _, pseudo in pairs}) == len(pairs)
    assert [r["part_type"] for r in exported] == [r["part_type"] for r in source]


def test_no_raw_work_order_or_part_id_value_survives(profiles, tmp_path):
    out = tmp_path / "out"
    to_us(profiles, out)
    data = (out / "orders.csv").read_bytes()
    source = read_csv(KR_ORDERS / "orders.csv")
    for column in ("work_order", "part_id", "lot_no"):
        assert not any(row[column].encode() in data for row in source if row[column])


def test_the_new_card_records_what_was_done_under_which_rule(profiles, tmp_path):
    out = tmp_path / "out"
    to_us(profiles, out)
    card = yaml.safe_load((out / "card.yaml").read_text())
    assert set(card["data_classes"]) == {"shift", "station", "part_type", "length_mm", "width_mm", "height_mm",
                                         "weight_g", "target_bin", "operator_id"}
    note = card["terms"]["note"]
    assert "pseudonymized operator_id under kr-pipa-28-8-personal-abroad (Personal Information Protection Act " \
           "(PIPA) art. 28-8)" in note
    assert "dropped timestamp, work_order, line, part_id, line_speed_m_min, lot_no under kr-data-platform-terms" in note
    assert card["provenance"]["derived_from"].startswith("kr_electronics_orders at gumi-electronics-plant (sha256 ")
    assert card["origin"] == {"site": "gumi-electronics-plant", "jurisdiction": "KR"}
    report = json.loads((out / "export_report.json").read_text())
    by_field = {f["field"]: f for f in report["fields"]}
    assert by_field["operator_id"]["action"] == "pseudonymize" and by_field["timestamp"]["action"] == "drop"
    assert report["pseudonymization_key_kept_at"] == "gumi-electronics-plant"


def test_the_key_stays_at_the_origin_and_never_reaches_the_output(profiles, tmp_path, keys_dir):
    out = tmp_path / "out"
    to_us(profiles, out)
    key = (keys_dir / "gumi-electronics-plant.key").read_bytes()
    for path in out.rglob("*"):
        data = path.read_bytes()
        assert key not in data and key.hex().encode() not in data, path


def test_a_second_export_with_the_same_key_gives_the_same_pseudonyms(profiles, tmp_path):
    to_us(profiles, tmp_path / "a")
    to_us(profiles, tmp_path / "b")
    assert (tmp_path / "a" / "orders.csv").read_bytes() == (tmp_path / "b" / "orders.csv").read_bytes()


def test_another_key_gives_other_pseudonyms(profiles, tmp_path):
    other = tmp_path / "other.key"
    other.write_bytes(b"k" * 32)
    to_us(profiles, tmp_path / "a")
    to_us(profiles, tmp_path / "b", key_file=other)
    a, b = read_csv(tmp_path / "a" / "orders.csv"), read_csv(tmp_path / "b" / "orders.csv")
    assert a[0]["operator_id"] != b[0]["operator_id"]


def test_recorded_consent_sends_operator_ids_as_they_are(profiles, tmp_path):
    consent = {"kr-pipa-28-8-personal-abroad": ConditionRecord(kind="consent", ref="CONSENT-2025-17")}
    to_us(profiles, tmp_path / "out", conditions=consent)
    assert read_csv(tmp_path / "out" / "orders.csv")[0]["operator_id"].startswith("OP-")


def test_an_imported_order_dataset_exports_with_the_same_pseudonyms(profiles, tmp_path):
    imported = tmp_path / "imported"
    import_orders(KR_ORDERS / "orders.csv", imported)
    to_us(profiles, tmp_path / "out", source=imported)
    table = pq.read_table(tmp_path / "out" / "orders.parquet")
    assert not set(table.column_names) & {*CONFIDENTIAL, "utc_offset_min"}
    assert "part_type_raw" in table.column_names and "row" in table.column_names
    from_csv = tmp_path / "csv"
    to_us(profiles, from_csv)
    assert table.column("operator_id").to_pylist() == [r["operator_id"] for r in read_csv(from_csv / "orders.csv")]


def test_terms_that_let_nothing_leave_refuse_the_export_with_their_citation(profiles, tmp_path):
    closed = tmp_path / "closed"
    shutil.copytree(KR_ORDERS, closed)
    card = (closed / "card.yaml").read_text()
    (closed / "card.yaml").write_text(card.replace("  export_allowed_classes:\n  - public\n", ""))
    with pytest.raises(ComplianceDenied, match=r"field timestamp \(industrial-confidential\) may not go from "
                                               r"gumi-electronics-plant \[KR\] to us-west \[US\]: denied by rule "
                                               r"kr-data-platform-terms \(Terms of use of Korean national data "
                                               r"platforms .*lets no field leave"):
        to_us(profiles, tmp_path / "out", source=closed)
    assert not (tmp_path / "out").exists()


def test_a_field_may_be_left_behind_on_request(profiles, tmp_path):
    to_us(profiles, tmp_path / "out", drop=["operator_id", "station"])
    header = (tmp_path / "out" / "orders.csv").read_text().splitlines()[0]
    assert "operator_id" not in header and "station" not in header
    with pytest.raises(DatasetError, match="--drop operater_id: not a field"):
        to_us(profiles, tmp_path / "again", drop=["operater_id"])


def test_an_export_never_writes_into_a_non_empty_directory(profiles, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not an empty directory"):
        to_us(profiles, tmp_path / "out")


def test_a_lerobot_dataset_exports_with_a_feature_left_behind(profiles, tmp_path):
    out = tmp_path / "demos"
    report = export_dataset(DEMOS, out, to_site="jp-cell", to_jurisdiction="JP", profiles=profiles,
                            drop=["observation.environment_state"], audit=tmp_path / "origin" / "exports.jsonl")
    assert report.by_action() == {"allow": ["observation.state", "action"],
                                  "drop": ["observation.environment_state"]}
    assert check_dataset(out) == []
    info = json.loads((out / "meta" / "info.json").read_text())
    assert "observation.environment_state" not in info["features"]
    data = pq.read_table(next((out / "data").rglob("*.parquet")))
    assert "observation.environment_state" not in data.column_names
