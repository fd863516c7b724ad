"""The dashboard's FastAPI app: REST under ``/api/``, a WebSocket per live run, and the page.

Readers never touch a run's control loop: finished runs are read from their records; a live run's process
serves its feed (event stream, snapshot, frames) on loopback (``feed_server``), and this app relays it to
its browsers over one connection per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Header, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from testbed import __version__
from testbed.dashboard.access import Access, bearer
from testbed.dashboard.feed import (
    HELLO_TIMEOUT_S,
    RelayedFeed,
    histogram_edges,
    latency_histogram,
    send_end,
    serve_feed,
)
from testbed.dashboard.launcher import Launcher, LaunchFailed, LaunchRefused, LiveInfo, read_live
from testbed.dashboard.records import (
    RUN_ID_PATTERN,
    BadName,
    RecordNotFound,
    RunRecords,
    RunSummary,
    first_and_last_event,
    read_jsonl,
)

STATIC_DIR = Path(__file__).with_name("static")
WIND_DOWN_S = 10.0  # how long an owned dashboard waits for its viewers to be told that the run ended
SORT_KEYS = ("date", "run_id", "scenario", "policy", "status", "success_rate", "parts_per_min", "cycle_time_s",
             "safety_stops", "collisions", "sim_rtf", "policy_latency_p50_ms")
COMPARED = (  # (key, label, True if higher is better)
    ("success_rate", "success rate", True),
    ("parts_placed", "parts placed", True),
    ("parts_per_min", "parts/min (sim)", True),
    ("cycle_time_s", "cycle time mean (s)", False),
    ("safety_stops", "safety stops", False),
    ("collisions", "collisions", False),
    ("policy_timeouts", "policy timeouts", False),
    ("policy_latency_p50_ms", "policy latency p50 (ms)", False),
    ("policy_latency_p99_ms", "policy latency p99 (ms)", False),
    ("sim_rtf", "sim real-time factor", True),
    ("episodes", "episodes", True),
)

RunId = Annotated[str, PathParam(pattern=RUN_ID_PATTERN, description="a run's directory name under the runs folder")]


class LaunchRequest(BaseModel):
    """Start a scenario: a launch file in the dashboard's launch folder, with ``key:=value`` overrides."""

    model_config = ConfigDict(extra="forbid")
    launch: str = Field(description="file name in the launch folder, e.g. factory_cell.yaml")
    overrides: list[str] = Field(default_factory=list, description="e.g. ['episodes:=3', 'seed:=7']")


class Dashboard:
    """What the app serves: the runs folder, live runs it relays, runs it started, its access rules.

    Args:
        runs_dir: the run records.
        launch_dir: the launch files the page may start.
        token: the operators' token (None: read-only).
    """

    def __init__(self, runs_dir: Path, launch_dir: Path = Path("launch"), token: str | None = None) -> None:
        self.records = RunRecords(runs_dir)
        self.launcher = Launcher(runs_dir, launch_dir)
        self.access = Access(token)
        self.relays: dict[str, RelayedFeed] = {}  # runs of other processes, while this dashboard has viewers
        self.owner_pid: int | None = None  # the `testbed launch --dashboard` process that started this dashboard

    def relay(self, info: LiveInfo) -> RelayedFeed:
        """The one feed this dashboard relays from another process's run (started on first use; call on the loop)."""
        relay = self.relays.get(info.run_id)
        if relay is None or relay.closed or relay.stopping or relay.port != info.port:
            self.relays = {k: r for k, r in self.relays.items() if not r.closed}
            relay = self.relays[info.run_id] = RelayedFeed(info.run_id, info.port)
            relay.task = asyncio.create_task(relay.follow(), name=f"relay-{info.run_id}")
            relay.task.add_done_callback(_report_death)
        return relay

    def owns(self, info: LiveInfo) -> bool:
        """The run is that of the `testbed launch --dashboard` process which started this dashboard."""
        return self.owner_pid is not None and info.pid == self.owner_pid == os.getppid()

    def live_elsewhere(self, run_id: str) -> LiveInfo | None:
        """The feed another process serves for ``run_id``."""
        return read_live(self.records.run_dir(run_id))

    def is_live(self, run_id: str) -> bool:
        """The run is going on (here or in another process that serves its feed)."""
        return self.live_elsewhere(run_id) is not None

    def summaries(self) -> list[RunSummary]:
        """Every run's row, live ones marked."""
        out = []
        for run_id in self.records.run_ids():
            with contextlib.suppress(RecordNotFound, BadName, OSError):
                out.append(self.records.summary(run_id, live=self.is_live(run_id)))
        return out


