"""Accounting of cross-site traffic during a run, written to the audit log per interval.

The run loop calls ``FlowMeter.add(flow_id, bytes, messages)`` as messages leave, and ``flush_to(audit, t_s)``
at each interval (and at the end): one ``flow`` record per flow that carried anything since the last flush.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from testbed.sites.audit import AUDIT_FILENAME, AuditLog
from testbed.sites.flows import FlowPlan
from testbed.sites.safety import SiteSafety


class FlowMeter:
    """Counts bytes and messages per flow of a plan; thread-safe (policy clients send from their own threads).

    Args:
        plan: the run's checked flow plan.
        t0_s: the run time the first interval starts at.
    """

    def __init__(self, plan: FlowPlan, t0_s: float = 0.0) -> None:
        self._plan = plan
        self._flows = {f.id: f for f in plan.flows}
        self._counts = {flow_id: [0, 0] for flow_id in self._flows}
        self._totals = {flow_id: [0, 0] for flow_id in self._flows}
        self._since_s = t0_s
        self._lock = threading.Lock()

    def tracks(self, flow_id: str) -> bool:
        """True when ``flow_id`` is a cross-site flow of the plan (only those are counted)."""
        return flow_id in self._flows

    def add(self, flow_id: str, nbytes: int, messages: int = 1) -> None:
        """Count ``messages`` message(s) of ``nbytes`` bytes in all that left on ``flow_id``.

        Raises:
            KeyError: ``flow_id`` is not a flow of the plan (check ``tracks`` once when wiring).
        """
        with self._lock:
            counts = self._counts[flow_id]
            counts[0] += nbytes
            counts[1] += messages

    def totals(self) -> dict[str, dict[str, int]]:
        """Bytes and messages per flow since the start, flushed or not."""
        with self._lock:
            return {k: {"bytes": t[0] + c[0], "messages": t[1] + c[1]}
                    for (k, t), c in zip(self._totals.items(), self._counts.values(), strict=True)}

    def flush_to(self, audit: AuditLog, t_s: float) -> int:
        """Write one ``flow`` record per flow that carried anything since the last flush; return how many.

        Args:
            audit: the run's audit log.
            t_s: the run time (simulated seconds) the interval ends at.
        """
        with self._lock:
            pending = {k: tuple(c) for k, c in self._counts.items() if c[1] or c[0]}
            for k in pending:
                self._totals[k][0] += self._counts[k][0]
                self._totals[k][1] += self._counts[k][1]
                self._counts[k] = [0, 0]
            since, self._since_s = self._since_s, t_s
        for flow_id, (nbytes, messages) in pending.items():
            flow = self._flows[flow_id]
            audit.append(
                "flow",
                t_s=t_s,
                interval_s=t_s - since,
                flow=flow_id,
                **{"from": flow.source.name, "to": flow.target.name},
                fields=flow.sent_fields(),
                classes={f.name: list(f.classes) for f in flow.fields if f.sent},
                rules={f.name: f.decision.rule_id for f in flow.fields},
                transformations={f.name: f.decision.label for f in flow.fields if f.decision.label != "allow"},
                bytes=nbytes,
                messages=messages,
            )
        return len(pending)


def open_run_audit(
    run_dir: str | Path,
    plan: FlowPlan,
    *,
    run_id: str,
    scenario: str,
    safety: SiteSafety | None = None,
) -> AuditLog:
    """Create ``run_dir/audit.jsonl`` and record the launch: the profiles used, each rule decision, the safety in force.

    Returns:
        the open log; the runner appends ``flow`` records (``FlowMeter.flush_to``) and ``safety`` records
        (``audit.append("safety", t_s=..., robot=..., limit=..., value=..., action=...)``), then ``close()``.
    """
    audit = AuditLog(Path(run_dir) / AUDIT_FILENAME)
    opening: dict[str, Any] = {
        "run_id": run_id,
        "scenario": scenario,
        "sites": [{"name": s.name, "jurisdiction": s.jurisdiction, "region": s.region, "roles": list(s.roles)}
                  for s in plan.sites],
        "profiles": dict(plan.profiles.files) if plan.profiles is not None else {},
        "conditions": {k: v.model_dump(mode="json", exclude_none=True) for k, v in plan.conditions.items()},
        "links": {f"{a}<->{b}": link.model_dump() for (a, b), link in plan.links.items()},
    }
    audit.append("audit_open", **opening)
    for record in plan.decision_records():
        kind = record.pop("kind")
        audit.append(kind, **record)
    if safety is not None:
        audit.append(
            "safety_profile",
            site=safety.site,
            standard=safety.standard.short(),
            speed_scale_max=safety.speed_scale_max,
            tcp_ceiling_m_s=None if safety.tcp_ceiling_m_s == float("inf") else safety.tcp_ceiling_m_s,
            require_reduced_speed=safety.require_reduced_speed,
            collaborative=safety.collaborative,
            manual_reset_after_protective_stop=safety.manual_reset_after_protective_stop,
        )
    return audit
