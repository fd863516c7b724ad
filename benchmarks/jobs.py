"""Job planning figures: the time to plan a MOVL that has to be slowed down to keep its joints within limits.

Prints one JSON object. Each case is one line of a job on the SIA10F (7 axes), planned with ``plan_job`` from
a start pose reached by earlier lines: ``plan_cartesian``'s pass, whose rows do not fit, then passes of path
IK (``_follow_path``) at slowdowns k until the rows fit, each k raised from the last pass's peak ratio.
``before`` is that search as it was, aimed 0.1 % inside the limits (``_SLOWDOWN_AIM = 0.999``: the estimate
from the pass at V fell just short, usually three passes); ``after`` is ``testbed.control.job``'s, aimed 1 %
inside (usually two). Both are timed in the same run, interleaved, ``--repeats`` times each; the figures are
medians. ``passes`` counts the ``_follow_path`` passes of one plan, ``factor`` the slowdown it ended with.

    .venv/bin/python benchmarks/jobs.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

import testbed.control.job as job_mode
from testbed.control.job import Job, parse_job_text, plan_job
from testbed.control.kinematics import KinematicChain
from testbed.robots import load_robot


def _sia10f_cases() -> tuple[Any, KinematicChain, list[tuple[str, Job, np.ndarray]]]:
    """Slowed lines on the SIA10F with the tool pointing down, 0.5 m apart sideways (as tests/control's)."""
    model = load_robot("sia10f")
    chain = KinematicChain.from_urdf(model.urdf_path, model.tcp_link)
    x, _, z = chain.forward(np.asarray(model.home))[:3, 3]
    down = "rpy: [3.14159265, 0, 0]"
    poses = (f"  a: {{xyz: [{x:.4f}, -0.25, {z:.4f}], {down}}}\n  b: {{xyz: [{x:.4f}, 0.25, {z:.4f}], {down}}}\n"
             f"  c: {{xyz: [{x - 0.1:.4f}, 0.1, {z - 0.2:.4f}], {down}}}\n")

    def job(program: str) -> Job:
        return parse_job_text(f"name: bench\nposes:\n{poses}\nprogram:\n{program}", source="bench.yaml")

    def end_of(program: str, q0: np.ndarray) -> np.ndarray:
        blocks = plan_job(job(program), model, q0, chain=chain).program.blocks
        return np.asarray(blocks[-1].rows[-1])  # type: ignore[union-attr]

    q_a = end_of("  - MOVL a V=500 PL=0\n", np.asarray(model.home))
    q_b = end_of("  - MOVL b V=500 PL=0\n", q_a)
    cases = [("MOVL a V=1000 (from b)", job("  - MOVL a V=1000 PL=0\n"), q_b),
             ("MOVL b V=1000 (from a)", job("  - MOVL b V=1000 PL=0\n"), q_a),
             ("MOVL c V=1000 (from b)", job("  - MOVL c V=1000 PL=0\n"), q_b)]
    return model, chain, cases


def _timed(aim: float, job: Job, model: Any, chain: KinematicChain, q0: np.ndarray) -> tuple[float, int, float]:
    """Seconds to plan ``job`` with the slowdown aimed ``aim`` of the limits, its passes, its slowdown."""
    passes = []
    follow = job_mode._follow_path

    def counted(*args: Any) -> Any:
        passes.append(args[-1])
        return follow(*args)

    job_mode._SLOWDOWN_AIM, job_mode._follow_path = aim, counted
    try:
        start = time.perf_counter()
        plan_job(job, model, q0, chain=chain)
        seconds = time.perf_counter() - start
    finally:
        job_mode._SLOWDOWN_AIM, job_mode._follow_path = _AIM_AFTER, follow
    return seconds, len(passes), passes[-1] if passes else 1.0


_AIM_BEFORE = 0.999
_AIM_AFTER = job_mode._SLOWDOWN_AIM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model, chain, cases = _sia10f_cases()
    out: dict[str, Any] = {"robot": "sia10f", "repeats": args.repeats, "aim_before": _AIM_BEFORE,
                           "aim_after": _AIM_AFTER, "cases": {}}
    for name, job, q0 in cases:
        runs: dict[str, list[tuple[float, int, float]]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            runs["before"].append(_timed(_AIM_BEFORE, job, model, chain, q0))
            runs["after"].append(_timed(_AIM_AFTER, job, model, chain, q0))
        case: dict[str, Any] = {}
        for label, rows in runs.items():
            case[f"{label}_s"] = round(statistics.median(r[0] for r in rows), 4)
            case[f"{label}_passes"] = rows[0][1]
            case[f"{label}_factor"] = round(rows[0][2], 4)
        case["after_over_before"] = round(case["after_s"] / case["before_s"], 3)
        out["cases"][name] = case
    out["after_over_before_median"] = round(statistics.median(c["after_over_before"] for c in out["cases"].values()), 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
