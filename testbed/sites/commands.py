"""``testbed sites check|verify`` and ``testbed datasets export``."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

from testbed.errors import ComplianceDenied, ScenarioError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sites`` group, and ``export`` to testbed.data's ``datasets`` group (registered before this)."""
    sites = subparsers.add_parser("sites", help="sites, cross-border flows, transfer rules and audit logs")
    sub = sites.add_subparsers(dest="sites_command", metavar="SUBCOMMAND", required=True)

    check = sub.add_parser("check", help="print every flow a launch file creates and the rule that governs it; "
                                         "exit 2 if any is refused")
    check.add_argument("file", help="launch file (YAML)")
    check.add_argument("overrides", nargs="*", metavar="key:=value", help="overrides, e.g. sites.placement.policy:=x")
    check.add_argument("--obs", default=None, metavar="KEY,...",
                       help="observations the policy reads (default: every one the cell can produce)")
    check.set_defaults(func=_check)

    verify = sub.add_parser("verify", help="recompute an audit log's hash chain; name the first broken line")
    verify.add_argument("run", type=Path, help="run directory (or its audit.jsonl), an export log (DATASET.audit.jsonl "
                                               "or an --audit FILE), or a dataset directory (its export log)")
    verify.set_defaults(func=_verify)

    datasets = subparsers.choices["datasets"].get_default("subcommands")
    export = datasets.add_parser("export", help="export a dataset to another site with the transfer rules applied")
    export.add_argument("dir", type=Path, help="dataset directory with card.yaml (order log, orders, LeRobot)")
    export.add_argument("--to-site", required=True, metavar="SITE",
                        help="a jurisdiction (US), NAME:JURISDICTION (us-west:US), or a site of --launch")
    export.add_argument("--out", type=Path, required=True, help="directory to write (new or empty)")
    export.add_argument("--launch", type=Path, default=None, help="launch file whose sites, profiles and "
                                                                  "conditions to use")
    export.add_argument("--profiles", type=Path, default=None, help="profiles directory (default: launch/sites)")
    export.add_argument("--condition", action="append", default=[], metavar="RULE=KIND:REF",
                        help="a record meeting a rule's condition, e.g. kr-pipa-28-8-personal-abroad=consent:C-17")
    export.add_argument("--drop", action="append", default=[], metavar="FIELD",
                        help="leave this field behind (LeRobot: also a column or file meta/info.json does not declare)")
    export.add_argument("--key-file", type=Path, default=None, help="the origin site's pseudonymization key")
    export.add_argument("--audit", type=Path, default=None, metavar="FILE",
                        help="the hash-chained audit log kept at the origin that this export, or its refusal, is "
                             "appended to (default: DIR.audit.jsonl beside the dataset; every export is audited; "
                             "check it with `testbed sites verify FILE`)")
    export.set_defaults(func=_export)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _percent(x: float) -> str:
    return f"{x * 100:g} %"


def _check(args: argparse.Namespace) -> int:
    from testbed.scenario import load
    from testbed.sites.flows import denial_message, plan_flows
    from testbed.sites.profile import load_profiles
    from testbed.sites.safety import cell_safety, effective_controller_settings

    loaded = load(args.file, args.overrides)
    scenario = loaded.scenario
    if scenario.sites is None:
        print(f"{args.file}: no sites: the run sits at one implicit local site; nothing crosses a site or border")
        return 0
    profiles = load_profiles(scenario.sites.profiles)
    obs = [k.strip() for k in args.obs.split(",") if k.strip()] if args.obs is not None else None
    plan = plan_flows(scenario, obs, profiles=profiles, launch_file=loaded.path)
    safety = cell_safety(scenario, profiles, launch_file=loaded.path)
    settings = effective_controller_settings(scenario, profiles, launch_file=loaded.path)

    print(f"{args.file}: scenario {scenario.name!r}, profiles {profiles.directory} "
          "(engineering defaults, not legal advice)")
    print("sites")
    print("\n".join(_table([[s.name, s.jurisdiction, s.region, ", ".join(s.roles) or "-"] for s in plan.sites])))
    print("links")
    for (a, b), link in plan.links.items():
        bandwidth = f"{link.bandwidth_mbps:g} Mbit/s" if link.bandwidth_mbps else "unlimited"
        print(f"  {a} <-> {b}: rtt {link.rtt_ms:g} ms, jitter {link.jitter_ms:g} ms, loss {_percent(link.loss)}, "
              f"{bandwidth}")
        print(f"    source: {link.source}")
    print("flows")
    if not plan.flows:
        print("  none: every party sits at one site")
    else:
        rows = [["FLOW", "FROM -> TO", "FIELD", "CLASSES", "DECISION", "RULES", "CITATION"]]
        for flow in plan.flows:
            for f in flow.fields:
                rules = []
                for c in f.considered:
                    label = c.rule_id + (f" ({c.condition_ref.kind} {c.condition_ref.ref})" if c.condition_ref else "")
                    if label not in rules:
                        rules.append(label)
                d = f.decision
                rows.append([flow.id, f"{flow.source.label()} -> {flow.target.label()}", f.name, ", ".join(f.classes),
                             ("REFUSED: " if f.refused else "") + d.label, " + ".join(rules),
                             d.citation.short() if d.citation is not None else "-"])
        print("\n".join(_table(rows)))
    if safety is not None:
        print(f"safety at {safety.site} ({safety.standard.law})")
        for robot, s in zip(scenario.cell.robots, settings, strict=True):
            limit = f"{s.tcp_speed_limit_m_s:g} m/s" if s.tcp_speed_limit_m_s is not None else "none"
            print(f"  {robot.name}: speed_scale {s.speed_scale:g}, TCP limit {limit}, "
                  f"reduced speed {'on' if s.reduced_speed else 'off'}")
        reset = "needs a manual reset" if safety.manual_reset_after_protective_stop else "resets automatically"
        ceiling = "none" if math.isinf(safety.tcp_ceiling_m_s) else f"{safety.tcp_ceiling_m_s:g} m/s"
        print(f"  site TCP ceiling {ceiling}, speed_scale at most {safety.speed_scale_max:g}; a protective stop "
              f"{reset}")
    refusals = plan.refusals()
    if refusals:
        flow, planned = refusals[0]
        raise ComplianceDenied(denial_message(flow, planned, len(refusals) - 1))
    print(f"{args.file}: ok, {sum(len(f.fields) for f in plan.flows)} field(s) in {len(plan.flows)} flow(s) may go")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from testbed.sites.audit import AUDIT_FILENAME, AuditError, verify
    from testbed.sites.export import default_audit_path

    path = args.run
    if path.is_dir():
        exports = default_audit_path(path)
        # a dataset directory holds no log of its own: its exports are audited beside it
        path = exports if not (path / AUDIT_FILENAME).exists() and exports.is_file() else path / AUDIT_FILENAME
    verdict = verify(path)
    if not verdict.ok:
        raise AuditError(verdict.describe(path))
    print(verdict.describe(path))
    return 0


