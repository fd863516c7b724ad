"""Sites, cross-site flows, transfer rules, safety profiles and the audit log.

Entry points: ``check_flows(scenario)`` plans and decides every flow a run creates between its sites (and
refuses a run whose flow is denied); ``effective_controller_settings`` / ``apply_site_safety`` apply the cell
site's safety profile; ``open_run_audit`` starts a run's hash-chained audit log, ``FlowMeter`` accounts the
traffic into it; ``verify`` checks one; ``export_dataset`` sends a dataset across a border with the rules
applied. Profiles live in ``launch/sites/`` and are engineering defaults, not legal advice.
"""

from testbed.sites.audit import AuditError, AuditLog, Verdict, verify
from testbed.sites.export import ExportReport, export_dataset
from testbed.sites.flows import Flow, FlowPlan, PlannedField, SiteInfo, check_flows, plan_flows
from testbed.sites.meter import FlowMeter, open_run_audit
from testbed.sites.profile import LinkProfile, Profiles, SafetyProfile, load_profiles
from testbed.sites.rules import Decision, decide
from testbed.sites.safety import SiteSafety, apply_site_safety, cell_safety, effective_controller_settings
from testbed.sites.transform import MessageFilter, Pseudonymizer

__all__ = [
    "AuditError",
    "AuditLog",
    "Decision",
    "ExportReport",
    "Flow",
    "FlowMeter",
    "FlowPlan",
    "LinkProfile",
    "MessageFilter",
    "PlannedField",
    "Profiles",
    "Pseudonymizer",
    "SafetyProfile",
    "SiteInfo",
    "SiteSafety",
    "Verdict",
    "apply_site_safety",
    "cell_safety",
    "check_flows",
    "decide",
    "effective_controller_settings",
    "export_dataset",
    "load_profiles",
    "open_run_audit",
    "plan_flows",
    "verify",
]
