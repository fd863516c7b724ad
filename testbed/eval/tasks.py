"""Evaluation tasks: batches of episodes of one (variation, policy), run in a worker, one result row per episode.

A batch is a plain JSON-able dict (it crosses process and network boundaries as JSON, never pickled):
``{"batch": n, "launch": absolute path, "overrides": [...], "variation": "v0", "variation_label": ...,
"variation_values": {...}, "policy": name, "seed": int, "episodes": [...], "runs_dir": path,
"serve": {"target", "args"} or None, "endpoint": "grpc://..." or None}``.
``serve`` asks the worker for a policy server of its own (started once per process and reused by its later
batches); ``endpoint`` names a server the evaluation shares between workers.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from testbed.eval.journal import LATENCIES_KEY
from testbed.eval.metrics import EpisodeTally, _percentiles
from testbed.eval.sweep import episode_id

if TYPE_CHECKING:
    from testbed.bridge.spawn import PolicyServerProcess

Batch = dict[str, Any]
Row = dict[str, Any]

_SERVERS: dict[str, PolicyServerProcess] = {}  # this process's policy servers, by (target, args)

# Every process that runs episodes or serves a policy keeps its numeric libraries on one thread: one worker
# per core is the plan, BLAS threads on top would oversubscribe the cores, and Ray pins its workers the same
# way, so both backends run alike (outcomes were identical with 1 and 2 BLAS threads when tried).
WORKER_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                     "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}


@contextlib.contextmanager
def worker_environment() -> Iterator[None]:
    """``WORKER_ENV`` in ``os.environ`` while processes are started (they inherit it), then as it was."""
    saved = {name: os.environ.get(name) for name in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def worker_name() -> str:
    """``<hostname>:<pid>`` of this process, as in the ``worker`` column."""
    return f"{socket.gethostname()}:{os.getpid()}"


def endpoint_overrides(endpoint: str) -> list[str]:
    """Overrides that point the launch file's policy at a running testbed policy server."""
    return ["policy.builtin:=null", "policy.serve:=null", "policy.protocol:=testbed",
            f"policy.endpoint:={json.dumps(endpoint)}"]


def serve_key(serve: dict[str, Any]) -> str:
    """The key one served policy {target, args} goes by: the same server for the same target and arguments."""
    return json.dumps(serve, sort_keys=True)


def policy_server(serve: dict[str, Any], log_dir: Path) -> PolicyServerProcess:
    """This process's server for ``serve`` {target, args}: started once, then reused (restarted if it ended)."""
    from testbed.bridge.spawn import spawn_policy_server

    key = serve_key(serve)
    server = _SERVERS.get(key)
    if server is not None and server.exit_status() is not None:
        server.stop(1.0)
        server = None
    if server is None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"policy-{socket.gethostname()}-{os.getpid()}-{len(_SERVERS)}.log"
        server = spawn_policy_server(serve["target"], serve["args"], log_path=log, env=WORKER_ENV)
        _SERVERS[key] = server
    return server


@atexit.register
def close_policy_servers() -> None:
    """Stop every policy server this process started (they also stop by themselves when it is gone)."""
    while _SERVERS:
        _, server = _SERVERS.popitem()
        server.stop(2.0)


def _writable_runs_dir(path: str) -> Path:
    """The batch's run-record folder, or one under the temporary folder where it cannot be made (a remote node)."""
    runs = Path(path)
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError:
        runs = Path(tempfile.gettempdir()) / "testbed-eval" / runs.parent.name
        runs.mkdir(parents=True, exist_ok=True)
    return runs


def run_batch(batch: Batch, emit: Callable[[Row], None]) -> None:
    """Run a batch's episodes with ``run_scenario`` and call ``emit`` with each episode's row as it ends.

    Raises:
        TestbedError: as ``run_scenario`` raises it (e.g. the policy is unavailable or does not fit).
    """
    from testbed.eval.runner import run_scenario
    from testbed.scenario.loader import load

    runs_dir = _writable_runs_dir(batch["runs_dir"])
    overrides = list(batch["overrides"])
    if batch.get("serve"):
        overrides += endpoint_overrides(policy_server(batch["serve"], runs_dir / "logs").endpoint)
    elif batch.get("endpoint"):
        overrides += endpoint_overrides(batch["endpoint"])
    worker = worker_name()

    def on_episode(tally: EpisodeTally, figures: dict[str, Any]) -> None:
        emit(make_row(batch, tally, figures, worker))

    run_scenario(load(batch["launch"], overrides), runs_dir=runs_dir, episodes=batch["episodes"],
                 on_episode=on_episode)


def make_row(batch: Batch, tally: EpisodeTally, figures: dict[str, Any], worker: str) -> Row:
    """One episode's result row (the evaluation contract's columns, plus its raw policy round trips)."""
    latencies = list(figures["policy_latency_ms"])
    latency = _percentiles(latencies, {"p50": 50, "p95": 95}, 4)
    cycles = [float(c) for c in tally.cycle_times_s]
    return {
        "episode_id": episode_id(batch["variation"], batch["policy"], tally.episode),
        "variation": batch["variation"],
        "variation_label": batch["variation_label"],
        "overrides": json.dumps(batch["variation_values"]),
        "policy": batch["policy"],
        "seed": int(batch["seed"]),
        "episode": int(tally.episode),
        "success": bool(tally.success),
        "end_reason": tally.end_reason,
        "parts": tally.parts,
        "parts_placed": tally.placed,
        "parts_misplaced": tally.misplaced,
        "parts_dropped": tally.dropped,
        "cycle_times_s": cycles,
        "cycle_time_s_mean": float(np.mean(cycles)) if cycles else None,
        "sim_s": float(tally.duration_s),
        "collisions": tally.collisions,
        "safety_stops": tally.safety_stops,
        "policy_timeouts": tally.policy_timeouts,
        "starved_steps": tally.starved_steps,
        "late_chunks": tally.late_chunks,
        "policy_latency_ms_p50": latency["p50"],
        "policy_latency_ms_p95": latency["p95"],
        "wall_s": round(float(figures["wall_s"]), 4),
        "cpu_s": round(float(figures["cpu_s"]), 4),
        "worker": worker,
        LATENCIES_KEY: [round(x, 4) for x in latencies],
    }


def tally_of(row: Row) -> EpisodeTally:
    """The episode tally a row was made from (for the merged ``metrics.json``)."""
    return EpisodeTally(episode=row["episode"], parts=row["parts"], placed=row["parts_placed"],
                        misplaced=row["parts_misplaced"], dropped=row["parts_dropped"], collisions=row["collisions"],
                        safety_stops=row["safety_stops"], policy_timeouts=row["policy_timeouts"],
                        duration_s=row["sim_s"], success=row["success"], end_reason=row["end_reason"],
                        cycle_times_s=list(row["cycle_times_s"]), starved_steps=row["starved_steps"],
                        late_chunks=row["late_chunks"])
