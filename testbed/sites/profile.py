"""Site profiles: transfer rules per jurisdiction, link defaults and safety profiles, read from YAML.

A profile directory (``launch/sites/`` by default) holds two kinds of file:

- ``kind: jurisdiction``: one jurisdiction's rules for data leaving it, the terms applied to datasets
  collected there, its default network region and its robot safety profile;
- ``kind: links``: link defaults between network regions, each with its source.

Every key is checked (unknown keys are errors) and every error names the file, line and field.
The shipped profiles are engineering defaults, not legal advice.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

import testbed
from testbed.errors import ScenarioError
from testbed.scenario.loader import model_in
from testbed.scenario.overrides import dotted
from testbed.scenario.schema import (
    DATA_CLASS_PATTERN,
    JURISDICTION_PATTERN,
    Strict,
)
from testbed.scenario.source_map import SourceMap, parse_yaml

STANDARD_CLASSES: tuple[str, ...] = ("public", "industrial-confidential", "personal", "export-controlled")
ANY = "*"  # in a rule's ``to``: any other jurisdiction; in ``from``: any jurisdiction

Action = Literal["allow", "transform", "deny"]
TransformKind = Literal["drop", "pseudonymize", "coarsen", "aggregate"]
ConditionKind = Literal["consent", "contract", "approval"]  # as testbed.scenario.schema.CONDITION_KINDS


class Citation(Strict):
    """Where a rule comes from, in plain words (no links: the summary must stand on its own)."""

    law: str = Field(min_length=1, description="the instrument, e.g. 'Personal Information Protection Act (PIPA)'")
    article: str = Field("", description="article or section, e.g. 'art. 28-8'")
    summary: str = Field(min_length=1, description="what it says, in plain words")

    def short(self) -> str:
        """``law article``, for one-line messages."""
        return f"{self.law} {self.article}".strip()


class Transformation(Strict):
    """What the sending side does to a field before it leaves.

    ``drop`` removes the field; ``pseudonymize`` replaces each identifier by a keyed hash (HMAC-SHA256) whose
    key stays at the sending site; ``coarsen`` rounds numbers to ``step`` (seconds for times); ``aggregate``
    replaces a table column by its summary (count, mean, min, max).
    """

    kind: TransformKind
    step: float | None = Field(None, gt=0, description="coarsen: rounding step in the field's unit")

    @model_validator(mode="after")
    def _step_only_for_coarsen(self) -> Transformation:
        if self.kind == "coarsen" and self.step is None:
            raise ValueError("coarsen needs a step (e.g. {kind: coarsen, step: 1.0})")
        if self.kind != "coarsen" and self.step is not None:
            raise ValueError(f"step applies to coarsen only, not {self.kind}")
        return self


class Outcome(Strict):
    """An action and, for ``transform``, the transformation."""

    action: Action
    transformation: Transformation | None = None

    @field_validator("transformation", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `transformation: drop` stands for `transformation: {kind: drop}`
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _transformation_iff_transform(self) -> Outcome:
        if (self.action == "transform") != (self.transformation is not None):
            raise ValueError("action transform needs a transformation, and only transform takes one")
        return self


class Condition(Strict):
    """What the launch file must record (under ``sites.conditions.<rule id>``) for a rule's action to apply."""

    any_of: tuple[ConditionKind, ...] = Field(min_length=1, description="kinds of record that satisfy it")
    requires: str = Field(min_length=1, description="what the record must show, in plain words")


