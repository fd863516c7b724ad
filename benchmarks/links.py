"""The default cell with its policy at another site: pipelined chunks vs a blocking client, against loopback.

The expert is served over gRPC from a US West site and the cell sits at a Tokyo site (the link defaults of
``launch/sites/links.yaml``, ~105 ms round trip); time is lockstep, so each request's delay is drawn from the
link by the run's seeded generator and the figures are reproducible. Three runs of the same episodes:

- ``pipelined``: the testbed's client (a request every policy step while earlier ones are on the wire;
  chunk rows aligned by the step they were computed for);
- ``blocking``: a synchronous request-per-step client on the same link (openpi's ``infer`` style: one
  request at a time, one step's action per answer);
- ``loopback``: the same served expert on the cell's own site.

Prints one JSON object. Bar: pipelined success >= 0.9 and >= 0.95x loopback's, with starved steps far below
the blocking client's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from testbed.eval.runner import run_scenario
from testbed.scenario import load

LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "factory_cell.yaml"
SITES = ("sites:={profiles: launch/sites, sites: [{name: us-west-models, jurisdiction: US}, "
         "{name: jp-nagoya-cell, jurisdiction: JP}], placement: {policy: us-west-models, cell: jp-nagoya-cell}}")


def run(episodes: int, *overrides: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as runs:
        loaded = load(LAUNCH, [f"episodes:={episodes}", "policy.serve:=expert", *overrides])
        m = run_scenario(loaded, runs_dir=Path(runs)).metrics
    return {
        "success_rate": m["success_rate"],
        "parts_placed": m["parts_placed"],
        "parts_total": m["parts_total"],
        "starved_steps": m["starved_steps"],
        "late_chunks": m["late_chunks"],
        "cycle_time_s_mean": m["cycle_time_s"]["mean"],
        "policy_latency_ms": m["policy_latency_ms"],
        "safety_stops": m["safety_stops"],
        "sim_rtf": m["sim_rtf"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    pipelined = run(args.episodes, SITES)
    blocking = run(args.episodes, SITES, "policy.request_mode:=blocking")
    loopback = run(args.episodes)
    ratio = pipelined["success_rate"] / loopback["success_rate"] if loopback["success_rate"] else None
    print(json.dumps({
        "episodes": args.episodes,
        "link": "us-west-models <-> jp-nagoya-cell (launch/sites/links.yaml defaults), lockstep, seeded",
        "pipelined": pipelined,
        "blocking": blocking,
        "loopback": loopback,
        "ratio_success_pipelined_vs_loopback": None if ratio is None else round(ratio, 3),
        "ratio_starved_blocking_vs_pipelined": round(blocking["starved_steps"] / max(pipelined["starved_steps"], 1),
                                                     1),
        "targets": {"pipelined_success_min": 0.9, "ratio_success_pipelined_vs_loopback_min": 0.95},
    }))


if __name__ == "__main__":
    main()