def create_app(dashboard: Dashboard) -> FastAPI:
    """The dashboard's ASGI app."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if dashboard.owner_pid is not None:
            tasks.append(asyncio.create_task(_watch_owner(dashboard), name="dashboard-owner"))
        for task in tasks:
            task.add_done_callback(_report_death)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            killed = await asyncio.to_thread(dashboard.launcher.close)
            if killed:
                print(f"dashboard: runs killed at shutdown (SIGTERM was not enough): {', '.join(killed)}",
                      file=sys.stderr)

    app = FastAPI(title="testbed dashboard", version=__version__, lifespan=lifespan,
                  description="Runs of the physical-AI testbed: records, live feeds, launches and comparisons. "
                              "Reading is open on loopback; other hosts, and starting or stopping runs, need "
                              "'Authorization: Bearer <TESTBED_DASHBOARD_TOKEN>'.")
    app.state.dashboard = dashboard
    records, access = dashboard.records, dashboard.access

    @app.exception_handler(RecordNotFound)
    async def _not_found(_: Request, exc: RecordNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(BadName)
    async def _bad_name(_: Request, exc: BadName) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path"))
        message = f"{where or 'request'}: {first['msg']}"
        return JSONResponse({"detail": json.loads(json.dumps(errors, default=str)), "message": message,
                             "field": where}, status_code=422)

    @app.middleware("http")
    async def _readers(request: Request, call_next: Callable[[Request], Any]) -> Any:
        if request.url.path.startswith("/api/"):
            client = request.client.host if request.client else None
            refusal = access.read_refusal(client, bearer(request.headers.get("authorization")))
            if refusal is not None:
                return JSONResponse({"detail": refusal}, status_code=401)
        return await call_next(request)

    def operator(authorization: str | None) -> None:
        refusal = access.control_refusal(bearer(authorization))
        if refusal is not None:
            raise HTTPException(refusal[0], refusal[1])

    @app.get("/api/info", tags=["dashboard"], summary="the dashboard's version, runs folder and what it allows")
    def info() -> dict[str, Any]:
        return {"version": __version__, "runs_dir": str(records.runs_dir),
                "launch_dir": str(dashboard.launcher.launch_dir), "control": access.token is not None}

    @app.get("/api/runs", tags=["runs"], summary="runs, filtered and sorted")
    def list_runs(
        scenario: Annotated[str | None, Query(description="only this scenario")] = None,
        policy: Annotated[str | None, Query(description="only this policy (its model name)")] = None,
        status: Annotated[Literal["live", "finished", "aborted", "incomplete"] | None,
                          Query(description="only runs in this state")] = None,
        sort: Annotated[Literal[SORT_KEYS], Query(description="column to sort by")] = "date",  # type: ignore[valid-type]
        order: Annotated[Literal["asc", "desc"], Query()] = "desc",
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        rows = [r for r in dashboard.summaries()
                if (scenario is None or r.scenario == scenario) and (policy is None or r.policy == policy)
                and (status is None or r.status == status)]
        key = "started_unix" if sort == "date" else sort
        present = [r for r in rows if getattr(r, key) is not None]
        missing = [r for r in rows if getattr(r, key) is None]
        present.sort(key=lambda r: (getattr(r, key), r.run_id), reverse=order == "desc")
        rows = present + missing  # runs without the figure go last either way
        return {"total": len(rows), "offset": offset, "runs": [asdict(r) for r in rows[offset: offset + limit]]}

    @app.get("/api/runs/{run_id}", tags=["runs"], summary="one run's row, and whether it is live")
    def get_run(run_id: RunId) -> dict[str, Any]:
        summary = records.summary(run_id, live=dashboard.is_live(run_id))
        first, _ = first_and_last_event(records.run_dir(run_id) / "events.jsonl")
        start = first if first and first.get("kind") == "run_start" else {}
        child = dashboard.launcher.children.get(run_id)
        return {**asdict(summary), "robots": start.get("robots", []), "seed": start.get("seed"),
                "policy_logs": start.get("policy_logs", []),
                "launch_log": str(child.log) if child is not None else None,
                "exit_code": child.process.poll() if child is not None else None,
                "controllable": access.token is not None and summary.status == "live"
                and (child is not None or _owned(dashboard, run_id))}

    @app.get("/api/runs/{run_id}/metrics", tags=["runs"], summary="metrics.json of a finished run")
    def get_metrics(run_id: RunId) -> dict[str, Any]:
        return records.metrics(run_id)

    @app.get("/api/runs/{run_id}/events", tags=["runs"], summary="the run's events, a page at a time")
    def get_events(
        run_id: RunId,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        kind: Annotated[str | None, Query(description="only events of this kind, e.g. place")] = None,
        episode: Annotated[int | None, Query(ge=0)] = None,
    ) -> dict[str, Any]:
        page, total = records.events(run_id, offset=offset, limit=limit, kind=kind, episode=episode)
        after = offset + len(page)
        return {"total": total, "offset": offset, "next_offset": after if after < total else None, "events": page}

    @app.get("/api/runs/{run_id}/scenario", tags=["runs"], summary="the resolved launch file of a run")
    def get_scenario(run_id: RunId) -> dict[str, Any]:
        text, data = records.scenario(run_id)
        return {"yaml": text, "scenario": data}

    @app.get("/api/runs/{run_id}/joints", tags=["runs"], summary="joint positions, set-points and TCP of an episode")
    def get_joints(
        run_id: RunId,
        episode: Annotated[int | None, Query(ge=0, description="default: the last episode traced")] = None,
        robot: Annotated[str | None, Query(description="default: every robot")] = None,
        max_points: Annotated[int, Query(ge=10, le=100000)] = 2000,
    ) -> dict[str, Any]:
        return records.joints(run_id, episode=episode, robot=robot, max_points=max_points)

    @app.get("/api/runs/{run_id}/latency", tags=["runs"], summary="policy latency distribution of a run")
    def get_latency(run_id: RunId, bins: Annotated[int, Query(ge=2, le=200)] = 20) -> dict[str, Any]:
        samples = records.latency_samples(run_id)
        if samples is None:
            summary = records.summary(run_id)
            return {"count": None, "p50": summary.policy_latency_p50_ms, "p99": summary.policy_latency_p99_ms,
                    "edges": [], "counts": [], "note": "recorded without per-request samples"}
        array = np.asarray(samples, dtype=np.float64)
        return latency_histogram(array, histogram_edges([array], bins))

    @app.get("/api/runs/{run_id}/sites", tags=["runs"], summary="the run's sites, flows between them, audit verdict")
    def get_sites(run_id: RunId) -> dict[str, Any]:
        return records.sites(run_id)

    @app.get("/api/runs/{run_id}/logs/{name}", tags=["runs"], response_class=PlainTextResponse,
             summary="the end of a log in the run's logs/ folder (e.g. policy-arm1.log)")
    def get_log(run_id: RunId, name: str) -> str:
        return records.log(run_id, name)

    @app.get("/api/compare", tags=["compare"], summary="two or more runs side by side, with differences")
    def compare(
        runs: Annotated[list[str], Query(description="run ids, two or more: ?runs=a&runs=b")],
        bins: Annotated[int, Query(ge=2, le=200)] = 20,
    ) -> dict[str, Any]:
        if len(runs) < 2:
            raise HTTPException(422, "runs: give two or more run ids to compare (?runs=a&runs=b)")
        return _compare(dashboard, runs, bins)

    @app.get("/api/policies", tags=["policies"], summary="policies seen in the runs, with their latency")
    def policies() -> dict[str, Any]:
        return {"policies": _policies(dashboard)}

    @app.get("/api/launch-files", tags=["launch"], summary="launch files a run can be started from")
    def launch_files() -> dict[str, Any]:
        return {"launch_dir": str(dashboard.launcher.launch_dir), "files": dashboard.launcher.launch_files()}

    @app.post("/api/runs", tags=["launch"], status_code=202,
              summary="start a scenario (needs the token); returns once the run has started")
    async def start_run(request: LaunchRequest, authorization: Annotated[str | None, Header()] = None
                        ) -> dict[str, Any]:
        operator(authorization)
        try:
            child = await dashboard.launcher.start(request.launch, request.overrides)
        except LaunchRefused as exc:
            return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=422)  # type: ignore[return-value]
        except LaunchFailed as exc:
            raise HTTPException(500, str(exc)) from exc
        return {"run_id": child.run_id, "launch": child.launch, "overrides": list(child.overrides),
                "pid": child.process.pid, "log": str(child.log)}

    @app.post("/api/runs/{run_id}/stop", tags=["launch"], status_code=202,
              summary="stop a live run (needs the token): it ends its record with run_aborted")
    def stop_run(run_id: RunId, authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        operator(authorization)
        records.run_dir(run_id)
        child = dashboard.launcher.children.get(run_id)
        if child is not None and child.running:
            dashboard.launcher.stop(run_id)
            return {"run_id": run_id, "stopping": True}
        elsewhere = dashboard.live_elsewhere(run_id)
        if elsewhere is not None and dashboard.owns(elsewhere):
            os.kill(elsewhere.pid, signal.SIGTERM)
            return {"run_id": run_id, "stopping": True}
        if elsewhere is not None:
            raise HTTPException(409, f"run {run_id!r} runs in a process this dashboard did not start; stop it there")
        raise HTTPException(409, f"run {run_id!r} is not running (status {records.summary(run_id).status})")

    @app.websocket("/api/runs/{run_id}/live")
    async def live(websocket: WebSocket, run_id: str) -> None:
        """Joint states, TCP positions, frames, events and running metrics of a live run.

        The client sends ``{"token": ... or null, "frames": true}`` first.
        """
        await websocket.accept()
        try:
            hello = json.loads(await asyncio.wait_for(websocket.receive_text(), HELLO_TIMEOUT_S))
        except (TimeoutError, ValueError, WebSocketDisconnect):
            await _refuse(websocket, 4400, 'send {"token": null, "frames": true} first')
            return
        hello = hello if isinstance(hello, dict) else {}
        client = websocket.client.host if websocket.client else None
        refusal = access.read_refusal(client, hello.get("token"))
        if refusal is not None:
            await _refuse(websocket, 4401, refusal)
            return
        try:
            run_dir = records.run_dir(run_id)
        except BadName as exc:
            await _refuse(websocket, 4422, str(exc))
            return
        except RecordNotFound as exc:
            await _refuse(websocket, 4404, str(exc))
            return
        elsewhere = read_live(run_dir)
        if elsewhere is None:
            await send_end(_Browser(websocket), f"run {run_id!r} is not live: its record is complete")
            return
        await serve_feed(_Browser(websocket), dashboard.relay(elsewhere), bool(hello.get("frames", True)))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _report_death(task: asyncio.Task[None]) -> None:
    """A background task reports its own failure (cancellation is how a relay ends when its viewers leave)."""
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        print(f"dashboard: task {task.get_name()} failed: {exc!r}", file=sys.stderr, flush=True)
        traceback.print_exception(exc, file=sys.stderr)


def _owned(dashboard: Dashboard, run_id: str) -> bool:
    info = dashboard.live_elsewhere(run_id)
    return info is not None and dashboard.owns(info)


async def _watch_owner(dashboard: Dashboard) -> None:
    """End this dashboard (as a SIGTERM would) when the `testbed launch --dashboard` that started it says its run
    is over (SIGUSR1) and the viewers have been told, or when that process is gone."""
    loop = asyncio.get_running_loop()
    owner_done = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, owner_done.set)
    while os.getppid() == dashboard.owner_pid and not owner_done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(owner_done.wait(), 1.0)
    give_up = loop.time() + WIND_DOWN_S
    # a relay closes once the run's feed has ended; its viewers leave once they were told
    while loop.time() < give_up and not all(r.closed and not r.viewers for r in dashboard.relays.values()):
        await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)


async def _refuse(websocket: WebSocket, code: int, detail: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_text(json.dumps({"type": "error", "code": code, "detail": detail}))
        await websocket.close(code, detail[:120])


class _Browser:
    """A Starlette WebSocket as a feed channel."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def send(self, text: str) -> None:
        try:
            await self._websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise ConnectionError(str(exc)) from exc

    async def closed(self) -> None:
        while (await self._websocket.receive()).get("type") != "websocket.disconnect":
            pass

    async def close(self) -> None:
        try:
            await self._websocket.close(1000)
        except (RuntimeError, OSError) as exc:
            raise ConnectionError(str(exc)) from exc


