"""What the served policy's client costs the run loop's thread per round trip; prints one JSON object.

Runs the default cell with the expert served over gRPC from a child process (``policy.serve:=expert``)
and times, on the thread that steps the cell, every ``GrpcActionSource.submit`` and ``result`` call,
every ``stepSimulation`` and each episode loop: thread CPU (``time.thread_time``), wall time, and
context switches of that thread (``getrusage(RUSAGE_THREAD)``: voluntary = it waited, involuntary = it
was preempted). Figures are per round trip (one ``submit`` and one ``result`` per policy step, 12
physics steps). Then the same episodes run with the expert in-process (``policy.builtin:=expert``),
``LocalActionSource.submit`` and ``result`` timed instead, so that ``gap_us_per_round_trip`` splits
the served loop's extra time: the client's own CPU, the expert's CPU it no longer spends, the CPU the
rest of the loop (physics included) costs more while the server and gRPC's threads run beside it, and
the wall time that is no CPU of the loop's thread (preemption, waiting for the answer).
``--parts`` also times the client's inner parts (observation encoding, private-loop turns in
``submit``, the wait in ``result``, answer decoding, each asyncio loop turn and its ``select``); each
timer adds ~1 µs to what it wraps.

The machine may be shared: thread CPU and the involuntary switches are the robust figures; wall time
moves with the load of other processes.

    .venv/bin/python benchmarks/served_client.py [--episodes 3] [--parts]
"""

from __future__ import annotations

import argparse
import asyncio.base_events
import json
import resource
import selectors
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import testbed.eval.runner as runner_module
import testbed.sim.cell as cell_module
from testbed.bridge import client as client_module
from testbed.bridge import codec
from testbed.eval.runner import run_scenario
from testbed.policies.source import LocalActionSource
from testbed.scenario import load

LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "factory_cell.yaml"


def _wrap(owner: Any, name: str, label: str, acc: Counter[str], calls: Counter[str]) -> Callable[[], None]:
    """Time ``owner.name`` (thread CPU, wall, this thread's context switches); returns the undo."""
    original = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        r0 = resource.getrusage(resource.RUSAGE_THREAD)
        c0, w0 = time.thread_time(), time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            c1, w1 = time.thread_time(), time.perf_counter()
            r1 = resource.getrusage(resource.RUSAGE_THREAD)
            acc[f"{label}.cpu"] += c1 - c0
            acc[f"{label}.wall"] += w1 - w0
            acc[f"{label}.voluntary"] += r1.ru_nvcsw - r0.ru_nvcsw
            acc[f"{label}.involuntary"] += r1.ru_nivcsw - r0.ru_nivcsw
            calls[label] += 1

    setattr(owner, name, timed)
    return lambda: setattr(owner, name, original)


def measure(policy: str, episodes: int, parts: bool) -> dict[str, Any]:
    """One run with the expert ``serve``d (gRPC child) or ``builtin`` (in-process), timed per round trip."""
    acc: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    source = client_module.GrpcActionSource if policy == "serve" else LocalActionSource
    wrapped = [(source, "submit", "submit"), (source, "result", "result"),
               (cell_module, "_step_simulation", "physics (stepSimulation)"),
               (runner_module, "_run_episode", "episode loop")]
    if parts and policy == "serve":
        wrapped += [(codec.ObservationEncoder, "__call__", "encode (in submit)"),
                    (source, "_pump", "loop turns without waiting (_pump)"),
                    (source, "_await_arrival", "wait for the answer (_await_arrival)"),
                    (source, "_deliver", "decode the answer (_deliver)"),
                    (asyncio.base_events.BaseEventLoop, "_run_once", "asyncio loop turn"),
                    (selectors.EpollSelector, "select", "select")]
    undo = [_wrap(owner, name, label, acc, calls) for owner, name, label in wrapped]
    try:
        loaded = load(LAUNCH, [f"episodes:={episodes}", "policy.builtin:=null", "policy.serve:=null",
                               f"policy.{policy}:=expert"])
        with tempfile.TemporaryDirectory() as runs:
            metrics = run_scenario(loaded, runs_dir=Path(runs)).metrics
    finally:
        for u in reversed(undo):
            u()
    trips = calls["submit"]
    out: dict[str, Any] = {"policy": policy, "round_trips": trips, "sim_rtf": metrics["sim_rtf"],
                           "success_rate": metrics["success_rate"], "per_round_trip": {}}
    for label in calls:
        out["per_round_trip"][label] = {
            "calls": round(calls[label] / trips, 2),
            "thread_cpu_us": round(acc[f"{label}.cpu"] / trips * 1e6, 1),
            "wall_us": round(acc[f"{label}.wall"] / trips * 1e6, 1),
            "voluntary_switches": round(acc[f"{label}.voluntary"] / trips, 2),
            "involuntary_switches": round(acc[f"{label}.involuntary"] / trips, 2)}
    per = out["per_round_trip"]
    for key in ("thread_cpu_us", "wall_us", "involuntary_switches"):
        out[f"policy_{key}"] = round(per["submit"][key] + per["result"][key], 2)
    return out


def gap(served: dict[str, Any], local: dict[str, Any]) -> dict[str, float]:
    """The served loop's extra wall time per round trip over the in-process one, split into parts."""
    s, loc = served["per_round_trip"], local["per_round_trip"]
    rest_served = s["episode loop"]["thread_cpu_us"] - served["policy_thread_cpu_us"]
    rest_local = loc["episode loop"]["thread_cpu_us"] - local["policy_thread_cpu_us"]
    off_cpu = {name: r["episode loop"]["wall_us"] - r["episode loop"]["thread_cpu_us"]
               for name, r in (("served", s), ("local", loc))}
    return {
        "loop_wall_served_minus_in_process": round(s["episode loop"]["wall_us"] - loc["episode loop"]["wall_us"], 1),
        "client_cpu": served["policy_thread_cpu_us"],
        "minus_in_process_expert_cpu": -local["policy_thread_cpu_us"],
        "rest_of_loop_cpu_more_served": round(rest_served - rest_local, 1),
        "of_which_physics_cpu_more_served": round(s["physics (stepSimulation)"]["thread_cpu_us"]
                                                  - loc["physics (stepSimulation)"]["thread_cpu_us"], 1),
        "loop_wall_off_cpu_more_served": round(off_cpu["served"] - off_cpu["local"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=3, help="episodes of each run (default 3)")
    parser.add_argument("--parts", action="store_true", help="also time the client's inner parts")
    args = parser.parse_args()
    served = measure("serve", args.episodes, args.parts)
    local = measure("builtin", args.episodes, False)
    print(json.dumps({"episodes": args.episodes, "served": served, "in_process": local,
                      "gap_us_per_round_trip": gap(served, local)}))


if __name__ == "__main__":
    main()
