"""Finished and running runs as the dashboard reads them: only from their records under the runs folder.

Every run id and file name that arrives in a request goes through ``RunRecords.run_dir`` / ``RunRecords.log``,
which refuse anything that is not a plain name inside the runs folder.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"
_RUN_ID = re.compile(RUN_ID_PATTERN)
LIVE_FILE = "live.json"  # written by a run that serves its own live feed (``testbed launch --dashboard``)
LATENCY_FILE = "policy_latency_ms.json"
MAX_LOG_BYTES = 256 * 1024
END_KINDS = ("run_end", "run_aborted")


class RecordNotFound(LookupError):
    """A run, or one of its files, does not exist; the message says which (HTTP 404)."""


class BadName(ValueError):
    """A run id or file name from a request is not a plain name inside the runs folder (HTTP 422)."""


@dataclass(frozen=True)
class RunSummary:
    """One row of the runs table: what ``metrics.json`` and the first and last events say."""

    run_id: str
    scenario: str | None
    policy: str | None
    status: str  # live, finished, aborted, incomplete
    started: str | None  # ISO 8601, UTC
    started_unix: float | None
    episodes: int | None
    success_rate: float | None
    parts_placed: int | None
    parts_total: int | None
    parts_per_min: float | None  # placed parts per simulated minute
    cycle_time_s: float | None  # mean
    safety_stops: int | None
    collisions: int | None
    policy_latency_p50_ms: float | None
    policy_latency_p99_ms: float | None
    sim_rtf: float | None
    sites: bool  # the run has an audit log
    reason: str | None  # why an aborted run ended


def check_name(value: str, what: str = "run id") -> str:
    """``value`` if it is a plain file name (letters, digits, '.', '_', '-', no '..'), else ``BadName``."""
    if not _RUN_ID.match(value) or ".." in value:
        raise BadName(f"{what} {value!r} is not allowed: use letters, digits, '.', '_' and '-' only, "
                      "starting with a letter or digit, without '..'")
    return value


class RunRecords:
    """Reads the run records under one runs folder.

    Args:
        runs_dir: the folder holding ``<run_id>/`` directories.
    """

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = Path(runs_dir)
        self._cache: dict[str, tuple[tuple[float, int, float], RunSummary]] = {}

    def run_dir(self, run_id: str) -> Path:
        """The directory of ``run_id``, checked to be a direct child of the runs folder.

        Raises:
            BadName: ``run_id`` is not a plain name.
            RecordNotFound: no such run.
        """
        check_name(run_id)
        root = self.runs_dir.resolve()
        path = (root / run_id).resolve()
        if path.parent != root or not path.is_dir():
            raise RecordNotFound(f"unknown run id {run_id!r} (no such run in {self.runs_dir}/)")
        return path

    def run_ids(self) -> list[str]:
        """Every run directory's name (hidden folders, such as the dashboard's launch logs, excluded)."""
        if not self.runs_dir.is_dir():
            return []
        return [entry.name for entry in os.scandir(self.runs_dir)
                if entry.is_dir() and _RUN_ID.match(entry.name) and ".." not in entry.name]

    def summary(self, run_id: str, live: bool = False) -> RunSummary:
        """The runs-table row of one run (cached until its files change)."""
        path = self.run_dir(run_id)
        key = (_mtime(path / "metrics.json"), _size(path / "events.jsonl"), float(live))
        cached = self._cache.get(run_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        summary = _summarize(path, live)
        self._cache[run_id] = (key, summary)
        return summary

    def metrics(self, run_id: str) -> dict[str, Any]:
        """``metrics.json`` of a finished run."""
        path = self.run_dir(run_id) / "metrics.json"
        if not path.is_file():
            raise RecordNotFound(f"run {run_id!r} has no metrics.json yet (it is running, or it ended early)")
        return json.loads(path.read_text(encoding="utf-8"))

    def events(self, run_id: str, *, offset: int = 0, limit: int = 500, kind: str | None = None,
               episode: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """Events ``offset .. offset+limit`` of those matching ``kind``/``episode``, and how many match."""
        path = self.run_dir(run_id) / "events.jsonl"
        matched = [e for e in read_jsonl(path)
                   if (kind is None or e.get("kind") == kind) and (episode is None or e.get("episode") == episode)]
        return matched[offset: offset + limit], len(matched)

    def scenario(self, run_id: str) -> tuple[str, dict[str, Any]]:
        """The resolved launch file, as text and parsed."""
        path = self.run_dir(run_id) / "scenario.yaml"
        if not path.is_file():
            raise RecordNotFound(f"run {run_id!r} has no scenario.yaml")
        text = path.read_text(encoding="utf-8")
        return text, yaml.safe_load(text) or {}

    def joints(self, run_id: str, *, episode: int | None, robot: str | None, max_points: int) -> dict[str, Any]:
        """The joint trace of one episode, per robot, column by column (time, each joint, TCP position).

        Args:
            episode: the episode (default: the last one traced).
            robot: only this robot (default: all).
            max_points: keep every k-th row so each robot has at most this many.
        """
        import pyarrow.parquet as pq

        path = self.run_dir(run_id) / "joint_states.parquet"
        if not path.is_file():
            raise RecordNotFound(f"run {run_id!r} has no joint_states.parquet (it is written when the run ends)")
        table = pq.read_table(path).to_pydict()
        episodes = sorted(set(table["episode"]))
        if not episodes:
            return {"episode": None, "episodes": [], "robots": {}}
        chosen = episodes[-1] if episode is None else episode
        if chosen not in episodes:
            raise RecordNotFound(f"run {run_id!r} has no joint trace for episode {chosen} (traced: {episodes})")
        rows = [i for i, (e, r) in enumerate(zip(table["episode"], table["robot"], strict=True))
                if e == chosen and (robot is None or r == robot)]
        if robot is not None and not rows:
            names = sorted(set(table["robot"]))
            raise RecordNotFound(f"run {run_id!r} has no robot {robot!r} (robots: {', '.join(names)})")
        robots: dict[str, Any] = {}
        for name in dict.fromkeys(table["robot"][i] for i in rows):
            mine = [i for i in rows if table["robot"][i] == name]
            mine = mine[:: max(1, -(-len(mine) // max_points))]
            position = np.asarray([table["position"][i] for i in mine])
            command = np.asarray([table["command"][i] for i in mine])
            tcp = np.asarray([table["tcp_pose_world"][i][:3] for i in mine])
            robots[name] = {
                "joint_names": list(table["joint_names"][mine[0]]),
                "t_s": [table["t_s"][i] for i in mine],
                "position": position.T.round(6).tolist(),
                "command": command.T.round(6).tolist(),
                "tcp_xyz": tcp.T.round(6).tolist(),
            }
        return {"episode": chosen, "episodes": episodes, "robots": robots}

    def latency_samples(self, run_id: str) -> list[float] | None:
        """Every policy round trip of a finished run (ms), or None for runs recorded without them."""
        path = self.run_dir(run_id) / LATENCY_FILE
        if not path.is_file():
            return None
        return [float(x) for x in json.loads(path.read_text(encoding="utf-8"))]

    def log(self, run_id: str, name: str) -> str:
        """The end (at most 256 KiB) of a log in the run's ``logs/`` folder."""
        check_name(name, "log name")
        logs = (self.run_dir(run_id) / "logs").resolve()
        path = (logs / name).resolve()
        if path.parent != logs or not path.is_file():
            known = sorted(p.name for p in logs.glob("*")) if logs.is_dir() else []
            raise RecordNotFound(f"run {run_id!r} has no log {name!r} (logs: {', '.join(known) or 'none'})")
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - MAX_LOG_BYTES))
            return f.read().decode("utf-8", errors="replace")

    def sites(self, run_id: str) -> dict[str, Any]:
        """The run's sites, the flows between them and the audit log's verdict.

        Raises:
            RecordNotFound: the run has no audit log (it ran without ``sites:``).
        """
        from testbed.sites import verify

        path = self.run_dir(run_id) / "audit.jsonl"
        if not path.is_file():
            raise RecordNotFound(f"run {run_id!r} has no audit.jsonl: it ran at one implicit site (no sites:)")
        sites: list[dict[str, Any]] = []
        links: dict[str, Any] = {}
        decisions: list[dict[str, Any]] = []
        flows: dict[tuple[str, str, str], dict[str, Any]] = {}
        outcome = None
        for record in read_jsonl(path):
            kind = record.get("kind")
            if kind == "audit_open":
                sites, links = record.get("sites", []), record.get("links", {})
            elif kind == "rule_decision":
                decisions.append({k: record.get(k) for k in ("flow", "field", "from", "to", "action", "rule",
                                                             "citation", "classes", "condition", "reason")})
            elif kind == "flow":
                key = (record.get("flow", ""), record.get("from", ""), record.get("to", ""))
                total = flows.setdefault(key, {"flow": key[0], "from": key[1], "to": key[2], "bytes": 0,
                                               "messages": 0, "fields": [], "rules": {}, "transformations": {}})
                total["bytes"] += int(record.get("bytes", 0))
                total["messages"] += int(record.get("messages", 0))
                total["fields"] = list(dict.fromkeys([*total["fields"], *record.get("fields", [])]))
                total["rules"].update(record.get("rules", {}))
                total["transformations"].update(record.get("transformations", {}))
            elif kind == "audit_closed":
                outcome = record.get("outcome")
        verdict = verify(path)
        return {"sites": sites, "links": links, "flows": list(flows.values()), "decisions": decisions,
                "outcome": outcome,
                "verdict": {"ok": verdict.ok, "lines": verdict.lines, "broken_line": verdict.broken_line,
                            "reason": verdict.reason, "closed": verdict.closed}}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a file (a line still being written, or a damaged one, is skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def first_and_last_event(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The first and the last complete event of ``events.jsonl`` without reading the whole file."""
    if not path.is_file():
        return None, None
    with path.open("rb") as f:
        first = _parse(f.readline())
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 65536))
        lines = [line for line in f.read().split(b"\n") if line.strip()]
    last = _parse(lines[-1]) if lines else None
    if last is None and len(lines) > 1:
        last = _parse(lines[-2])  # the last line is still being written
    return first, last


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        item = json.loads(line)
    except ValueError:
        return None
    return item if isinstance(item, dict) else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _summarize(path: Path, live: bool) -> RunSummary:
    first, last = first_and_last_event(path / "events.jsonl")
    metrics: dict[str, Any] = {}
    if (path / "metrics.json").is_file():
        try:
            metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        except ValueError:
            metrics = {}
    last_kind = (last or {}).get("kind")
    if live and last_kind not in END_KINDS:
        status = "live"
    elif metrics:
        status = "finished"
    elif last_kind == "run_aborted":
        status = "aborted"
    else:
        status = "incomplete"
    start = first if first is not None and first.get("kind") == "run_start" else {}
    wall = start.get("wall")
    started_unix = float(wall) if isinstance(wall, int | float) else _mtime(path) or None
    sim_s = metrics.get("sim_s")
    placed = metrics.get("parts_placed")
    latency = metrics.get("policy_latency_ms") or {}
    return RunSummary(
        run_id=path.name,
        scenario=metrics.get("scenario") or start.get("scenario"),
        policy=start.get("policy"),
        status=status,
        started=datetime.fromtimestamp(started_unix, UTC).isoformat(timespec="seconds") if started_unix else None,
        started_unix=started_unix,
        episodes=metrics.get("episodes"),
        success_rate=metrics.get("success_rate"),
        parts_placed=placed,
        parts_total=metrics.get("parts_total"),
        parts_per_min=round(placed / (sim_s / 60.0), 3) if placed is not None and sim_s else None,
        cycle_time_s=(metrics.get("cycle_time_s") or {}).get("mean"),
        safety_stops=metrics.get("safety_stops"),
        collisions=metrics.get("collisions"),
        policy_latency_p50_ms=latency.get("p50"),
        policy_latency_p99_ms=latency.get("p99"),
        sim_rtf=metrics.get("sim_rtf"),
        sites=(path / "audit.jsonl").is_file(),
        reason=(last or {}).get("reason") if last_kind == "run_aborted" else None,
    )
