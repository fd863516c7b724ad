"""Deciding what happens to one data class on its way from one jurisdiction to another.

Two layers decide: the law (profile rules per class and route) and, for data from a dataset, the terms
on its card. For a field with several classes, or under both layers, the most restrictive decision wins:
deny, then drop, aggregate, coarsen, pseudonymize, allow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from testbed.data.card import DatasetCard
from testbed.scenario.schema import ConditionRecord
from testbed.sites.profile import ANY, Citation, Condition, LocatedRule, Outcome, Profiles, Transformation

DOMESTIC = "domestic"
NO_RULE = "no-rule"

# higher is more restrictive
_SEVERITY = {"allow": 0, "pseudonymize": 1, "coarsen": 2, "aggregate": 3, "drop": 4, "deny": 5}


@dataclass(frozen=True)
class Decision:
    """The outcome for one data class on one route, and why.

    Args:
        data_class: the class decided.
        from_jurisdiction: where the data leaves.
        to_jurisdiction: where it goes.
        rule_id: the governing rule (``domestic`` inside one jurisdiction, ``no-rule`` when nothing covers it).
        action: allow, transform or deny.
        transformation: for transform, what is done.
        citation: the rule's source; None for ``domestic`` and ``no-rule``.
        condition: the rule's condition, if it has one.
        condition_ref: the launch file's record that met it, if any.
        reason: plain words: which outcome and why.
        where: the rule's place in the profiles (``file:line``), or "".
    """

    data_class: str
    from_jurisdiction: str
    to_jurisdiction: str
    rule_id: str
    action: str
    transformation: Transformation | None
    citation: Citation | None
    condition: Condition | None = None
    condition_ref: ConditionRecord | None = None
    reason: str = ""
    where: str = ""

    @property
    def severity(self) -> int:
        """Restrictiveness: 0 allow ... 5 deny."""
        if self.action == "transform" and self.transformation is not None:
            return _SEVERITY[self.transformation.kind]
        return _SEVERITY[self.action]

    @property
    def label(self) -> str:
        """``allow``, ``deny`` or the transformation's name (``drop``, ``pseudonymize``, ...)."""
        if self.action == "transform" and self.transformation is not None:
            return self.transformation.kind
        return self.action

    def cited(self) -> str:
        """``rule <id> (<law> <article>)`` for one-line messages."""
        source = f" ({self.citation.short()})" if self.citation is not None else ""
        return f"rule {self.rule_id}{source}"

    def escalated(self, reason: str) -> Decision:
        """This decision turned into a deny, e.g. when its transformation cannot apply to a field."""
        return Decision(self.data_class, self.from_jurisdiction, self.to_jurisdiction, self.rule_id, "deny", None,
                        self.citation, self.condition, self.condition_ref, reason, self.where)


def most_restrictive(decisions: Iterable[Decision]) -> Decision:
    """The most restrictive of ``decisions`` (the first of equals).

    Raises:
        ValueError: ``decisions`` is empty.
    """
    best: Decision | None = None
    for decision in decisions:
        if best is None or decision.severity > best.severity:
            best = decision
    if best is None:
        raise ValueError("no decisions to choose from")
    return best


def _specificity(located: LocatedRule) -> int:
    rule = located.rule
    return (2 if rule.from_ != ANY else 0) + (1 if rule.to != ANY else 0)


def _matches(located: LocatedRule, data_class: str, from_j: str, to_j: str) -> bool:
    rule = located.rule
    if rule.data_class != data_class:
        return False
    if rule.from_ not in (ANY, from_j):
        return False
    if rule.to == ANY:
        return to_j != from_j  # '*' means abroad: a domestic flow is never matched by a wildcard
    return rule.to == to_j


