"""The default cell's real-time factor with 8 dashboard WebSocket clients watching, against the same run unwatched.

Prints one JSON object. Each round runs the default launch file twice, in turn: alone, and as
``testbed launch --dashboard`` runs it (the run's process serves its feed on loopback, a dashboard process
relays it) while 8 clients in another process (standing in for browsers) follow its live view through the
dashboard, camera frames included. The headline
is the ratio of the median ``sim_rtf`` with clients to the median without (bar: >= 0.9); the ratio of the
two runs of each round is given too, since other load on a shared machine moves both runs of a round alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testbed.dashboard import serve_live
from testbed.eval.events import EventStream
from testbed.eval.runner import run_scenario
from testbed.scenario import load

LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "factory_cell.yaml"
EPISODES = 8
ROUNDS = 5
CLIENTS = 8
BAR = 0.9


async def _follow(port: int, run_id: str, counts: dict[str, int], ready: asyncio.Event, connected: list[int]) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/api/runs/{run_id}/live", max_size=2**24, compression=None) as ws:
        await ws.send(json.dumps({"token": None, "frames": True}))
        async for raw in ws:
            # every message starts with {"type": "..."}: a browser parses them all, this stand-in (on the same
            # two cores as the run) spares the CPU and looks for the parts of a tick by their text
            kind = raw[10:raw.index('"', 10)]
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "tick":
                for part, empty in (("state", '"state": null'), ("frame", '"frames": []'),
                                    ("metrics", '"metrics": null'), ("events", '"events": []')):
                    if empty not in raw:
                        counts[part] = counts.get(part, 0) + 1
            if kind == "hello":
                connected.append(1)
                if len(connected) == CLIENTS:
                    ready.set()
            if kind in ("end", "error"):
                return


async def _clients(port: int, run_id: str, n: int) -> None:
    """Follow a run with ``n`` clients; print 'ready' once all are in, then their message rates as JSON."""
    counts: list[dict[str, int]] = [{} for _ in range(n)]
    ready, connected = asyncio.Event(), []
    tasks = [asyncio.create_task(_follow(port, run_id, c, ready, connected)) for c in counts]
    await ready.wait()
    print("ready", flush=True)
    started = time.perf_counter()
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": seconds, "counts": counts, "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)


def run_once(with_clients: bool, runs_dir: Path) -> tuple[float, dict[str, Any] | None]:
    """One run of the default cell; returns its sim_rtf and, with clients, what they received."""
    loaded = load(LAUNCH, [f"episodes:={EPISODES}"])
    if not with_clients:
        return run_scenario(loaded, runs_dir=runs_dir).metrics["sim_rtf"], None
    clients: list[subprocess.Popen[str]] = []
    lines: list[str] = []

    with serve_live(runs_dir=runs_dir, host="127.0.0.1", port=0, token=None, announce_to=lines.append) as attach:

        def hook(stream: EventStream) -> None:
            attach(stream)
            port = int(lines[0].rstrip("/").rsplit(":", 1)[1])  # "dashboard on http://127.0.0.1:PORT/"
            process = subprocess.Popen([sys.executable, __file__, "--clients", str(port), stream.path.parent.name,
                                        str(CLIENTS)], stdout=subprocess.PIPE, text=True)
            clients.append(process)
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"

        rtf = run_scenario(loaded, runs_dir=runs_dir, events_hook=hook).metrics["sim_rtf"]
    (process,) = clients
    out, _ = process.communicate(timeout=120)
    report = json.loads(out.strip().splitlines()[-1])
    return rtf, report


def main() -> None:
    without: list[float] = []
    with_: list[float] = []
    received: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        run_once(False, Path(tmp) / "warm-up")
        for i in range(ROUNDS):
            order = (False, True) if i % 2 == 0 else (True, False)
            for watched in order:
                rtf, report = run_once(watched, Path(tmp) / f"{i}-{watched}")
                (with_ if watched else without).append(rtf)
                if report is not None:
                    received.append(report)
    seconds = sum(r["seconds"] for r in received)
    per_client = {kind: round(sum(c.get(kind, 0) for r in received for c in r["counts"]) / CLIENTS / seconds, 2)
                  for kind in ("tick", "state", "frame", "metrics", "events")}
    ratio = statistics.median(with_) / statistics.median(without)
    pairs = [round(w / wo, 3) for w, wo in zip(with_, without, strict=True)]
    print(json.dumps({
        "benchmark": "dashboard",
        "launch": str(LAUNCH.name),
        "episodes_per_run": EPISODES,
        "rounds": ROUNDS,
        "clients": CLIENTS,
        "sim_rtf_without_dashboard": without,
        "sim_rtf_with_dashboard": with_,
        "median_without": statistics.median(without),
        "median_with": statistics.median(with_),
        "ratio": round(ratio, 3),
        "round_ratios": pairs,
        "median_round_ratio": statistics.median(pairs),
        "bar": BAR,
        "meets_bar": ratio >= BAR,
        "messages_per_second_per_client": per_client,
        "clients_process_cpu_s_per_s": round(sum(r["cpu_s"] for r in received) / seconds, 3),
        "load_average_before": round(load_before, 2),
    }, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", nargs=3, metavar=("PORT", "RUN_ID", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clients:
        try:  # a lean stand-in: browsers would run elsewhere, these share the run's two cores
            import uvloop
        except ImportError:
            uvloop = None
        with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
            runner.run(_clients(int(args.clients[0]), args.clients[1], int(args.clients[2])))
    else:
        main()