def _compare(dashboard: Dashboard, run_ids: list[str], bins: int) -> dict[str, Any]:
    records = dashboard.records
    summaries = [records.summary(r, live=dashboard.is_live(r)) for r in run_ids]
    metrics = []
    extra: list[dict[str, Any]] = []
    for run_id in run_ids:
        try:
            extra.append(records.metrics(run_id))
        except RecordNotFound:
            extra.append({})
    for key, label, higher_better in COMPARED:
        values = [getattr(s, key, None) if hasattr(s, key) else m.get(key) for s, m in zip(summaries, extra,
                                                                                        strict=True)]
        base = values[0]
        diffs = [None if v is None or base is None else round(v - base, 6) for v in values]
        ratios = [None if v is None or not base else round(v / base, 4) for v in values]
        metrics.append({"key": key, "label": label, "higher_is_better": higher_better, "values": values,
                        "diff": diffs, "ratio": ratios})
    episodes = {}
    for run_id, m in zip(run_ids, extra, strict=True):
        results = m.get("episode_results")
        if results is None:  # a live or unfinished run: its episodes so far
            events = read_jsonl(records.run_dir(run_id) / "events.jsonl")
            results = [e for e in events if e.get("kind") == "episode_end"]
        episodes[run_id] = [{"episode": e.get("episode"), "success": bool(e.get("success")),
                             "placed": e.get("placed"), "parts": e.get("parts")} for e in results]
    samples = {r: records.latency_samples(r) for r in run_ids}
    arrays = {r: np.asarray(s, dtype=np.float64) for r, s in samples.items() if s is not None}
    edges = histogram_edges(list(arrays.values()), bins)
    latency = {r: latency_histogram(arrays[r], edges) if r in arrays else
               {"count": None, "p50": s.policy_latency_p50_ms, "p99": s.policy_latency_p99_ms, "edges": [],
                "counts": []}
               for r, s in zip(run_ids, summaries, strict=True)}
    return {"runs": [asdict(s) for s in summaries], "metrics": metrics, "episodes": episodes,
            "latency": {"edges": [round(float(e), 4) for e in edges] if arrays else [], "runs": latency}}


def _policies(dashboard: Dashboard) -> list[dict[str, Any]]:
    groups: dict[str, list[RunSummary]] = {}
    for summary in dashboard.summaries():
        groups.setdefault(summary.policy or "(unknown)", []).append(summary)
    out = []
    for name, rows in sorted(groups.items()):
        pooled = [x for r in rows for x in (dashboard.records.latency_samples(r.run_id) or [])]
        rates = [r.success_rate for r in rows if r.success_rate is not None]
        p50s = [r.policy_latency_p50_ms for r in rows if r.policy_latency_p50_ms is not None]
        p99s = [r.policy_latency_p99_ms for r in rows if r.policy_latency_p99_ms is not None]
        latency = latency_histogram(np.asarray(pooled, dtype=np.float64)) if pooled else {
            "count": None, "p50": float(np.median(p50s)) if p50s else None, "p99": max(p99s) if p99s else None,
            "edges": [], "counts": []}
        out.append({"policy": name, "runs": len(rows), "scenarios": sorted({r.scenario for r in rows if r.scenario}),
                    "success_rate_mean": round(float(np.mean(rates)), 4) if rates else None,
                    "latency_ms": latency, "last_run": max(rows, key=lambda r: r.started_unix or 0).run_id})
    return out
