"""Every flow a run creates between its sites, each field with its data classes and governing decision.

Flows (only between two different sites; a flow inside one site is not a transfer):

- ``workload``: the part-arrival schedule from the data site to the cell's site, when the workload is an order
  log: ``workload.t_s`` (from ``timestamp``), ``workload.part_type``, ``workload.order_id`` (from
  ``work_order``), classed by the dataset's card; the card's terms apply beside the law.
- ``observations``: from the cell's site to a served or remote policy's site: ``observation.state``,
  ``observation.environment_state`` and ``observation.images.<camera>``.
- ``actions``: the action stream back: ``action``.
- ``model``: an in-process (``builtin``) policy placed at another site: its artifact travels to the cell's
  site: ``policy.artifact``.

Default classes of run fields (a launch file replaces them with ``sites.data_classes``): joint state,
environment state and actions are ``industrial-confidential`` (a cell's motion reveals its process), camera
images ``personal`` (a camera in a cell can see the people working there), a policy artifact
``industrial-confidential``. Fields from a dataset keep the card's class; the launch file can add classes to
them but not remove the card's.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.data.card import DatasetCard, load_card
from testbed.errors import ComplianceDenied, ScenarioError
from testbed.scenario.schema import ConditionRecord, Scenario, SiteConfig
from testbed.scenario.workload import PartArrival
from testbed.sites.keys import load_or_create_key
from testbed.sites.located import Locator
from testbed.sites.profile import LinkProfile, Profiles, load_profiles
from testbed.sites.rules import Decision, decide, decide_terms, most_restrictive
from testbed.sites.transform import FieldKind, MessageFilter, Pseudonymizer, coarsen_number, not_applicable

CONFIDENTIAL = ("industrial-confidential",)
DEFAULT_CLASSES: Mapping[str, tuple[str, ...]] = {
    "observation.state": CONFIDENTIAL,
    "observation.environment_state": CONFIDENTIAL,
    "action": CONFIDENTIAL,
    "policy.artifact": CONFIDENTIAL,
}
IMAGE_CLASSES = ("personal",)
IMAGE_PREFIX = "observation.images."
# workload field -> (order-log column it comes from, kind, needed for the run)
WORKLOAD_FIELDS: Mapping[str, tuple[str, FieldKind, bool]] = {
    "workload.t_s": ("timestamp", "number", True),
    "workload.part_type": ("part_type", "text", True),
    "workload.order_id": ("work_order", "text", False),
}


@dataclass(frozen=True)
class SiteInfo:
    """A site of the run: name, jurisdiction, network region and the parties placed there."""

    name: str
    jurisdiction: str
    region: str
    roles: tuple[str, ...]
    key_file: str | None = None

    def label(self) -> str:
        """``name [J]``."""
        return f"{self.name} [{self.jurisdiction}]"


@dataclass(frozen=True)
class PlannedField:
    """One field of a flow and what happens to it before it leaves.

    Args:
        name: the field (``observation.state``, ``workload.t_s``, ...).
        kind: tensor, number, text or artifact (which transformations can apply).
        classes: its data classes.
        decision: the governing (most restrictive) decision.
        considered: every decision weighed (each class under the law and, for dataset fields, the terms).
        required: the run cannot work without it (a dropped required field refuses the flow).
        derived_from: the dataset column it comes from, if any.
    """

    name: str
    kind: FieldKind
    classes: tuple[str, ...]
    decision: Decision
    considered: tuple[Decision, ...]
    required: bool
    derived_from: str | None = None

    @property
    def refused(self) -> bool:
        """True when the field may not leave and the flow cannot go without it."""
        return self.decision.action == "deny" or (self.required and self.decision.label == "drop")

    @property
    def sent(self) -> bool:
        """True when (a transformed form of) the field leaves."""
        return self.decision.action != "deny" and self.decision.label not in ("drop", "aggregate")


@dataclass(frozen=True)
class Flow:
    """Data one site sends another during a run.

    Args:
        id: ``workload``, ``observations``, ``actions`` or ``model``.
        what: plain words.
        source: the sending site.
        target: the receiving site.
        fields: its fields, each decided.
        link: the link between the two sites.
    """

    id: str
    what: str
    source: SiteInfo
    target: SiteInfo
    fields: tuple[PlannedField, ...]
    link: LinkProfile

    @property
    def cross_border(self) -> bool:
        """True when the flow leaves its jurisdiction."""
        return self.source.jurisdiction != self.target.jurisdiction

    def refused(self) -> list[PlannedField]:
        """Fields that stop the flow."""
        return [f for f in self.fields if f.refused]

    def sent_fields(self) -> list[str]:
        """Names of the fields that leave (transformed or not)."""
        return [f.name for f in self.fields if f.sent]


@dataclass(frozen=True)
class FlowPlan:
    """Every cross-site flow of a run, decided; empty for a scenario without ``sites:``.

    Args:
        sites: the run's sites (empty: one implicit local site).
        flows: the flows between them.
        links: (site, site) sorted -> link, for every pair that exchanges data.
        profiles: the profiles that decided, or None without ``sites:``.
        conditions: the launch file's records, by rule id.
    """

    sites: tuple[SiteInfo, ...] = ()
    flows: tuple[Flow, ...] = ()
    links: Mapping[tuple[str, str], LinkProfile] = field(default_factory=dict)
    profiles: Profiles | None = None
    conditions: Mapping[str, ConditionRecord] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        """True for a run at one implicit local site."""
        return not self.sites

    def site(self, name: str) -> SiteInfo:
        """The site called ``name``."""
        return next(s for s in self.sites if s.name == name)

    def flow(self, flow_id: str) -> Flow | None:
        """The flow ``flow_id``, or None when the run has no such cross-site flow."""
        return next((f for f in self.flows if f.id == flow_id), None)

    def refusals(self) -> list[tuple[Flow, PlannedField]]:
        """Every field that stops its flow, in flow order."""
        return [(flow, f) for flow in self.flows for f in flow.refused()]

    def outbound(self, flow_id: str) -> MessageFilter | None:
        """The filter the sending side applies to each message of ``flow_id``; None when the flow does not exist.

        Raises:
            ComplianceDenied: the flow is refused (call ``check_flows`` first).
        """
        flow = self.flow(flow_id)
        if flow is None:
            return None
        if flow.refused():
            raise ComplianceDenied(denial_message(flow, flow.refused()[0], 0))
        planned = {f.name: f.decision.transformation for f in flow.fields}
        pseudonymizer = _pseudonymizer_for(flow) if any(
            t is not None and t.kind == "pseudonymize" for t in planned.values()) else None
        return MessageFilter(flow_id, planned, pseudonymizer)

    def filter_arrivals(self, arrivals: Sequence[PartArrival]) -> list[PartArrival]:
        """The workload as the data site sends it to the cell: each arrival with the workload flow's decisions.

        Unchanged when there is no cross-site workload flow.

        Raises:
            ComplianceDenied: the workload flow is refused.
        """
        flow = self.flow("workload")
        if flow is None:
            return list(arrivals)
        if flow.refused():
            raise ComplianceDenied(denial_message(flow, flow.refused()[0], 0))
        decided = {f.name: f.decision.transformation for f in flow.fields}
        t_change, order_change = decided.get("workload.t_s"), decided.get("workload.order_id")
        pseudonymizer = _pseudonymizer_for(flow) if order_change is not None and \
            order_change.kind == "pseudonymize" else None
        out = []
        for arrival in arrivals:
            t_s, order_id = arrival.t_s, arrival.order_id
            if t_change is not None and t_change.kind == "coarsen":
                t_s = coarsen_number(t_s, float(t_change.step or 1.0))
            if order_change is not None:
                if order_change.kind == "drop":
                    order_id = ""
                elif pseudonymizer is not None and order_id:
                    order_id = pseudonymizer.pseudonym("workload.order_id", order_id)
            out.append(dataclasses.replace(arrival, t_s=t_s, order_id=order_id))
        return out

    def decision_records(self) -> list[dict[str, Any]]:
        """One audit record per decided field (``kind: rule_decision``), as written at launch."""
        records = []
        for flow in self.flows:
            for f in flow.fields:
                d = f.decision
                records.append({
                    "kind": "rule_decision",
                    "flow": flow.id,
                    "from": flow.source.name,
                    "from_jurisdiction": flow.source.jurisdiction,
                    "to": flow.target.name,
                    "to_jurisdiction": flow.target.jurisdiction,
                    "field": f.name,
                    "classes": list(f.classes),
                    "rule": d.rule_id,
                    "action": "refused" if f.refused else d.label,
                    "citation": d.citation.short() if d.citation is not None else None,
                    "condition": f"{d.condition_ref.kind}:{d.condition_ref.ref}" if d.condition_ref else None,
                    "reason": d.reason,
                    "considered": [{"rule": c.rule_id, "class": c.data_class, "action": c.label,
                                    "condition": f"{c.condition_ref.kind}:{c.condition_ref.ref}"
                                    if c.condition_ref else None} for c in f.considered],
                })
        return records


def _pseudonymizer_for(flow: Flow) -> Pseudonymizer:
    key = load_or_create_key(flow.source.name, flow.source.key_file)
    return Pseudonymizer(key, flow.source.name)


def denial_message(flow: Flow, planned: PlannedField, more: int) -> str:
    """The one line a refused field gives: flow, field, classes, route, rule, citation, why and what to do."""
    d = planned.decision
    route = f"{flow.source.label()} -> {flow.target.label()}"
    outcome = "denied" if d.action == "deny" else "dropped though the run needs it"
    head = f"{flow.id} field {planned.name} ({', '.join(planned.classes)}) {route}: {outcome} by {d.cited()}: " \
           f"{d.reason}"
    if d.condition is not None and d.condition_ref is None:
        kind = d.condition.any_of[0]
        head += f"; record it as sites.conditions.{d.rule_id}: {{kind: {kind}, ref: ...}}"
    elif d.rule_id == "no-rule":
        head += "; add a rule for this class and route to the profiles"
    if more:
        head += f" (+{more} more refused field{'s' if more > 1 else ''}; `testbed sites check` lists them)"
    return head


def plan_flows(
    scenario: Scenario,
    observation_keys: Iterable[str] | None = None,
    *,
    profiles: Profiles | None = None,
    launch_file: str | Path | None = None,
) -> FlowPlan:
    """Plan and decide every cross-site flow of ``scenario`` without refusing anything.

    Args:
        scenario: a validated launch file.
        observation_keys: the observations the policy reads (its spec); None plans every observation the
            cell can produce (state, environment state, each camera), as ``testbed sites check`` does.
        profiles: already-loaded profiles (default: ``scenario.sites.profiles``).
        launch_file: named in error messages.

    Raises:
        ScenarioError: the sites section names a jurisdiction without a profile, a condition for an unknown
            rule or of a kind the rule does not take, an unknown field or data class, or a pair of regions
            without a link default.
        DatasetError: the workload's dataset card is missing or invalid.
    """
    cfg = scenario.sites
    if cfg is None:
        return FlowPlan()
    at = Locator(launch_file)
    profiles = profiles or load_profiles(cfg.profiles)
    sites = _site_infos(scenario, profiles)
    check_conditions(cfg.conditions, profiles, at)
    placement = cfg.placement
    cell = sites[placement.cell]
    policy = sites[placement.policy or placement.cell]
    data = sites[placement.data or placement.cell]

    specs: list[tuple[str, str, SiteInfo, SiteInfo, list[tuple[str, FieldKind, bool, str | None]]]] = []
    card: DatasetCard | None = None
    if scenario.workload.orders is not None:
        card = load_card(_dataset_dir(scenario.workload.orders))
        if data.name != cell.name:
            specs.append(("workload", f"part arrivals from the order log {card.name!r}", data, cell,
                          [(name, kind, req, col) for name, (col, kind, req) in WORKLOAD_FIELDS.items()]))
    policy_driven = any(r.job is None and not r.external for r in scenario.cell.robots)
    if policy_driven and policy.name != cell.name:
        if scenario.policy.builtin is not None:
            specs.append(("model", f"the in-process policy {scenario.policy.builtin!r} moved to the cell", policy,
                          cell, [("policy.artifact", "artifact", True, None)]))
        else:
            keys = _observation_keys(scenario, observation_keys)
            specs.append(("observations", "observations the policy reads", cell, policy,
                          [(k, "tensor", True, None) for k in keys]))
            specs.append(("actions", "action chunks back to the controllers", policy, cell,
                          [("action", "tensor", True, None)]))
    known_fields = _known_fields(scenario, card)
    _check_data_classes(cfg.data_classes, known_fields, profiles, at)

    flows = []
    links: dict[tuple[str, str], LinkProfile] = {}
    for flow_id, what, source, target, fields in specs:
        pair = (min(source.name, target.name), max(source.name, target.name))
        if pair not in links:
            links[pair] = _link(source, target, cfg.links, profiles, at)
        planned = tuple(_plan_field(name, kind, required, column, source, target, scenario, card, profiles)
                        for name, kind, required, column in fields)
        flows.append(Flow(flow_id, what, source, target, planned, links[pair]))
    if policy.name != cell.name:
        pair = (min(policy.name, cell.name), max(policy.name, cell.name))
        links.setdefault(pair, _link(policy, cell, cfg.links, profiles, at))
    return FlowPlan(sites=tuple(sites.values()), flows=tuple(flows), links=links, profiles=profiles,
                    conditions=dict(cfg.conditions))


def check_flows(
    scenario: Scenario,
    observation_keys: Iterable[str] | None = None,
    *,
    profiles: Profiles | None = None,
    launch_file: str | Path | None = None,
) -> FlowPlan:
    """Plan every cross-site flow and refuse the run if any field may not go: call before the first episode.

    Returns:
        the plan (empty for a scenario without ``sites:``); write ``plan.decision_records()`` to the audit
        log, filter outbound messages with ``plan.outbound(flow_id)`` and the workload with
        ``plan.filter_arrivals``.

    Raises:
        ComplianceDenied: one line naming the first refused field, its rule and the rule's citation.
        ScenarioError: see ``plan_flows``.
    """
    plan = plan_flows(scenario, observation_keys, profiles=profiles, launch_file=launch_file)
    refusals = plan.refusals()
    if refusals:
        flow, planned = refusals[0]
        raise ComplianceDenied(denial_message(flow, planned, len(refusals) - 1))
    return plan


def _site_infos(scenario: Scenario, profiles: Profiles) -> dict[str, SiteInfo]:
    cfg = scenario.sites
    assert cfg is not None
    roles: dict[str, list[str]] = {s.name: [] for s in cfg.sites}
    placement = cfg.placement
    roles[placement.cell].append("cell")
    roles[placement.policy or placement.cell].append("policy")
    roles[placement.data or placement.cell].append("data")
    out = {}
    for site in cfg.sites:
        out[site.name] = _site_info(site, profiles, tuple(roles[site.name]))
    return out


def _site_info(site: SiteConfig, profiles: Profiles, roles: tuple[str, ...]) -> SiteInfo:
    profile = profiles.jurisdiction(site.jurisdiction)
    return SiteInfo(site.name, site.jurisdiction, site.region or profile.default_region, roles, site.key_file)


def _dataset_dir(orders: str) -> Path:
    path = Path(orders)
    return path if path.is_absolute() else Path.cwd() / path


def _observation_keys(scenario: Scenario, given: Iterable[str] | None) -> list[str]:
    if given is not None:
        return sorted(set(given))
    keys = ["observation.state", "observation.environment_state"]
    return keys + [IMAGE_PREFIX + cam.name for cam in scenario.cell.cameras]


def _known_fields(scenario: Scenario, card: DatasetCard | None) -> list[str]:
    known = [*DEFAULT_CLASSES, *(IMAGE_PREFIX + c.name for c in scenario.cell.cameras)]
    if card is not None:
        known += list(WORKLOAD_FIELDS)
    return known


def check_conditions(conditions: Mapping[str, ConditionRecord], profiles: Profiles,
                     at: Locator | None = None) -> None:
    """Check each record names a rule with a condition, and is of a kind that rule takes.

    Raises:
        ScenarioError: an unknown rule id (with the closest), a rule without a condition, or a wrong kind.
    """
    at = at or Locator(None)
    ids = profiles.rule_ids()
    for rule_id, record in conditions.items():
        where = at(("sites", "conditions", rule_id))
        if rule_id not in ids:
            guess = difflib.get_close_matches(rule_id, ids, n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            raise ScenarioError(f"{where}sites.conditions.{rule_id}: no rule has this id.{hint} "
                                f"(rules with conditions: {', '.join(i for i in ids if profiles.condition_of(i))})")
        condition = profiles.condition_of(rule_id)
        if condition is None:
            raise ScenarioError(f"{where}sites.conditions.{rule_id}: rule {rule_id} ({profiles.where[rule_id]}) has "
                                "no condition to meet")
        if record.kind not in condition.any_of:
            raise ScenarioError(f"{where}sites.conditions.{rule_id}.kind: rule {rule_id} takes "
                                f"{' or '.join(condition.any_of)}, got {record.kind!r} ({condition.requires})")


def _check_data_classes(given: Mapping[str, Any], known_fields: list[str], profiles: Profiles, at: Locator) -> None:
    classes = profiles.known_classes()
    for name, value in given.items():
        where = at(("sites", "data_classes", name))
        if name not in known_fields:
            guess = difflib.get_close_matches(name, known_fields, n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            raise ScenarioError(f"{where}sites.data_classes.{name}: not a field of this run.{hint} "
                                f"(fields: {', '.join(known_fields)})")
        for cls in (value,) if isinstance(value, str) else value:
            if cls not in classes:
                raise ScenarioError(f"{where}sites.data_classes.{name}: unknown data class {cls!r} "
                                    f"(known: {', '.join(classes)})")


def _classes(name: str, column: str | None, scenario: Scenario, card: DatasetCard | None) -> tuple[str, ...]:
    assert scenario.sites is not None
    given = scenario.sites.classes_of(name) or ()
    if column is not None and card is not None:
        carded = card.data_classes.get(column)
        base = (str(carded),) if carded is not None else ("industrial-confidential",)
        return tuple(dict.fromkeys([*base, *given]))  # the card's classes stay; the launch file may add
    if given:
        return tuple(dict.fromkeys(given))
    return IMAGE_CLASSES if name.startswith(IMAGE_PREFIX) else DEFAULT_CLASSES.get(name, CONFIDENTIAL)


def _plan_field(
    name: str,
    kind: FieldKind,
    required: bool,
    column: str | None,
    source: SiteInfo,
    target: SiteInfo,
    scenario: Scenario,
    card: DatasetCard | None,
    profiles: Profiles,
) -> PlannedField:
    assert scenario.sites is not None
    conditions = scenario.sites.conditions
    classes = _classes(name, column, scenario, card)
    considered = [decide(profiles.rules, c, source.jurisdiction, target.jurisdiction, conditions) for c in classes]
    if column is not None and card is not None:
        for c in classes:
            terms = decide_terms(profiles, card, c, target.jurisdiction, conditions)
            if terms is not None:
                considered.append(terms)
    decision = most_restrictive(considered)
    if decision.transformation is not None:
        problem = not_applicable(decision.transformation, kind, table=False)
        if problem is not None:
            decision = decision.escalated(f"{problem}, so it cannot leave ({decision.reason})")
    return PlannedField(name, kind, classes, decision, tuple(considered), required, column)


def _link(a: SiteInfo, b: SiteInfo, overrides: Sequence[Any], profiles: Profiles, at: Locator) -> LinkProfile:
    try:
        link = profiles.link(a.region, b.region)
    except ScenarioError:
        override = _override_for(a, b, overrides)
        if override is None or override.rtt_ms is None:
            raise ScenarioError(f"{at(('sites', 'links'))}sites.links: no link default between {a.name} "
                                f"({a.region}) and {b.name} ({b.region}) in {profiles.directory}; give one with "
                                "sites.links: "
                                f"[{{between: [{a.name}, {b.name}], rtt_ms: ...}}]") from None
        link = LinkProfile(rtt_ms=override.rtt_ms, source="set in the launch file")
    override = _override_for(a, b, overrides)
    if override is None:
        return link
    changes = {k: v for k, v in override.model_dump(exclude={"between"}).items() if v is not None}
    if "source" not in changes and changes:
        changes["source"] = f"set in the launch file ({', '.join(sorted(changes))}); otherwise: {link.source}"
    return link.model_copy(update=changes)


def _override_for(a: SiteInfo, b: SiteInfo, overrides: Sequence[Any]) -> Any:
    return next((o for o in overrides if set(o.between) == {a.name, b.name}), None)
