"""``testbed eval``: start, resume, or re-run one episode of an evaluation, with progress and a final table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from testbed.errors import ScenarioError, WorkerFailed
from testbed.eval.evaluation import Evaluation, Reporter, SessionResult, Settings, plan_evaluation, rerun_episode
from testbed.eval.tasks import Row


class LineReporter(Reporter):
    """One plain line per finished episode (pipes, logs, CI)."""

    def __init__(self) -> None:
        self.total = self.done = 0

    def start(self, total: int, done: int) -> None:
        """Remember the counts."""
        self.total, self.done = total, done
        if done:
            print(f"  {done}/{total} episode(s) already journaled", flush=True)

    def row(self, row: Row) -> None:
        """``  [12/80] v1/default/0003: success, 3/3 parts placed, 14.2 s simulated, 0.61 s wall``."""
        self.done += 1
        verdict = "success" if row["success"] else f"failed ({row['end_reason']})"
        print(f"  [{self.done}/{self.total}] {row['episode_id']}: {verdict}, {row['parts_placed']}/{row['parts']} "
              f"parts placed, {row['sim_s']:.1f} s simulated, {row['wall_s']:.2f} s wall", flush=True)


class BarReporter(Reporter):
    """A live rich progress bar (terminals): episodes done, successes so far, rate and time left."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[successes]} ok"), TimeElapsedColumn(),
                                  TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[last]}"))
        self._task: Any = None
        self._successes = 0

    def start(self, total: int, done: int) -> None:
        """Show the bar, already advanced by the journaled episodes."""
        self._progress.start()
        self._task = self._progress.add_task("eval", total=total, completed=done, successes=0, last="")

    def row(self, row: Row) -> None:
        """Advance by one episode."""
        self._successes += bool(row["success"])
        self._progress.update(self._task, advance=1, successes=self._successes, last=row["episode_id"])

    def close(self) -> None:
        """Remove the bar's live display (the final table follows)."""
        self._progress.stop()


def _reporter(quiet: bool) -> Reporter:
    if quiet:
        return Reporter()
    return BarReporter() if sys.stdout.isatty() else LineReporter()


def _cost(args: argparse.Namespace) -> Any:
    from testbed.eval.cost import CostSettings

    given = {k: v for k, v in (("price_per_core_hour", args.price_per_core_hour), ("currency", args.currency),
                               ("cpu_watts_per_core", args.cpu_watts_per_core)) if v is not None}
    return CostSettings(**given)


def evaluate_command(args: argparse.Namespace) -> int:
    """Dispatch ``testbed eval`` to a new evaluation, ``--resume`` or ``--only``."""
    if args.workers is not None and args.workers < 1:
        raise ScenarioError(f"--workers: expected a positive number of processes, got {args.workers}")
    if args.only is not None:
        return _only(args)
    if args.resume is not None:
        if args.file is not None or args.overrides or args.sweep or args.policy or args.policy_arg or args.episodes:
            raise ScenarioError("--resume RUN_DIR: the evaluation's plan is in RUN_DIR/evaluation.json; give no "
                                "launch file, overrides, --episodes, --sweep or --policy with it")
        evaluation = Evaluation.open(args.resume, workers=args.workers, ray=args.ray,
                                     policy_servers=args.policy_servers)
        print(f"resuming {evaluation.run_dir}: {len(evaluation.journaled())}/{len(evaluation.plan.episode_ids())} "
              f"episode(s) journaled", flush=True)
        return _run(evaluation, args)
    if args.file is None:
        raise ScenarioError("testbed eval: expected a launch file (testbed eval LAUNCH_FILE ...), an evaluation "
                            "directory with --only ID, or --resume RUN_DIR")
    if Path(args.file).is_dir():
        raise ScenarioError(f"testbed eval {args.file}: is a directory; to re-run one of its episodes give --only "
                            f"EPISODE_ID, to finish it use --resume {args.file}")
    settings = Settings(workers=args.workers or 2, ray=args.ray, policy_servers=args.policy_servers or "per-worker")
    plan = plan_evaluation(args.file, args.overrides, episodes=args.episodes, sweeps=args.sweep,
                           policy_flags=args.policy, policy_args=args.policy_arg)
    cost = _cost(args)  # checked before the run starts
    evaluation = Evaluation.create(plan, settings, args.runs_dir)
    backend = f"Ray ({settings.ray})" if settings.ray else "local processes"
    print(f"evaluating {plan.name!r}: {len(plan.episode_ids())} episode(s) = {len(plan.variations)} variation(s) x "
          f"{len(plan.policies)} policy(ies) x {plan.episodes} episode(s), {settings.workers} worker(s) on "
          f"{backend}; recording in {evaluation.run_dir}", flush=True)
    return _run(evaluation, args, cost)


