"""Dataset cards: load, save, validation errors, field coverage, export terms."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from testbed.data.card import DataClass, DatasetCard, Jurisdiction, load_card, parse_card, save_card
from testbed.errors import DatasetError

SHIPPED = Path(__file__).resolve().parents[2] / "datasets/kr_electronics_orders/card.yaml"


def _card_dict() -> dict:
    return {
        "name": "demo",
        "origin": {"site": "osaka-cell", "jurisdiction": "JP"},
        "owner": "Example KK",
        "licence": "CC-BY-4.0",
        "collection_date": "2024-06-01",
        "data_classes": {"observation.state": "public", "action": "industrial-confidential"},
        "terms": {"attribution_required": True, "redistribution_allowed": True, "export_allowed": True},
        "provenance": {"scenario": "launch/factory_cell.yaml", "policy": "expert", "seed": 3},
    }


def test_shipped_card_loads_with_kr_terms() -> None:
    card = load_card(SHIPPED)
    assert card.origin.jurisdiction is Jurisdiction.KR
    assert card.terms.export_allowed is False
    assert card.data_classes["operator_id"] is DataClass.PERSONAL


def test_save_then_load_gives_equal_card(tmp_path: Path) -> None:
    card = parse_card(_card_dict())
    save_card(card, tmp_path)
    assert load_card(tmp_path) == card
    assert load_card(tmp_path).collection_date == dt.date(2024, 6, 1)


def test_wrong_field_error_names_file_line_and_field(tmp_path: Path) -> None:
    data = _card_dict()
    data["terms"]["export_allowed"] = "sometimes"
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "export_allowed" in text)
    with pytest.raises(DatasetError, match=rf"card.yaml:{line} terms.export_allowed: .*'sometimes'"):
        load_card(path)


def test_every_problem_is_named_at_once() -> None:
    data = _card_dict()
    data["origin"]["jurisdiction"] = "DE"
    data["licence_typo"] = "MIT"
    del data["owner"]
    with pytest.raises(DatasetError) as info:
        parse_card(data)
    message = str(info.value)
    assert "origin.jurisdiction" in message and "'DE'" in message
    assert "licence_typo" in message
    assert "owner" in message


def test_missing_card_file_suggests_what_is_needed(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"needs card\.yaml"):
        load_card(tmp_path)


def test_field_problems_name_uncovered_and_unknown_fields() -> None:
    card = parse_card(_card_dict())
    problems = card.field_problems(["observation.state", "observation.environment_state"])
    assert any("'observation.environment_state'" in p and "no data class" in p for p in problems)
    assert any("'action' is not a field" in p for p in problems)
    assert card.field_problems(["observation.state", "action"]) == []


def test_export_classes_override_the_blanket_rule() -> None:
    card = load_card(SHIPPED)
    exportable = card.exportable_fields()
    assert "part_type" in exportable and "weight_g" in exportable
    assert "operator_id" not in exportable and "work_order" not in exportable


def test_card_is_frozen() -> None:
    card: DatasetCard = parse_card(_card_dict())
    with pytest.raises(Exception, match="frozen"):
        card.name = "other"  # type: ignore[misc]
