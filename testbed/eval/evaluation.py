"""An evaluation: every episode of every (variation, policy), run on workers, journaled, summarised.

Layout of ``runs/<run_id>/``:

- ``evaluation.json``: the plan, written before the first episode (launch file, its resolved YAML, the
  sweep, the policies, seeds, every episode id, the settings it was started with);
- ``results.jsonl``: one row per finished episode, durable as it ends (``testbed.eval.journal``);
- ``events.jsonl``: ``run_start`` / ``run_resumed``, ``batch_failed``, ``run_end`` or ``run_aborted``;
- ``sessions.jsonl``: wall time, episodes and workers started of each session that ended (started, resumed),
  and the CPU seconds of each shared policy server with the episodes it served;
- at the end: ``results.parquet``, ``summary.json``, ``metrics.json`` (all episodes merged), plots, and
  ``workers/`` with each batch's own run record.

``resume`` keeps the journaled episodes and runs only the others; an episode is its id, so nothing is
counted twice.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.errors import ScenarioError, TestbedError, WorkerFailed
from testbed.eval.events import EventStream
from testbed.eval.journal import (
    LATENCIES_KEY,
    OUTCOME_COLUMNS,
    RESULTS_JSONL,
    RESULTS_PARQUET,
    Journal,
    read_journal,
    result_rows,
    write_parquet,
)
from testbed.eval.metrics import build_metrics
from testbed.eval.runner import create_run_dir, noting_failure
from testbed.eval.sweep import PolicyChoice, Variation, episode_id, parse_episode_id, policies, variations
from testbed.eval.tasks import WORKER_ENV, Batch, Row, serve_key, tally_of
from testbed.scenario.loader import LoadedScenario, load

if TYPE_CHECKING:
    from testbed.eval.cost import EnergyMeter

PLAN_FILE = "evaluation.json"
SESSIONS_FILE = "sessions.jsonl"
MAX_BATCH = 10  # episodes per batch at most: a batch builds one world (~0.3 s), episodes take ~0.5-1 s each


@dataclass(frozen=True)
class Settings:
    """How an evaluation runs (not what it measures: outcomes do not depend on these).

    Args:
        workers: worker processes (local) or Ray actors.
        ray: None for local processes, ``local`` for a local Ray instance, or a cluster address.
        policy_servers: ``per-worker`` (each worker starts its own server for a ``serve:`` policy and keeps it
            for its later batches) or ``shared`` (the evaluation starts one, every worker connects over gRPC).
    """

    workers: int = 2
    ray: str | None = None
    policy_servers: str = "per-worker"

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ScenarioError(f"--workers: expected a positive number of processes, got {self.workers}")
        if self.policy_servers not in ("per-worker", "shared"):
            raise ScenarioError(f"--policy-servers: expected per-worker or shared, got {self.policy_servers!r}")
        if self.policy_servers == "shared" and self.ray not in (None, "local"):
            raise ScenarioError("--policy-servers shared: shared servers listen on this machine's loopback, which "
                                f"the nodes of --ray {self.ray} cannot reach; use --policy-servers per-worker")

    def to_json(self) -> dict[str, Any]:
        """As stored in ``evaluation.json``."""
        return {"workers": self.workers, "ray": self.ray, "policy_servers": self.policy_servers}


@dataclass(frozen=True)
class Group:
    """The episodes of one (variation, policy): what every batch of it runs with."""

    variation: Variation
    policy: PolicyChoice
    seed: int
    overrides: tuple[str, ...]  # base + variation + policy, in that order
    serve: dict[str, Any] | None  # a served policy the workers start: {target, args}

    def to_json(self) -> dict[str, Any]:
        """As stored in ``evaluation.json``."""
        return {"variation": self.variation.id, "policy": self.policy.name, "seed": self.seed,
                "overrides": list(self.overrides), "serve": self.serve}


@dataclass(frozen=True)
class Plan:
    """What an evaluation runs: every (variation, policy) group and its episodes."""

    launch: Path  # absolute
    launch_as_given: str
    overrides: tuple[str, ...]  # base overrides (--episodes and key:=value)
    resolved_yaml: str
    name: str
    episodes: int
    sweeps: tuple[str, ...]
    variations: tuple[Variation, ...]
    policies: tuple[PolicyChoice, ...]
    groups: tuple[Group, ...]

    def episode_ids(self) -> list[str]:
        """Every episode id, in plan order."""
        return [episode_id(g.variation.id, g.policy.name, e) for g in self.groups for e in range(self.episodes)]

    def group(self, variation: str, policy: str) -> Group | None:
        """The group of (variation, policy), if planned."""
        return next((g for g in self.groups if g.variation.id == variation and g.policy.name == policy), None)

    def to_json(self, settings: Settings) -> dict[str, Any]:
        """The content of ``evaluation.json``."""
        return {
            "format": 1,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "launch_file": str(self.launch), "launch_file_as_given": self.launch_as_given,
            "overrides": list(self.overrides), "resolved_yaml": self.resolved_yaml, "name": self.name,
            "episodes": self.episodes, "sweep": list(self.sweeps),
            "variations": [v.to_json() for v in self.variations],
            "policies": [p.to_json() for p in self.policies],
            "seeds": sorted({g.seed for g in self.groups}),
            "groups": [g.to_json() for g in self.groups],
            "episode_ids": self.episode_ids(),
            "settings": settings.to_json(),
        }


def _policy_driven(loaded: LoadedScenario) -> list[int]:
    return [i for i, r in enumerate(loaded.scenario.cell.robots) if not r.external and i not in loaded.jobs]


def _served(loaded: LoadedScenario) -> dict[str, Any] | None:
    """The served policy a worker can start and reuse for this scenario: one policy-driven robot, ``policy.serve``.

    With several policy-driven robots, ``run_scenario`` starts a server per robot itself (each gets its
    robot's model), so nothing is started ahead.
    """
    policy = loaded.scenario.policy
    robots = _policy_driven(loaded)
    if policy.serve is None or len(robots) != 1:
        return None
    args = dict(policy.args)
    if policy.serve == "expert":
        args.setdefault("robot", loaded.scenario.cell.robots[robots[0]].model)
    return {"target": policy.serve, "args": args}


def plan_evaluation(launch: str | Path, overrides: Sequence[str] = (), *, episodes: int | None = None,
                    sweeps: Sequence[str] = (), policy_flags: Sequence[str] = (),
                    policy_args: Sequence[str] = ()) -> Plan:
    """Check every flag and load every (variation, policy) combination before anything runs.

    Raises:
        ScenarioError: the launch file, an override, a ``--sweep``, ``--policy`` or ``--policy-arg`` is wrong
            (the message names which).
    """
    if episodes is not None and episodes < 1:
        raise ScenarioError(f"--episodes: expected a positive number of episodes, got {episodes}")
    base_overrides = [*overrides, *([f"episodes:={episodes}"] if episodes is not None else [])]
    base = load(launch, base_overrides)
    swept = variations(sweeps)
    chosen = policies(policy_flags, policy_args)
    for v in swept:
        try:
            load(launch, [*base_overrides, *v.overrides()])
        except ScenarioError as exc:
            raise ScenarioError(f"--sweep {v.label}: {exc}") from exc
    for p in chosen:
        try:
            load(launch, [*base_overrides, *p.overrides()])
        except ScenarioError as exc:
            raise ScenarioError(f"--policy {p.name}={p.endpoint}: {exc}") from exc
    groups = []
    for v in swept:
        for p in chosen:
            combined = [*base_overrides, *v.overrides(), *p.overrides()]
            try:
                loaded = load(launch, combined)
            except ScenarioError as exc:
                raise ScenarioError(f"--sweep {v.label} with --policy {p.name}: {exc}") from exc
            groups.append(Group(v, p, loaded.scenario.seed, tuple(combined), _served(loaded)))
    return Plan(launch=Path(launch).resolve(), launch_as_given=str(launch), overrides=tuple(base_overrides),
                resolved_yaml=base.resolved_yaml(), name=base.scenario.name, episodes=base.scenario.episodes,
                sweeps=tuple(sweeps), variations=tuple(swept), policies=tuple(chosen), groups=tuple(groups))


def read_plan(run_dir: Path) -> tuple[Plan, Settings]:
    """The plan and settings of an evaluation directory, checked against its launch file as it is now.

    Raises:
        ScenarioError: not an evaluation directory, or the launch file changed since (results would mix).
    """
    path = Path(run_dir) / PLAN_FILE
    if not path.is_file():
        raise ScenarioError(f"{run_dir}: not an evaluation directory (no {PLAN_FILE}); expected runs/<run_id> "
                            "of an earlier `testbed eval`")
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path}: not valid JSON ({exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text ({exc.reason}); expected the JSON plan `testbed eval` "
                            "wrote") from exc
    _check_plan_json(path, stored)
    policy_args = [f"{p['name']}.{k}={v}" for p in stored["policies"] if p["endpoint"] for k, v in p["args"].items()]
    policy_flags = [f"{p['name']}={p['endpoint']}" for p in stored["policies"] if p["endpoint"]]
    plan = plan_evaluation(stored["launch_file"], stored["overrides"], sweeps=stored["sweep"],
                           policy_flags=policy_flags, policy_args=policy_args)
    if plan.resolved_yaml != stored["resolved_yaml"] or plan.episode_ids() != stored["episode_ids"]:
        raise ScenarioError(f"{run_dir}: the launch file {stored['launch_file']} (with the evaluation's overrides) "
                            "no longer resolves to the scenario this evaluation started with; resuming would mix "
                            "results of two scenarios. Start a new evaluation instead")
    s = stored["settings"]
    return plan, Settings(workers=s["workers"], ray=s["ray"], policy_servers=s["policy_servers"])


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


_PLAN_FIELDS: tuple[tuple[str, str, Any], ...] = (  # what read_plan reads: (key, what it must be, its check)
    ("launch_file", "a string (the launch file's path)", lambda v: isinstance(v, str) and v != ""),
    ("overrides", "a list of strings (key:=value)", _strings),
    ("sweep", "a list of strings (--sweep flags)", _strings),
    ("resolved_yaml", "a string (the resolved launch file)", lambda v: isinstance(v, str)),
    ("episode_ids", "a list of strings (episode ids)", _strings),
    ("policies", "a list of objects {name, endpoint, args}", lambda v: isinstance(v, list)),
    ("settings", "an object {workers, ray, policy_servers}", lambda v: isinstance(v, dict)),
)
_POLICY_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("name", "a string", lambda v: isinstance(v, str) and v != ""),
    ("endpoint", "a string (\"\" for the launch file's own policy)", lambda v: isinstance(v, str)),
    ("args", "an object of strings", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values())),
)
_SETTINGS_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("workers", "a positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    ("ray", "null or a Ray address", lambda v: v is None or isinstance(v, str)),
    ("policy_servers", "per-worker or shared", lambda v: v in ("per-worker", "shared")),
)


def _check_plan_json(path: Path, stored: Any) -> None:
    """Check what ``read_plan`` reads from ``evaluation.json`` before it is used.

    Raises:
        ScenarioError: naming the file, the field (``policies[1].endpoint``), what was expected and what arrived.
    """
    def check(obj: dict[str, Any], fields: tuple[tuple[str, str, Any], ...], prefix: str) -> None:
        for key, expected, fits in fields:
            if key not in obj:
                raise ScenarioError(f"{path}: {prefix}{key} is missing; expected {expected} (the file is not the "
                                    "evaluation.json `testbed eval` wrote, or it was edited)")
            if not fits(obj[key]):
                raise ScenarioError(f"{path}: {prefix}{key}: expected {expected}, got {obj[key]!r}")

    if not isinstance(stored, dict):
        raise ScenarioError(f"{path}: expected a JSON object (the plan `testbed eval` wrote), got "
                            f"{type(stored).__name__}")
    if stored.get("format") != 1:
        raise ScenarioError(f"{path}: format: expected 1 (the only evaluation.json format), got "
                            f"{stored.get('format')!r}")
    check(stored, _PLAN_FIELDS, "")
    for index, policy in enumerate(stored["policies"]):
        if not isinstance(policy, dict):
            raise ScenarioError(f"{path}: policies[{index}]: expected an object {{name, endpoint, args}}, got "
                                f"{policy!r}")
        check(policy, _POLICY_FIELDS, f"policies[{index}].")
    check(stored["settings"], _SETTINGS_FIELDS, "settings.")


def make_batches(plan: Plan, pending: set[str], workers: int, runs_dir: Path,
                 shared_endpoints: dict[str, str]) -> list[Batch]:
    """The pending episodes as batches of one (variation, policy), about two per worker so the work spreads evenly."""
    size = max(1, min(MAX_BATCH, math.ceil(len(pending) / (2 * workers))))
    batches: list[Batch] = []
    for group in plan.groups:
        todo = [e for e in range(plan.episodes) if episode_id(group.variation.id, group.policy.name, e) in pending]
        for start in range(0, len(todo), size):
            serve = group.serve
            endpoint = shared_endpoints.get(serve_key(serve)) if serve is not None else None
            batches.append({
                "batch": len(batches), "launch": str(plan.launch), "overrides": list(group.overrides),
                "variation": group.variation.id, "variation_label": group.variation.label,
                "variation_values": dict(group.variation.values), "policy": group.policy.name,
                "seed": group.seed, "episodes": todo[start:start + size], "runs_dir": str(runs_dir),
                "serve": None if endpoint else serve, "endpoint": endpoint,
            })
    return batches


def describe_batch(batch: Batch) -> str:
    """``v1/expert episodes 0, 2, 4``."""
    return f"{batch['variation']}/{batch['policy']} episode(s) {', '.join(str(e) for e in batch['episodes'])}"


class Reporter:
    """Progress of an evaluation: override ``start``, ``row`` and ``close`` (the default says nothing)."""

    def start(self, total: int, done: int) -> None:
        """``total`` episodes planned, ``done`` already journaled."""

    def row(self, row: Row) -> None:
        """One episode finished."""

    def close(self) -> None:
        """The session ended (or failed)."""


@dataclass
class SessionResult:
    """What one session (a start or a resume) of an evaluation did."""

    run_dir: Path
    run_id: str
    complete: bool
    episodes_run: int
    wall_s: float
    workers: int
    rows: list[Row] = field(default_factory=list)  # every row of the evaluation (contract columns), when complete
    summary: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Evaluation:
    """An evaluation directory and how to (re)run what is missing in it.

    Create one with ``Evaluation.create`` (new directory, ``evaluation.json`` written) or
    ``Evaluation.open`` (an earlier one, for ``--resume``), then call ``run``.
    """

    def __init__(self, run_dir: Path, plan: Plan, settings: Settings, *, resumed: bool) -> None:
        self.run_dir = run_dir
        self.run_id = run_dir.name
        self.plan = plan
        self.settings = settings
        self.resumed = resumed
        self._workers_used = 0  # worker processes (or actors) this session started: at most one per batch
        self._server_cpu: list[dict[str, Any]] = []  # this session's shared policy servers: cpu_s, episodes served

    @classmethod
    def create(cls, plan: Plan, settings: Settings, runs_dir: Path = Path("runs")) -> Evaluation:
        """A fresh ``runs_dir/<run_id>/`` with the plan in ``evaluation.json``."""
        _run_id, run_dir = create_run_dir(runs_dir, plan.name)
        _write_json(run_dir / PLAN_FILE, plan.to_json(settings))
        (run_dir / "scenario.yaml").write_text(plan.resolved_yaml, encoding="utf-8")
        return cls(run_dir, plan, settings, resumed=False)

    @classmethod
    def open(cls, run_dir: Path, *, workers: int | None = None, ray: str | None = None,
             policy_servers: str | None = None) -> Evaluation:
        """An earlier evaluation, to resume; the given settings replace the stored ones (outcomes do not change)."""
        plan, stored = read_plan(run_dir)
        settings = Settings(workers=workers or stored.workers, ray=ray if ray is not None else stored.ray,
                            policy_servers=policy_servers or stored.policy_servers)
        return cls(Path(run_dir), plan, settings, resumed=True)

    def journaled(self) -> list[Row]:
        """Rows journaled so far (first of each episode id; the journal's extras kept)."""
        planned = set(self.plan.episode_ids())
        return [r for r in read_journal(self.run_dir / RESULTS_JSONL) if r["episode_id"] in planned]

    def resume_command(self) -> str:
        """The command that continues this evaluation."""
        return f"testbed eval --resume {self.run_dir}"

    def run(self, reporter: Reporter | None = None, *, cost: Any = None) -> SessionResult:
        """Run every episode not yet journaled, then write the results (when all are in).

        Raises:
            WorkerFailed: a worker died or a batch failed (journaled episodes are kept; resume continues).
            KeyboardInterrupt: Ctrl-C (the events end with ``run_aborted``; resume continues).
        """
        reporter = reporter or Reporter()
        self._workers_used, self._server_cpu = 0, []
        done = {r["episode_id"] for r in self.journaled()}
        planned = self.plan.episode_ids()
        pending = {i for i in planned if i not in done}
        ran: list[str] = []
        started = time.perf_counter()
        events = EventStream(self.run_dir / "events.jsonl")
        meter = _energy_meter()
        outcome = "aborted"
        with ExitStack() as stack:
            stack.callback(events.close)
            stack.callback(lambda: self._note_session(started, ran, outcome))
            stack.push(noting_failure(events))
            events.emit("run_resumed" if self.resumed else "run_start", 0.0, None, run_id=self.run_id,
                        scenario=self.plan.name, episodes=len(planned), journaled=len(done), pending=len(pending),
                        **self.settings.to_json())
            meter.start()
            stack.callback(meter.stop)
            reporter.start(len(planned), len(done))
            stack.callback(reporter.close)
            if pending:
                journal = stack.enter_context(Journal(self.run_dir / RESULTS_JSONL))
                self._dispatch(pending, journal, events, reporter, ran, stack)
            wall_s = time.perf_counter() - started
            events.emit("run_end", 0.0, None, episodes_run=len(ran), wall_s=round(wall_s, 3))
            outcome = "completed"
        return self._finish(ran, wall_s, cost, meter.measurement)

    def _dispatch(self, pending: set[str], journal: Journal, events: EventStream, reporter: Reporter,
                  ran: list[str], stack: ExitStack) -> None:
        settings = self.settings
        shared = self._start_shared_servers(stack, ran) if settings.policy_servers == "shared" else {}
        batches = make_batches(self.plan, pending, settings.workers, self.run_dir / "workers", shared)
        workers = min(settings.workers, len(batches))
        self._workers_used = workers
        backend = _open_backend(settings, workers)
        aborting = [True]
        stack.callback(lambda: backend.close(abort=aborting[0]))
        queue, idle = deque(batches), list(range(workers))
        running: dict[int, Batch] = {}
        by_id = {b["batch"]: b for b in batches}
        while queue or running:
            while idle and queue:
                worker = idle.pop(0)
                running[worker] = queue.popleft()
                try:
                    backend.submit(worker, running[worker])
                except WorkerFailed as exc:  # it died after the last poll
                    raise WorkerFailed(f"{exc} ({describe_batch(running[worker])}); the {len(ran)} episode(s) of "
                                       f"this session already journaled are kept in {journal.path}; resume with: "
                                       f"{self.resume_command()}") from exc
            for msg in backend.poll(0.5):
                kind, worker = msg["kind"], msg["worker"]
                if kind == "row":
                    row = msg["row"]
                    if row["episode_id"] in pending:
                        pending.discard(row["episode_id"])
                        journal.append(row)
                        ran.append(row["episode_id"])
                        reporter.row(row)
                elif kind == "done":
                    running.pop(worker, None)
                    idle.append(worker)
                elif kind == "error":
                    batch = by_id.get(msg["batch"]) or running.get(worker) or {}
                    events.emit("batch_failed", 0.0, None, worker=backend.describe(worker), error=msg["error"],
                                message=msg["message"][:2000])
                    where = describe_batch(batch) if batch else "a batch"
                    raise WorkerFailed(f"{backend.describe(worker)} failed on {where}: {msg['error']}: "
                                       f"{msg['message'].strip()}; {len(ran)} episode(s) of this session are "
                                       f"journaled in {journal.path}; resume with: {self.resume_command()}")
                elif kind == "died":
                    batch = running.get(worker)
                    what = f"while running {describe_batch(batch)}" if batch else "while idle"
                    raise WorkerFailed(f"evaluation {backend.describe(worker)} died ({msg['detail']}) {what}; "
                                       f"the {len(ran)} episode(s) of this session already journaled are kept in "
                                       f"{journal.path}; resume with: {self.resume_command()}")
        aborting[0] = False

    def _start_shared_servers(self, stack: ExitStack, ran: list[str]) -> dict[str, str]:
        """One policy server per distinct served policy, started by the evaluation; key -> endpoint.

        No episode's ``cpu_s`` holds a shared server's CPU (it is this process's child, not a worker's), so each
        server's CPU seconds from ready to the session's end are noted with the episodes of ``ran`` it served.
        """
        from testbed.bridge.spawn import spawn_policy_server
        from testbed.eval.cpu import process_cpu_s

        endpoints: dict[str, str] = {}
        for group in self.plan.groups:
            if group.serve is None:
                continue
            key = serve_key(group.serve)
            if key not in endpoints:
                log = self.run_dir / "logs" / f"policy-{group.policy.name}-{len(endpoints)}.log"
                server = stack.enter_context(spawn_policy_server(group.serve["target"], group.serve["args"],
                                                                 log_path=log, env=WORKER_ENV))
                endpoints[key] = server.endpoint
                # runs before the server stops (an ExitStack unwinds in reverse); from ready, like a worker's
                # own server, whose start-up happens before its first episode's CPU reading
                stack.callback(self._note_server_cpu, server.pid, process_cpu_s(server.pid), key, ran)
        return endpoints

    def _note_server_cpu(self, pid: int, cpu_at_ready_s: float, key: str, ran: list[str]) -> None:
        from testbed.eval.cpu import process_cpu_s

        served = [e for e in ran if self._serve_key(e) == key]
        cpu_s = process_cpu_s(pid) - cpu_at_ready_s  # negative when the server is gone (its figures unreadable)
        self._server_cpu.append({"serve": json.loads(key), "cpu_s": round(max(0.0, cpu_s), 4), "episodes": served})

    def _serve_key(self, episode: str) -> str | None:
        variation, policy, _ = parse_episode_id(episode)
        group = self.plan.group(variation, policy)
        return serve_key(group.serve) if group is not None and group.serve is not None else None

    def _note_session(self, started: float, ran: list[str], outcome: str) -> None:
        line = {"ended": datetime.now(UTC).isoformat(timespec="seconds"), "outcome": outcome,
                "wall_s": round(time.perf_counter() - started, 3), "episodes_run": len(ran),
                **self.settings.to_json(), "workers_used": self._workers_used}
        if self._server_cpu:
            line["shared_policy_servers"] = self._server_cpu
        with (self.run_dir / SESSIONS_FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def _finish(self, ran: list[str], wall_s: float, cost: Any, energy: Any) -> SessionResult:
        """Parquet, summary, plots and the merged metrics from the journal (every planned episode is in it)."""
        sessions = self._sessions()
        journaled = _with_server_shares(self.journaled(), sessions)
        rows = result_rows(journaled)
        result = SessionResult(self.run_dir, self.run_id, complete=len(rows) == len(self.plan.episode_ids()),
                               episodes_run=len(ran), wall_s=wall_s, workers=self._workers_used, rows=rows)
        if not result.complete:
            return result
        write_parquet(rows, self.run_dir / RESULTS_PARQUET)
        total_wall_s = sum(s["wall_s"] for s in sessions)
        reserved_core_s = sum(s["wall_s"] * s["workers_used"] for s in sessions)
        workers = max((s["workers_used"] for s in sessions), default=0)
        result.metrics = self._metrics(journaled, total_wall_s, workers, sessions)
        _write_json(self.run_dir / "metrics.json", result.metrics)
        from testbed.eval.cost import CostSettings
        from testbed.eval.plots import write_plots
        from testbed.eval.stats import RAW_LATENCIES, summarize

        if energy is not None and self.resumed:
            energy = energy.covering(ran)
        # the contract's columns plus each episode's raw round trips: the summary pools every one of them
        round_trips = {r["episode_id"]: r.get(LATENCIES_KEY) for r in journaled}
        summary_rows = [{**r, RAW_LATENCIES: round_trips[r["episode_id"]]} for r in rows]
        result.summary = summarize(summary_rows, cost=cost or CostSettings(), wall_s=total_wall_s, workers=workers,
                                   energy=energy, reserved_core_s=reserved_core_s)
        _write_json(self.run_dir / "summary.json", result.summary)
        try:
            result.plots = write_plots(rows, result.summary, self.run_dir / "plots", notes=result.notes)
        except TestbedError as exc:  # matplotlib missing: the results stand without pictures
            result.notes.append(str(exc))
        return result

    def _sessions(self) -> list[dict[str, Any]]:
        """Every session that ended: ``wall_s``, ``workers_used`` and its shared servers (``sessions.jsonl``).

        A killed session's time is unknown and left out. A line written before ``workers_used`` was recorded
        counts the workers it asked for (``workers``), the best figure it holds.
        """
        path = self.run_dir / SESSIONS_FILE
        if not path.exists():
            return []
        sessions = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                stored = json.loads(line)
                wall_s = float(stored["wall_s"])
                workers = int(stored.get("workers_used", stored["workers"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            servers = stored.get("shared_policy_servers")
            sessions.append({"wall_s": wall_s, "workers_used": workers,
                             "shared_policy_servers": servers if isinstance(servers, list) else []})
        return sessions

    def _metrics(self, journaled: list[Row], wall_s: float, workers: int,
                 sessions: list[dict[str, Any]]) -> dict[str, Any]:
        """``metrics.json`` over every episode (as ``testbed launch`` writes it) plus an ``evaluation`` block."""
        scenario = load(self.plan.launch, self.plan.overrides).scenario
        rows = sorted(journaled, key=lambda r: r["episode_id"])
        control = {"cycle_ms": round(1000.0 / scenario.sim.physics_hz, 6), "robots": len(scenario.cell.robots),
                   "mode": "realtime" if scenario.sim.realtime else "lockstep", "jitter_us_p99": None,
                   "missed_cycles": None}
        metrics = build_metrics(run_id=self.run_id, scenario=self.plan.name, tallies=[tally_of(r) for r in rows],
                                policy_latency_ms=[x for r in rows for x in r.get(LATENCIES_KEY) or []],
                                sim_s=sum(r["sim_s"] for r in rows), wall_s=sum(r["wall_s"] for r in rows),
                                control=control)
        metrics["evaluation"] = {
            "workers": workers, "workers_per_session": [s["workers_used"] for s in sessions],
            "backend": "ray" if self.settings.ray else "local",
            "ray": self.settings.ray, "policy_servers": self.settings.policy_servers,
            "wall_s": round(wall_s, 3),
            "episodes_per_minute": round(len(rows) / wall_s * 60.0, 3) if wall_s > 0 else None,
            "variations": [v.to_json() for v in self.plan.variations],
            "policies": [p.name for p in self.plan.policies],
            "cpu_s": round(sum(r["cpu_s"] for r in rows if r["cpu_s"] is not None), 3),
            "shared_policy_server_cpu_s": round(sum(_server_cpu_s(s) for s in sessions), 3),
        }
        return metrics


def _server_cpu_s(session: dict[str, Any]) -> float:
    return sum(float(x.get("cpu_s") or 0.0) for x in session["shared_policy_servers"] if isinstance(x, dict))


def _with_server_shares(journaled: list[Row], sessions: list[dict[str, Any]]) -> list[Row]:
    """Rows whose ``cpu_s`` includes an equal share of each shared policy server's CPU over the episodes it served.

    With ``--policy-servers shared`` the server is the evaluation's child, so a worker's reading leaves it
    out; per-worker servers are the worker's children and already counted. The journal keeps the worker's
    own figure; ``results.parquet`` and ``summary.json`` carry the sum.
    """
    share: dict[str, float] = {}
    for session in sessions:
        for server in session["shared_policy_servers"]:
            episodes = server.get("episodes") if isinstance(server, dict) else None
            if not isinstance(episodes, list) or not episodes:
                continue
            for episode in episodes:
                share[episode] = share.get(episode, 0.0) + float(server.get("cpu_s") or 0.0) / len(episodes)
    return [{**r, "cpu_s": round(r["cpu_s"] + share[r["episode_id"]], 4)}
            if r["episode_id"] in share and r["cpu_s"] is not None else r for r in journaled]


def _energy_meter() -> EnergyMeter:
    from testbed.eval.cost import energy_meter

    return energy_meter()


def _open_backend(settings: Settings, workers: int) -> Any:
    from testbed.eval.backends import LocalBackend, RayBackend

    if settings.ray is not None:
        return RayBackend(workers, settings.ray)
    return LocalBackend(workers)


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class Rerun:
    """One episode run again: its new row, the recorded one, and the outcome columns that differ."""

    row: Row
    recorded: Row | None
    differences: dict[str, tuple[Any, Any]]
    record: Path

    @property
    def matches(self) -> bool:
        """True when a recorded row exists and every outcome column is equal."""
        return self.recorded is not None and not self.differences


def _run_alone(batch: Batch) -> Row:
    """Run a one-episode batch in a worker process, as the evaluation's workers ran it (same environment).

    Raises:
        WorkerFailed: the episode failed or the worker died.
    """
    from testbed.eval.backends import LocalBackend

    backend = LocalBackend(1)
    rows: list[Row] = []
    try:
        backend.submit(0, batch)
        while True:
            for msg in backend.poll(0.5):
                if msg["kind"] == "row":
                    rows.append(msg["row"])
                elif msg["kind"] == "done":
                    (row,) = rows
                    return row
                elif msg["kind"] == "error":
                    raise WorkerFailed(f"re-running {describe_batch(batch)} failed: {msg['error']}: "
                                       f"{msg['message'].strip()}")
                else:
                    raise WorkerFailed(f"re-running {describe_batch(batch)}: the worker died ({msg['detail']})")
    finally:
        backend.close(abort=not rows)


def rerun_episode(run_dir: Path, only: str) -> Rerun:
    """Run episode ``only`` of an earlier evaluation again, in a worker process, and compare it with the journal.

    The new row is written to ``RUN_DIR/reruns/<id>-<time>.json`` with the comparison.

    Raises:
        ScenarioError: a malformed id, or one the evaluation did not plan.
    """
    run_dir = Path(run_dir)
    variation, policy, episode = parse_episode_id(only)
    plan, _ = read_plan(run_dir)
    group = plan.group(variation, policy)
    if group is None or not 0 <= episode < plan.episodes:
        known = ", ".join(f"{g.variation.id}/{g.policy.name}" for g in plan.groups)
        raise ScenarioError(f"--only {only}: not an episode of {run_dir} (variation/policy pairs: {known}; "
                            f"episodes 0..{plan.episodes - 1})")
    batch = make_batches(plan, {episode_id(variation, policy, episode)}, 1, run_dir / "reruns", {})[0]
    row = _run_alone(batch)
    recorded = next((r for r in read_journal(run_dir / RESULTS_JSONL) if r["episode_id"] == row["episode_id"]), None)
    differences = {c: (recorded.get(c), row[c]) for c in OUTCOME_COLUMNS
                   if recorded is not None and recorded.get(c) != row[c]}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    record = run_dir / "reruns" / f"{row['episode_id'].replace('/', '_')}-{stamp}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    result = Rerun(row, recorded, differences, record)
    _write_json(record, {"row": {k: v for k, v in row.items() if k != LATENCIES_KEY},
                         "recorded": recorded is not None, "matches": result.matches,
                         "differences": {k: list(v) for k, v in differences.items()}})
    return result