def _run(evaluation: Evaluation, args: argparse.Namespace, cost: Any = None) -> int:
    try:
        result = evaluation.run(_reporter(args.quiet), cost=cost if cost is not None else _cost(args))
    except KeyboardInterrupt:
        print(f"interrupted; journaled episodes are kept. Resume with: {evaluation.resume_command()}",
              file=sys.stderr, flush=True)
        raise
    except WorkerFailed:
        print(f"resume with: {evaluation.resume_command()}", file=sys.stderr, flush=True)
        raise
    _print_result(result)
    return 0


def _print_result(result: SessionResult) -> None:
    from testbed.eval.commands import format_summary

    if result.metrics is not None:
        print(format_summary(result.metrics))
    if result.summary is not None:
        from rich.console import Console

        from testbed.eval.table import summary_table

        console = Console()
        if not console.is_terminal:
            console = Console(width=160)  # a pipe or a log: room for every column
        console.print(summary_table(result.summary))
    for note in result.notes:
        print(f"note: {note}")
    rate = round(result.episodes_run / result.wall_s * 60.0, 3) if result.wall_s > 0 and result.episodes_run else 0.0
    print(f"{result.episodes_run} episode(s) run in {result.wall_s:.1f} s: {rate} episodes/minute on "
          f"{result.workers} worker(s); recorded in {result.run_dir}", flush=True)


def _only(args: argparse.Namespace) -> int:
    if args.file is None:
        raise ScenarioError("--only: give the evaluation directory first: testbed eval RUN_DIR --only EPISODE_ID")
    if args.resume is not None or args.sweep or args.policy or args.overrides or args.episodes:
        raise ScenarioError("--only: re-runs an episode exactly as the evaluation ran it; give no --resume, "
                            "--sweep, --policy, --episodes or overrides with it")
    run_dir = Path(args.file)
    if not run_dir.is_dir():
        raise ScenarioError(f"--only: {run_dir} is not an evaluation directory (runs/<run_id> of an earlier "
                            "`testbed eval`)")
    rerun = rerun_episode(run_dir, args.only)
    row = rerun.row
    verdict = "success" if row["success"] else f"failed ({row['end_reason']})"
    print(f"{row['episode_id']} ({row['variation_label']}, policy {row['policy']}, seed {row['seed']}, episode "
          f"{row['episode']}): {verdict}, {row['parts_placed']}/{row['parts']} parts placed, "
          f"{row['sim_s']:.2f} s simulated, {row['wall_s']:.2f} s wall, {row['cpu_s']:.2f} s CPU")
    if rerun.recorded is None:
        print(f"no recorded row for {row['episode_id']} in {run_dir} yet; this row is in {rerun.record}")
        return 0
    if rerun.matches:
        print(f"matches the recorded row (every outcome column equal); recorded in {rerun.record}")
        return 0
    for column, (was, now) in rerun.differences.items():
        print(f"  {column}: recorded {was!r}, now {now!r}")
    print(f"DIFFERS from the recorded row in {len(rerun.differences)} outcome column(s); recorded in {rerun.record}")
    return 1