_CONDITION = re.compile(r"^(?P<rule>[^=]+)=(?P<kind>consent|contract|approval):(?P<ref>.+)$")


def _conditions(given: list[str]) -> dict[str, Any]:
    from testbed.scenario.schema import ConditionRecord

    out = {}
    for text in given:
        match = _CONDITION.match(text)
        if match is None:
            raise ScenarioError(f"--condition {text!r}: expected RULE=KIND:REF with KIND consent, contract or "
                                "approval (e.g. kr-pipa-28-8-personal-abroad=consent:CONSENT-2025-17)")
        out[match["rule"].strip()] = ConditionRecord(kind=match["kind"], ref=match["ref"].strip())  # type: ignore[arg-type]
    return out


def _export(args: argparse.Namespace) -> int:
    from testbed.sites.export import REPORT_FILENAME, default_audit_path, export_dataset
    from testbed.sites.flows import check_conditions
    from testbed.sites.profile import load_profiles

    conditions: dict[str, Any] = {}
    profiles_dir: str | Path = args.profiles or "launch/sites"
    key_file = args.key_file
    site, jurisdiction = args.to_site, None
    if args.launch is not None:
        from testbed.scenario import load

        cfg = load(args.launch).scenario.sites
        if cfg is None:
            raise ScenarioError(f"{args.launch}: no sites section to find --to-site {args.to_site} in")
        profiles_dir = args.profiles or cfg.profiles
        conditions.update(cfg.conditions)
        named = {s.name: s for s in cfg.sites}
        if site in named:
            jurisdiction = named[site].jurisdiction
    if jurisdiction is None:
        match = re.match(r"^(?:(?P<name>[a-z0-9][a-z0-9._-]*):)?(?P<j>[A-Z]{2})$", site)
        if match is None:
            where = f" in {args.launch}" if args.launch is not None else ""
            raise ScenarioError(f"--to-site {site}: no such site{where}; give a jurisdiction (US), "
                                "NAME:JURISDICTION (us-west:US), or --launch FILE that declares the site")
        site, jurisdiction = match["name"] or match["j"], match["j"]
    conditions.update(_conditions(args.condition))
    profiles = load_profiles(profiles_dir)
    profiles.jurisdiction(jurisdiction)  # an unknown destination is an error before anything is read
    check_conditions(conditions, profiles)
    report = export_dataset(args.dir, args.out, to_site=site, to_jurisdiction=jurisdiction, profiles=profiles,
                            conditions=conditions, drop=args.drop, key_file=key_file, audit=args.audit)
    print(f"{args.out}: {report.kind} exported from {report.origin_site} [{report.from_jurisdiction}] to {site} "
          f"[{jurisdiction}]")
    for action, names in report.by_action().items():
        rules = sorted({f.decision.rule_id for f in report.fields if f.field in names})
        print(f"  {action}: {', '.join(names)}  ({', '.join(rules)})")
    if report.left_behind:
        shown = ", ".join(f"{x['kind']} {x['name']}" for x in report.left_behind)
        print(f"  left behind (not declared in meta/info.json): {shown}")
    print(f"  audited: {args.audit if args.audit is not None else default_audit_path(args.dir)}")
    print(f"  decisions per field: {args.out / REPORT_FILENAME}; new card: {args.out / 'card.yaml'}")
    return 0