class Rule(Strict):
    """What happens to one data class sent from one jurisdiction to another.

    With a ``condition``, ``action`` applies when the launch file records it and ``otherwise`` when it does not.
    """

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    data_class: str = Field(pattern=DATA_CLASS_PATTERN)
    from_: str = Field(alias="from", pattern=rf"{JURISDICTION_PATTERN}|^\*$")
    to: str = Field(pattern=rf"{JURISDICTION_PATTERN}|^\*$")
    action: Action
    transformation: Transformation | None = None
    condition: Condition | None = None
    otherwise: Outcome | None = Field(None, description="when the condition is not met (default: deny)")
    citation: Citation

    @field_validator("transformation", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `transformation: drop` stands for `transformation: {kind: drop}`
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if (self.action == "transform") != (self.transformation is not None):
            raise ValueError("action transform needs a transformation, and only transform takes one")
        if self.otherwise is not None and self.condition is None:
            raise ValueError("otherwise applies when a condition is not met; this rule has no condition")
        return self

    @property
    def outcome(self) -> Outcome:
        """The outcome when the condition is met (or there is none)."""
        return Outcome(action=self.action, transformation=self.transformation)

    @property
    def unmet(self) -> Outcome:
        """The outcome when the condition is not met."""
        return self.otherwise or Outcome(action="deny")


class DatasetTerms(Strict):
    """How a dataset card's terms are enforced for data collected in this jurisdiction.

    A field whose class the card keeps at home (``terms.export_allowed_classes`` / ``export_allowed``) gets
    ``otherwise`` unless the launch file records ``condition``; a card that lets nothing leave refuses the flow.
    """

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    classes: tuple[str, ...] | None = Field(None, description="the data classes the terms govern (default: all); "
                                                              "others are left to the law's rules")
    condition: Condition | None = None
    otherwise: Outcome = Outcome(action="transform", transformation=Transformation(kind="drop"))
    citation: Citation


class CollaborativeLimits(Strict):
    """Limits for robots sharing space with people (power and force limiting)."""

    max_tcp_speed_m_s: float = Field(gt=0)
    max_quasi_static_force_n: float = Field(gt=0)
    max_transient_force_n: float = Field(gt=0)
    citation: Citation


class SafetyProfile(Strict):
    """Robot safety settings a jurisdiction's sites apply; a launch file may only tighten them."""

    standard: Citation
    speed_scale_max: float = Field(1.0, gt=0, le=1.0)
    tcp_speed_limit_m_s: float | None = Field(None, gt=0, description="a monitored TCP ceiling for every robot")
    require_reduced_speed: bool = False
    reduced_speed_tcp_m_s: float = Field(0.25, gt=0, description="the reduced-speed TCP limit")
    collaborative: CollaborativeLimits | None = None
    manual_reset_after_protective_stop: bool = True


class JurisdictionProfile(Strict):
    """One jurisdiction: its outbound rules, dataset terms, network region and safety profile."""

    kind: Literal["jurisdiction"]
    profile_version: Literal[1]
    jurisdiction: str = Field(pattern=JURISDICTION_PATTERN)
    name: str = Field(min_length=1)
    notice: str = Field(min_length=1, description="what the profile is and is not (engineering defaults)")
    default_region: str = Field(min_length=1)
    rules: tuple[Rule, ...] = ()
    dataset_terms: DatasetTerms
    safety: SafetyProfile


class LinkProfile(Strict):
    """A link's figures as profiles and launch files give them: round trip, jitter, loss, bandwidth and source.

    ``testbed.sites.links.LinkSpec.of(profile)`` turns them into the link model that delays messages.
    """

    rtt_ms: float = Field(ge=0, description="round-trip time in milliseconds")
    jitter_ms: float = Field(0.0, ge=0, description="standard deviation of the one-way delay in milliseconds")
    loss: float = Field(0.0, ge=0, lt=1, description="fraction of messages lost")
    bandwidth_mbps: float | None = Field(None, gt=0, description="megabits per second; none: unlimited")
    source: str = Field(min_length=1, description="the measurement or assumption behind the figures")


class RegionLink(LinkProfile):
    """Link defaults between two network regions."""

    between: tuple[str, str]


class LinkTable(Strict):
    """Link defaults between network regions."""

    kind: Literal["links"]
    profile_version: Literal[1]
    notice: str = Field(min_length=1)
    local: LinkProfile = Field(description="two sites in the same region")
    links: tuple[RegionLink, ...] = ()


@dataclass(frozen=True)
class Located:
    """A profile item and where it was written (``file:line``)."""

    where: str


@dataclass(frozen=True)
class LocatedRule(Located):
    """A rule with its place in the profiles."""

    rule: Rule


@dataclass(frozen=True)
class Profiles:
    """Every profile of a directory, checked against each other.

    Args:
        directory: where they were read from.
        jurisdictions: jurisdiction code -> its profile.
        rules: every rule of every jurisdiction, with its place.
        links: region pair (sorted) -> link defaults.
        local_link: the link between two sites of one region.
        files: each file read -> sha256 of its bytes (recorded in audit logs).
    """

    directory: Path
    jurisdictions: Mapping[str, JurisdictionProfile]
    rules: tuple[LocatedRule, ...]
    links: Mapping[tuple[str, str], RegionLink]
    local_link: LinkProfile
    files: Mapping[str, str]
    where: Mapping[str, str]  # rule id or 'terms:<J>' / 'jurisdiction:<J>' -> file:line

    def jurisdiction(self, code: str) -> JurisdictionProfile:
        """The profile of ``code``.

        Raises:
            ScenarioError: no profile for it.
        """
        try:
            return self.jurisdictions[code]
        except KeyError:
            known = ", ".join(sorted(self.jurisdictions)) or "none"
            raise ScenarioError(
                f"{self.directory}: no profile for jurisdiction {code!r} (profiles for: {known}); add "
                f"{self.directory / (code.lower() + '.yaml')} with kind: jurisdiction"
            ) from None

    def rule_ids(self) -> list[str]:
        """Every rule id, dataset-terms ids included, in file order."""
        ids = [r.rule.id for r in self.rules]
        ids += [p.dataset_terms.id for p in self.jurisdictions.values()]
        return ids

    def condition_of(self, rule_id: str) -> Condition | None:
        """The condition of a rule or dataset-terms entry; None when it has none or does not exist."""
        for located in self.rules:
            if located.rule.id == rule_id:
                return located.rule.condition
        for profile in self.jurisdictions.values():
            if profile.dataset_terms.id == rule_id:
                return profile.dataset_terms.condition
        return None

    def known_classes(self) -> list[str]:
        """The standard data classes and any class a rule names."""
        extra = sorted({r.rule.data_class for r in self.rules} - set(STANDARD_CLASSES))
        return [*STANDARD_CLASSES, *extra]

    def link(self, region_a: str, region_b: str) -> LinkProfile:
        """Link defaults between two regions.

        Raises:
            ScenarioError: no default for the pair.
        """
        if region_a == region_b:
            return self.local_link
        found = self.links.get(_pair(region_a, region_b))
        if found is None:
            known = ", ".join(f"{a}-{b}" for a, b in sorted(self.links)) or "none"
            raise ScenarioError(
                f"{self.directory}: no link default between regions {region_a!r} and {region_b!r} (known: {known}); "
                f"add one to a kind: links profile, or set sites.links in the launch file"
            )
        return LinkProfile(**found.model_dump(exclude={"between"}))


def _pair(a: str, b: str) -> tuple[str, str]:
    first, second = sorted((a, b))
    return first, second


def default_profiles_dir() -> Path:
    """The shipped profiles: ``launch/sites`` beside the package."""
    return Path(testbed.__file__).resolve().parents[1] / "launch" / "sites"


def resolve_profiles_dir(given: str | Path) -> Path:
    """A profiles directory as a launch file names it: absolute, from the working directory, or the shipped one."""
    path = Path(given)
    if path.is_absolute() or path.is_dir():
        return path
    shipped = default_profiles_dir().parents[1] / path
    return shipped if shipped.is_dir() else path


def load_profiles(directory: str | Path) -> Profiles:
    """Read and check every ``*.yaml`` profile in ``directory``.

    Raises:
        ScenarioError: a file is malformed, a key unknown, a value out of range, or two files disagree
            (a jurisdiction twice, a rule id twice, two rules for the same class and route, a link twice).
            The message names the file, line and field.
    """
    directory = resolve_profiles_dir(directory)
    if not directory.is_dir():
        raise ScenarioError(f"{directory}: profiles directory not found (sites.profiles; shipped: launch/sites)")
    jurisdictions: dict[str, JurisdictionProfile] = {}
    rules: list[LocatedRule] = []
    links: dict[tuple[str, str], RegionLink] = {}
    local: LinkProfile | None = None
    files: dict[str, str] = {}
    where: dict[str, str] = {}
    routes: dict[tuple[str, str, str], str] = {}
    for path in sorted(directory.glob("*.yaml")):
        raw = path.read_bytes()
        files[str(path)] = hashlib.sha256(raw).hexdigest()
        data, source = _parse(path, raw)
        kind = data.get("kind")
        model: type[BaseModel] = {"jurisdiction": JurisdictionProfile, "links": LinkTable}.get(kind)  # type: ignore[assignment]
        if model is None:
            raise ScenarioError(f"{path}:{source.line_of(('kind',)) or 1} kind: expected 'jurisdiction' or 'links', "
                                f"got {kind!r}")
        parsed = _validate(model, data, path, source)
        if isinstance(parsed, JurisdictionProfile):
            code = parsed.jurisdiction
            here = f"{path}:{source.line_of(('jurisdiction',))}"
            if code in jurisdictions:
                first = where["jurisdiction:" + code]
                raise ScenarioError(f"{here} jurisdiction: {code} already has a profile at {first}")
            jurisdictions[code] = parsed
            where["jurisdiction:" + code] = here
            where["terms:" + code] = f"{path}:{source.line_of(('dataset_terms',))}"
            for i, rule in enumerate(parsed.rules):
                here = f"{path}:{source.line_of(('rules', i))}"
                if rule.id in where:
                    raise ScenarioError(f"{here} rules[{i}].id: {rule.id!r} is already the id of {where[rule.id]}")
                route = (rule.data_class, rule.from_, rule.to)
                if route in routes:
                    raise ScenarioError(
                        f"{here} rules[{i}]: {rule.data_class} from {rule.from_} to {rule.to} is already ruled by "
                        f"{routes[route]}; one rule per class and route"
                    )
                routes[route] = f"{rule.id} ({here})"
                where[rule.id] = here
                rules.append(LocatedRule(where=here, rule=rule))
            terms_id = parsed.dataset_terms.id
            if terms_id in where:
                raise ScenarioError(f"{where['terms:' + code]} dataset_terms.id: {terms_id!r} is already the id of "
                                    f"{where[terms_id]}")
            where[terms_id] = where["terms:" + code]
        else:
            assert isinstance(parsed, LinkTable)
            if local is not None:
                raise ScenarioError(f"{path}:1: a second kind: links profile (one per directory)")
            local = parsed.local
            for i, link in enumerate(parsed.links):
                pair = _pair(*link.between)
                if pair in links or pair[0] == pair[1]:
                    line = source.line_of(("links", i, "between"))
                    raise ScenarioError(f"{path}:{line} links[{i}].between: {pair[0]} <-> {pair[1]} is given twice "
                                        "or joins a region to itself (that is `local`)")
                links[pair] = link
    if not jurisdictions:
        raise ScenarioError(f"{directory}: no kind: jurisdiction profile found")
    if local is None:
        raise ScenarioError(f"{directory}: no kind: links profile found (link defaults between regions)")
    return Profiles(directory=directory, jurisdictions=jurisdictions, rules=tuple(rules), links=links,
                    local_link=local, files=files, where=where)


def _parse(path: Path, raw: bytes) -> tuple[dict[str, Any], SourceMap]:
    try:
        data, source = parse_yaml(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ScenarioError(f"{where}: malformed YAML: {getattr(exc, 'problem', None) or exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}:1: expected a mapping at the top level, got {type(data).__name__}")
    return data, source


def _validate(model: type[BaseModel], data: dict[str, Any], path: Path, source: SourceMap) -> BaseModel:
    try:
        return model.model_validate_json(json.dumps(data, default=str))
    except ValidationError as exc:
        errors = exc.errors()
        # a misspelt key also leaves its field missing: the misspelling is the mistake to name
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = tuple(err["loc"])
        # pydantic reports the alias-free name for `from`; the file says `from`
        shown = tuple("from" if part == "from_" else part for part in loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, shown[:-1])
            guess = difflib.get_close_matches(str(shown[-1]), allowed, n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            message = f"unknown key {shown[-1]!r}.{hint} (allowed: {', '.join(allowed)})"
        elif err["type"] == "missing":
            message = "required but missing"
        else:
            message = f"{err['msg'].replace('Input should be', 'expected').replace('Value error, ', '')}, " \
                      f"got {err.get('input')!r}"
        line = source.line_of(shown) or 1
        raise ScenarioError(f"{path}:{line} {dotted(shown)}: {message}") from exc


def _allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {(f.alias or name): f for name, f in current.model_fields.items()}
        if part not in fields:
            return []
        current = model_in(fields[part].annotation)
        if current is None:
            return []
    return [f.alias or name for name, f in current.model_fields.items()]

