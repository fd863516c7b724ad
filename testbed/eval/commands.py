"""``testbed launch FILE [key:=value ...]`` and ``testbed eval FILE --workers N``: run a scenario, print its summary."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from testbed.errors import ScenarioError
from testbed.scenario.loader import load


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``launch``, ``eval`` and ``datasets record`` (after testbed.data.commands made the group)."""
    parser = subparsers.add_parser("launch", help="run a scenario from a launch file")
    parser.add_argument("file", help="launch file (YAML)")
    parser.add_argument("overrides", nargs="*", metavar="key:=value", help="overrides, e.g. episodes:=3 seed:=7")
    parser.add_argument("--runs-dir", default="runs", type=Path, help="where run records go (default: runs/)")
    parser.add_argument("--quiet", action="store_true", help="no per-episode progress lines")
    parser.add_argument("--ros2", action="store_true", help="run as a ROS 2 node (same as ros2.enabled:=true)")
    parser.add_argument("--dashboard", action="store_true", help="serve the dashboard while the run is live")
    parser.add_argument("--dashboard-host", default="127.0.0.1",
                        help="its address (default 127.0.0.1; beyond loopback needs $TESTBED_DASHBOARD_TOKEN)")
    parser.add_argument("--dashboard-port", type=int, default=8000, help="its port (default 8000; 0: any free one)")
    parser.set_defaults(func=_launch)

    evaluate = subparsers.add_parser("eval", help="run a scenario's episodes across worker processes")
    evaluate.add_argument("file", help="launch file (YAML)")
    evaluate.add_argument("overrides", nargs="*", metavar="key:=value", help="overrides, e.g. episodes:=20")
    evaluate.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    evaluate.add_argument("--runs-dir", default="runs", type=Path, help="where run records go (default: runs/)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress lines")
    evaluate.set_defaults(func=_evaluate)

    # ``testbed datasets record``: the group is testbed.data's, the command runs scenarios
    datasets = subparsers.choices["datasets"]
    sub = datasets.get_default("subcommands")
    rec = sub.add_parser("record", help="run a scenario and record its episodes as a LeRobot dataset")
    rec.add_argument("file", type=Path, help="launch file (YAML); its policy acts (the expert by default)")
    rec.add_argument("overrides", nargs="*", metavar="key:=value", help="overrides, e.g. seed:=7")
    rec.add_argument("--episodes", type=int, required=True)
    rec.add_argument("--out", type=Path, required=True, help="dataset directory to create")
    rec.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the run record goes")
    rec.add_argument("--card", type=Path, default=None, help="card.yaml template (default: simulated, public)")
    rec.set_defaults(func=_record)


def _launch(args: argparse.Namespace) -> int:
    from testbed.eval.runner import run_scenario

    loaded = load(args.file, [*args.overrides, "ros2.enabled:=true"] if args.ros2 else args.overrides)
    scenario = loaded.scenario
    print(f"launching {scenario.name!r}: {scenario.episodes} episode(s), seed {scenario.seed}", flush=True)
    progress = None if args.quiet else (lambda line: print(f"  {line}", flush=True))
    with contextlib.ExitStack() as stack:
        hook = None
        if args.dashboard:
            from testbed.dashboard import serve_live

            hook = stack.enter_context(serve_live(runs_dir=args.runs_dir, host=args.dashboard_host,
                                                  port=args.dashboard_port,
                                                  token=os.environ.get("TESTBED_DASHBOARD_TOKEN") or None,
                                                  announce_to=lambda line: print(line, flush=True)))
        result = run_scenario(loaded, runs_dir=args.runs_dir, progress=progress, events_hook=hook)
    print(format_summary(result.metrics))
    print(f"recorded in {result.run_dir}")
    sys.stdout.flush()
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from testbed.eval.parallel import evaluate

    if args.workers < 1:
        raise ScenarioError(f"--workers: expected a positive number of processes, got {args.workers}")
    loaded = load(args.file, args.overrides)
    scenario = loaded.scenario
    print(f"evaluating {scenario.name!r}: {scenario.episodes} episode(s) on {args.workers} worker(s), "
          f"seed {scenario.seed}", flush=True)
    progress = None if args.quiet else (lambda line: print(f"  {line}", flush=True))
    result = evaluate(loaded, workers=args.workers, runs_dir=args.runs_dir, progress=progress)
    print(format_summary(result.metrics))
    figures = result.metrics["evaluation"]
    print(f"{figures['episodes_per_minute']} episodes/minute on {figures['workers']} worker(s); "
          f"recorded in {result.run_dir}")
    return 0


def _record(args: argparse.Namespace) -> int:
    from testbed.data.card import load_card
    from testbed.eval.record import record_dataset

    card = load_card(args.card) if args.card is not None else None
    result = record_dataset(
        args.file,
        args.out,
        episodes=args.episodes,
        overrides=args.overrides,
        runs_dir=args.runs_dir,
        card=card,
        progress=lambda line: print(f"  {line}", flush=True),
    )
    print(
        f"{result.dataset_dir}: {result.metrics['episodes']} episode(s), "
        f"success rate {result.metrics['success_rate']:.2f}; run record in {result.run_dir}"
    )
    return 0


def format_summary(m: dict[str, Any]) -> str:
    """The end-of-run table printed by ``testbed launch``."""
    def fmt(value: Any, unit: str = "") -> str:
        return "-" if value is None else f"{value}{unit}"

    rows = [
        ("run", m["run_id"]),
        ("episodes", m["episodes"]),
        ("success rate", f"{m['success_rate']:.2f}"),
        ("parts placed", f"{m['parts_placed']}/{m['parts_total']} (misplaced {m['parts_misplaced']}, "
                         f"dropped {m['parts_dropped']})"),
        ("cycle time", f"mean {fmt(m['cycle_time_s']['mean'], ' s')}, p50 {fmt(m['cycle_time_s']['p50'], ' s')}, "
                       f"p95 {fmt(m['cycle_time_s']['p95'], ' s')}"),
        ("collisions", m["collisions"]),
        ("safety stops", m["safety_stops"]),
        ("policy timeouts", m["policy_timeouts"]),
        ("policy latency", f"p50 {fmt(m['policy_latency_ms']['p50'], ' ms')}, "
                           f"p99 {fmt(m['policy_latency_ms']['p99'], ' ms')}"),
        ("sim real-time factor", fmt(m["sim_rtf"], "x")),
        ("control", _control_row(m["control"])),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 50)
    return "\n".join([line, *(f"{k:<{width}}  {v}" for k, v in rows), line])


def _control_row(control: dict[str, Any]) -> str:
    head = f"{control['robots']} robot(s), cycle {control['cycle_ms']} ms"
    if control.get("mode") == "lockstep":
        return f"{head}, lockstep (no wall-clock deadlines: jitter and missed cycles n/a)"
    return f"{head}, jitter p99 {control['jitter_us_p99']} us, missed cycles {control['missed_cycles']}"
