"""``testbed validate FILE``: check a launch file without running it."""

from __future__ import annotations

import argparse

from testbed.scenario.loader import load


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``validate`` command."""
    parser = subparsers.add_parser("validate", help="check a launch file without running it")
    parser.add_argument("file", help="launch file (YAML)")
    parser.add_argument("overrides", nargs="*", metavar="key:=value", help="overrides, e.g. episodes:=3")
    parser.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    loaded = load(args.file, args.overrides)
    scenario = loaded.scenario
    robots = ", ".join(f"{r.name} ({r.model})" for r in scenario.cell.robots)
    print(f"{args.file}: ok — scenario {scenario.name!r}, {scenario.episodes} episode(s), robots: {robots}")
    return 0
