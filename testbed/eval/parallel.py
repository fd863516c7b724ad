"""Evaluation across worker processes: a scenario's episodes split over workers, one merged record.

Every episode is determined by the seed and its index alone (the world is restored, the
workload drawn from ``(seed, episode)``), so splitting episodes across processes gives
the same episodes as one run; only the wall time changes. One pybullet world gains
nothing from threads, so parallelism comes from processes.

This is the one-scenario merge kept for its callers (one merged ``metrics.json``); ``testbed eval`` runs
sweeps, policies, Ray, the durable journal and resume through ``testbed.eval.evaluation``.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from testbed.errors import ScenarioError, WorkerFailed
from testbed.eval.events import EventStream
from testbed.eval.metrics import EpisodeTally, build_metrics
from testbed.eval.runner import RunResult, create_run_dir, noting_failure, run_scenario
from testbed.scenario.loader import LoadedScenario, load


def split_episodes(episodes: int, workers: int) -> list[list[int]]:
    """Episode indices per worker, dealt in turn so long and short episodes spread evenly."""
    return [list(range(w, episodes, workers)) for w in range(min(workers, episodes))]


def _run_share(path: str, overrides: Sequence[str], indices: Sequence[int], runs_dir: str) -> dict[str, Any]:
    """One worker's share, in its own process; returns JSON-friendly tallies (no objects cross the pipe)."""
    result = run_scenario(load(path, overrides), runs_dir=Path(runs_dir), episodes=indices)
    return {"run_dir": str(result.run_dir), "tallies": [asdict(t) for t in result.tallies],
            "policy_latency_ms": list(result.policy_latency_ms),
            "sim_s": result.metrics["sim_s"], "control": result.metrics["control"]}


def evaluate(loaded: LoadedScenario, *, workers: int, runs_dir: Path = Path("runs"),
             progress: Callable[[str], None] | None = None) -> RunResult:
    """Run every episode of a scenario on ``workers`` processes and write one merged ``metrics.json``.

    The evaluation's directory holds the resolved scenario, the merged metrics (with
    ``evaluation`` {workers, episodes_per_minute, wall_s, worker_runs}) and one run
    record per worker under ``workers/``.

    Raises:
        ScenarioError: ``workers`` is not a positive number, or ``runs_dir`` is not a directory.
        WorkerFailed: a worker process died.
    """
    if workers < 1:
        raise ScenarioError(f"--workers: expected a positive number of processes, got {workers}")
    scenario = loaded.scenario
    run_id, run_dir = create_run_dir(runs_dir, scenario.name)
    shares = split_episodes(scenario.episodes, workers)
    events = EventStream(run_dir / "events.jsonl")
    with ExitStack() as stack:
        stack.callback(events.close)
        stack.push(noting_failure(events))
        (run_dir / "workers").mkdir()
        (run_dir / "scenario.yaml").write_text(loaded.resolved_yaml(), encoding="utf-8")
        events.emit("run_start", 0.0, None, run_id=run_id, scenario=scenario.name, seed=scenario.seed,
                    episodes=scenario.episodes, workers=len(shares))
        started = time.perf_counter()
        parts = _run_shares(loaded, shares, run_dir, events, progress)
        wall_s = time.perf_counter() - started
        tallies = sorted((EpisodeTally(**t) for p in parts for t in p["tallies"]), key=lambda t: t.episode)
        sim_s = sum(p["sim_s"] for p in parts)
        metrics = build_metrics(run_id=run_id, scenario=scenario.name, tallies=tallies,
                                policy_latency_ms=[x for p in parts for x in p["policy_latency_ms"]], sim_s=sim_s,
                                wall_s=wall_s, control=parts[0]["control"])
        metrics["evaluation"] = {
            "workers": len(shares), "wall_s": round(wall_s, 3),
            "episodes_per_minute": round(len(tallies) / wall_s * 60.0, 3),
            "worker_runs": [str(Path(p["run_dir"]).relative_to(run_dir)) for p in parts],
        }
        events.emit("run_end", sim_s, None, success_rate=metrics["success_rate"])
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return RunResult(run_id, run_dir, metrics, tuple(tallies))


def _run_shares(loaded: LoadedScenario, shares: list[list[int]], run_dir: Path, events: EventStream,
                progress: Callable[[str], None] | None) -> list[dict[str, Any]]:
    """Run each share in its own spawned process; a worker that fails or dies fails the evaluation, named."""
    episodes = loaded.scenario.episodes
    # spawn, not fork: pybullet and gRPC keep threads and sockets a forked child must not inherit
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(shares), mp_context=context) as pool:
        futures = [pool.submit(_run_share, str(loaded.path), loaded.overrides, share, str(run_dir / "workers"))
                   for share in shares]
        parts = []
        for number, future in enumerate(futures, start=1):
            try:
                part = future.result()
            except BrokenProcessPool as exc:
                raise WorkerFailed(f"evaluation worker {number}/{len(shares)} died (killed, or crashed in native "
                                   f"code); its record is under {run_dir / 'workers'}") from exc
            parts.append(part)
            events.emit("worker_end", part["sim_s"], None, worker=number, run=part["run_dir"],
                        episodes=[t["episode"] for t in part["tallies"]])
            if progress is not None:
                done = sum(len(p["tallies"]) for p in parts)
                progress(f"worker {number}/{len(shares)} finished: {done}/{episodes} episodes")
    return parts
