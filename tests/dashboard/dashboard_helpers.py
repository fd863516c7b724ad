"""Helpers of the dashboard's tests: real recorded runs of the default cell (the expert in-process)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testbed.eval.runner import run_scenario
from testbed.scenario import load

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "factory_cell.yaml"
LOCAL_EXPERT = ("policy.serve:=null", "policy.builtin:=expert")
TOKEN = "s3cret-dashboard-token"


@dataclass(frozen=True)
class Recorded:
    runs_dir: Path
    good: str  # every episode succeeds
    bad: str  # every episode runs out of time
    sites: str  # launch/trilateral.yaml: sites, flows and an audit log


def record(runs_dir: Path, *overrides: str, launch: Path = LAUNCH) -> str:
    return run_scenario(load(launch, [*LOCAL_EXPERT, *overrides]), runs_dir=runs_dir).run_id


def record_all(runs_dir: Path) -> Recorded:
    """A run that succeeds, one that fails, and one across sites with an audit log."""
    good = record(runs_dir, "episodes:=2")
    bad = record(runs_dir, "episodes:=2", "sim.max_episode_s:=3")
    # served from its own process, as the launch file says: observations and actions cross the sites
    sites = run_scenario(load(REPO / "launch" / "trilateral.yaml", ["episodes:=1", "workload.limit:=2"]),
                         runs_dir=runs_dir).run_id
    return Recorded(runs_dir, good, bad, sites)
