"""Dataset cards: the ``card.yaml`` every dataset directory carries.

A card says where the data came from (site, jurisdiction, owner), under which
terms it may be used (attribution, redistribution, export abroad), how
sensitive each field is (public / industrial-confidential / personal), and
what produced it (scenario, policy, seed, generator script). The compliance
layer reads the same model to decide what may cross a border.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from testbed.errors import DatasetError

CARD_FILENAME = "card.yaml"


class Jurisdiction(enum.StrEnum):
    """Countries a testbed site can sit in."""

    KR = "KR"
    US = "US"
    JP = "JP"


class DataClass(enum.StrEnum):
    """How sensitive one field of a dataset is."""

    PUBLIC = "public"
    CONFIDENTIAL = "industrial-confidential"
    PERSONAL = "personal"


class _Strict(BaseModel):
    # extra="forbid": a misspelt key is an error, never silently ignored
    model_config = ConfigDict(extra="forbid", frozen=True)


class Origin(_Strict):
    """The site a dataset was collected at."""

    site: str = Field(min_length=1, description="site name, e.g. 'changwon-smt-plant'")
    jurisdiction: Jurisdiction


class Terms(_Strict):
    """The terms a dataset came under.

    ``export_allowed`` is about taking the data out of the origin's
    jurisdiction; ``export_allowed_classes`` narrows or widens it per data
    class (e.g. public fields may leave Korea, confidential ones may not).
    """

    attribution_required: bool
    redistribution_allowed: bool
    export_allowed: bool
    export_allowed_classes: tuple[DataClass, ...] | None = None
    note: str = ""

    def may_export(self, data_class: DataClass) -> bool:
        """Whether a field of ``data_class`` may leave the origin jurisdiction."""
        if self.export_allowed_classes is not None:
            return data_class in self.export_allowed_classes
        return self.export_allowed


class Provenance(_Strict):
    """What produced a dataset; every field optional, unknown stays ``None``."""

    scenario: str | None = None
    policy: str | None = None
    seed: int | None = None
    generator: str | None = Field(default=None, description="script or command that produced the data")
    derived_from: str | None = Field(default=None, description="source file or dataset it was converted from")


class DatasetCard(_Strict):
    """Everything ``card.yaml`` holds.

    ``data_classes`` maps each field (CSV column or LeRobot feature name) to
    its class; ``DatasetCard.missing_fields`` checks that every field of the
    data is covered.
    """

    card_version: int = 1
    name: str = Field(min_length=1)
    description: str = ""
    kind: str = Field(default="episodes", pattern=r"^(episodes|orders|run)$")
    origin: Origin
    owner: str = Field(min_length=1)
    licence: str = Field(min_length=1)
    collection_date: dt.date
    data_classes: dict[str, DataClass] = Field(min_length=1)
    terms: Terms
    provenance: Provenance = Provenance()

    @field_validator("card_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"card_version {value} is not supported (supported: 1)")
        return value

    def classes_present(self) -> set[DataClass]:
        """The data classes that occur in this dataset."""
        return set(self.data_classes.values())

    def exportable_fields(self) -> list[str]:
        """Fields that may leave the origin jurisdiction under the terms."""
        return [name for name, cls in self.data_classes.items() if self.terms.may_export(cls)]

    def field_problems(self, fields: Iterable[str]) -> list[str]:
        """Mismatches between the card's ``data_classes`` and the dataset's real fields.

        Args:
            fields: the field names the data actually has.

        Returns:
            one message per field without a class and per class naming no field.
        """
        actual = list(fields)
        problems = [
            f"data_classes: field {name!r} of the data has no data class (add it as public, "
            f"industrial-confidential or personal)"
            for name in actual
            if name not in self.data_classes
        ]
        problems += [
            f"data_classes: {name!r} is not a field of the data (fields: {', '.join(actual)})"
            for name in self.data_classes
            if name not in actual
        ]
        return problems


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line = node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == key), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def parse_card(data: Any, *, source: str = CARD_FILENAME, text: str | None = None) -> DatasetCard:
    """Validate a card from already-parsed YAML.

    Raises:
        DatasetError: one line per problem, each naming file, line and field.
    """
    if not isinstance(data, dict):
        raise DatasetError(f"{source}: expected a mapping of card fields, got {type(data).__name__}")
    try:
        return DatasetCard.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "(card)"
            line = _line_of(text, loc) if text is not None else None
            where = f"{source}:{line}" if line else source
            got = err.get("input")
            got_text = "" if err["type"] == "missing" else f", got {got!r}"
            lines.append(f"{where} {field}: {err['msg']}{got_text}")
        raise DatasetError("\n".join(lines)) from exc


def load_card(path: Path) -> DatasetCard:
    """Load and validate ``card.yaml`` (a file, or a dataset directory holding one).

    Raises:
        DatasetError: the file is missing, is not YAML, or a field is wrong.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILENAME
    if not path.is_file():
        raise DatasetError(f"{path}: no dataset card found (every dataset directory needs {CARD_FILENAME})")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: not valid YAML: {exc}") from exc
    return parse_card(data, source=str(path), text=text)


def card_to_dict(card: DatasetCard) -> dict[str, Any]:
    """Plain YAML-ready dict of a card (enums as strings, dates ISO, None dropped in provenance)."""
    data = card.model_dump(mode="json")
    data["provenance"] = {k: v for k, v in data["provenance"].items() if v is not None}
    if data["terms"].get("export_allowed_classes") is None:
        data["terms"].pop("export_allowed_classes", None)
    return data


def save_card(card: DatasetCard, path: Path) -> Path:
    """Write ``card`` as YAML to ``path`` (a file, or a directory to hold ``card.yaml``)."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILENAME
    path.write_text(yaml.safe_dump(card_to_dict(card), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path
