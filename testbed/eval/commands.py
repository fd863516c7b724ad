"""``testbed launch FILE [key:=value ...]`` and ``testbed eval FILE --workers N``: run a scenario, print its summary."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

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

    evaluate = subparsers.add_parser(
        "eval", help="evaluate policies over seeded episodes and launch-file variations, on workers",
        description="testbed eval LAUNCH_FILE [key:=value ...] runs every episode of every variation (--sweep) and "
                    "policy (--policy), journals one row per episode in runs/<run_id>/results.jsonl and ends with "
                    "results.parquet, summary.json and plots. testbed eval RUN_DIR --only ID re-runs one episode; "
                    "testbed eval --resume RUN_DIR finishes an interrupted evaluation.")
    evaluate.add_argument("file", nargs="?", help="launch file (YAML), or an evaluation directory with --only")
    evaluate.add_argument("overrides", nargs="*", metavar="key:=value", help="overrides, e.g. seed:=3")
    evaluate.add_argument("--episodes", type=int, default=None, help="episodes per (variation, policy) "
                                                                     "(default: the launch file's)")
    evaluate.add_argument("--workers", type=int, default=None, help="worker processes or Ray actors (default 2)")
    evaluate.add_argument("--sweep", action="append", default=[], metavar="key=v1,v2,...",
                          help="vary a launch-file key (values read like key:=value); repeated flags cross")
    evaluate.add_argument("--policy", action="append", default=[], metavar="NAME=ENDPOINT",
                          help="a policy to evaluate: grpc://HOST:PORT, ws://HOST:PORT (openpi), builtin:TARGET or "
                               "serve:TARGET (TARGET: expert, pkg.module:Class); repeat to compare")
    evaluate.add_argument("--policy-arg", action="append", default=[], metavar="NAME.key=value",
                          help="constructor argument of a builtin:/serve: policy, e.g. bc.path=model.npz")
    evaluate.add_argument("--policy-servers", choices=None, default=None, metavar="per-worker|shared",
                          help="serve: policies get one server per worker (default) or one shared by all workers")
    evaluate.add_argument("--ray", default=None, metavar="ADDRESS|local",
                          help="run on Ray: 'local' starts a local instance, else the address of a cluster")
    evaluate.add_argument("--only", default=None, metavar="EPISODE_ID",
                          help="with RUN_DIR: re-run this episode (e.g. v1/default/0007) and compare it")
    evaluate.add_argument("--resume", default=None, type=Path, metavar="RUN_DIR",
                          help="finish an interrupted evaluation: keep its journaled episodes, run the rest")
    evaluate.add_argument("--runs-dir", default="runs", type=Path, help="where run records go (default: runs/)")
    evaluate.add_argument("--price-per-core-hour", type=float, default=None,
                          help="price of one busy core for an hour (default: the declared figure in summary.json)")
    evaluate.add_argument("--currency", default=None, help="currency of --price-per-core-hour (default USD)")
    evaluate.add_argument("--cpu-watts-per-core", type=float, default=None,
                          help="power of one busy core where RAPL is unreadable (default: the declared figure)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar or per-episode lines")
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
    from testbed.eval.eval_command import evaluate_command

    return evaluate_command(args)


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
