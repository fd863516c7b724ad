"""The package's layering, checked on its import statements (including imports inside functions).

control knows arrays, not the simulator or the network; a policy sees observations, never the
simulator; datasets are files; the runner uses the rest, and nothing but the command line uses the runner.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "testbed"

FORBIDDEN = {
    "control": ("testbed.sim", "testbed.bridge", "testbed.eval", "testbed.data", "pybullet", "grpc"),
    "policies": ("testbed.sim", "testbed.bridge", "testbed.eval"),  # training reads datasets: data is below
    "data": ("testbed.sim", "testbed.bridge", "testbed.eval", "grpc"),
    "sim": ("testbed.bridge", "testbed.eval", "testbed.data", "grpc"),
    "bridge": ("testbed.eval", "testbed.sim"),
    "scenario": ("testbed.eval", "testbed.bridge", "testbed.sim"),
    "robots": ("testbed.eval", "testbed.bridge", "testbed.sim", "pybullet"),
    # the gymnasium env drives the cell through the control loop itself: no runner, no network, no live views
    "gym": ("testbed.eval", "testbed.bridge", "testbed.dashboard", "testbed.ros2", "testbed.cli", "grpc"),
    # the dashboard reads runs through their records and event streams, never the loop's modules
    "dashboard": ("testbed.sim", "testbed.control", "testbed.bridge", "testbed.eval.runner", "testbed.eval.drivers",
                  "pybullet", "grpc"),
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def offending(package: str) -> list[str]:
    found = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        if "generated" in path.parts:
            continue
        for name in imported_modules(path):
            for prefix in FORBIDDEN[package]:
                if name == prefix or name.startswith(prefix + "."):
                    found.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_subpackage_keeps_to_its_layer(package):
    assert offending(package) == []


def test_the_checker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from testbed.eval.runner import run_scenario\n    import pybullet as p\n")
    assert imported_modules(module) == {"testbed.eval.runner", "pybullet"}


def test_the_dashboard_reads_runs_through_the_event_stream():
    names = {name for path in (PACKAGE / "dashboard").rglob("*.py") for name in imported_modules(path)}
    assert {name for name in names if name.startswith("testbed.eval")} == {"testbed.eval.events"}