def decide(
    rules: Sequence[LocatedRule],
    data_class: str,
    from_jurisdiction: str,
    to_jurisdiction: str,
    conditions: Mapping[str, ConditionRecord],
) -> Decision:
    """The law's decision for ``data_class`` sent from one jurisdiction to another.

    The most specific matching rule governs (named origin and destination before wildcards). Inside one
    jurisdiction, with no rule naming that route, the flow is allowed (``domestic``). Across a border with
    no rule, it is denied (``no-rule``): a flow nobody thought about does not leave.

    Args:
        rules: the profiles' rules.
        data_class: e.g. ``personal``.
        from_jurisdiction: where the data is sent from.
        to_jurisdiction: where it is sent to.
        conditions: the launch file's records, by rule id.
    """
    matching = [r for r in rules if _matches(r, data_class, from_jurisdiction, to_jurisdiction)]
    if not matching:
        if from_jurisdiction == to_jurisdiction:
            return Decision(data_class, from_jurisdiction, to_jurisdiction, DOMESTIC, "allow", None, None,
                            reason="stays in one jurisdiction")
        return Decision(data_class, from_jurisdiction, to_jurisdiction, NO_RULE, "deny", None, None,
                        reason=f"no profile rule covers {data_class} from {from_jurisdiction} to {to_jurisdiction}")
    located = max(matching, key=_specificity)
    rule = located.rule
    outcome, record, reason = _apply_condition(rule.id, rule.condition, rule.outcome, rule.unmet, conditions,
                                               to_jurisdiction)
    return Decision(data_class, from_jurisdiction, to_jurisdiction, rule.id, outcome.action, outcome.transformation,
                    rule.citation, rule.condition, record, reason, located.where)


def decide_terms(
    profiles: Profiles,
    card: DatasetCard,
    data_class: str,
    to_jurisdiction: str,
    conditions: Mapping[str, ConditionRecord],
) -> Decision | None:
    """The dataset terms' decision for a field of ``card`` going to ``to_jurisdiction``; None when they allow it.

    Terms restrict only data leaving the jurisdiction it was collected in, and only the classes the origin
    profile's ``dataset_terms.classes`` name (personal data is the law's to decide). A class the card keeps at home
    gets the origin profile's ``dataset_terms.otherwise`` (drop, by default) unless the launch file records
    its condition; a card that lets no class leave refuses the flow.
    """
    origin = str(card.origin.jurisdiction)
    if to_jurisdiction == origin:
        return None
    entry = profiles.jurisdiction(origin).dataset_terms
    if entry.classes is not None and data_class not in entry.classes:
        return None
    terms = card.terms
    allowed = terms.export_allowed_classes
    allowed_names = None if allowed is None else {str(c) for c in allowed}
    if allowed_names is None:
        if terms.export_allowed:
            return None
        nothing_leaves = True
    else:
        if data_class in allowed_names:
            return None
        nothing_leaves = not allowed_names
    unmet = Outcome(action="deny") if nothing_leaves else entry.otherwise
    outcome, record, reason = _apply_condition(entry.id, entry.condition, Outcome(action="allow"), unmet, conditions,
                                               to_jurisdiction)
    if nothing_leaves:
        keeps = "lets no field leave (terms.export_allowed: false)"
    else:
        shown = ", ".join(sorted(allowed_names or ())) or "none"
        keeps = f"keeps {data_class} fields in {origin} (terms.export_allowed_classes: {shown})"
    reason = f"the card of {card.name!r} {keeps}; {reason}"
    return Decision(data_class, origin, to_jurisdiction, entry.id, outcome.action, outcome.transformation,
                    entry.citation, entry.condition, record, reason, profiles.where.get(entry.id, ""))


def _apply_condition(
    rule_id: str,
    condition: Condition | None,
    met: Outcome,
    unmet: Outcome,
    conditions: Mapping[str, ConditionRecord],
    to_jurisdiction: str,
) -> tuple[Outcome, ConditionRecord | None, str]:
    if condition is None:
        return met, None, "unconditional"
    record = conditions.get(rule_id)
    needs = " or ".join(condition.any_of)
    if record is not None and record.kind in condition.any_of:
        if record.to is None or to_jurisdiction in record.to:
            return met, record, f"{record.kind} {record.ref} recorded"
        return unmet, None, (f"{record.kind} {record.ref} covers {', '.join(record.to)}, not {to_jurisdiction} "
                             f"(needs: {condition.requires})")
    return unmet, None, f"no {needs} recorded (needs: {condition.requires})"
