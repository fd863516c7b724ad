"""The dashboard reads runs through their records and event streams: it never imports the loop's modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "testbed" / "dashboard"
FORBIDDEN = ("testbed.sim", "testbed.control", "testbed.bridge", "testbed.eval.runner", "testbed.eval.drivers",
             "pybullet", "grpc")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_dashboard_imports_nothing_of_the_control_loop():
    found = [f"{path.name} imports {name}" for path in sorted(PACKAGE.rglob("*.py")) for name in imported(path)
             if any(name == prefix or name.startswith(prefix + ".") for prefix in FORBIDDEN)]
    assert found == []


def test_the_dashboard_reads_runs_through_the_event_stream():
    names = {name for path in PACKAGE.rglob("*.py") for name in imported(path)}
    assert {name for name in names if name.startswith("testbed.eval")} == {"testbed.eval.events"}
