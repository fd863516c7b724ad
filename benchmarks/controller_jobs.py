"""Jobs sent through ControllerService.SendJob during a 1 kHz real-time run: the missed cycles they add.

Prints one JSON object. One SCARA on a ``ControlLoop`` at 1 kHz, ticked by a ``TickerThread``
(its thread under SCHED_FIFO when the OS grants it; ``scheduler`` says), served by the real
gRPC ``ControllerService`` on loopback, its client in a process of its own (as real clients are:
a client in the same interpreter would compete with the ticking thread for the GIL). Four runs
of the same length, each with a fresh loop:

- ``idle_before``, ``idle_after``: nobody sends jobs; a client polls ``GetState`` every 20 ms (as
  the job runs do). Their difference shows how much the machine alone moves the count.
- ``jobs``: the client sends 10 jobs one after the other (``SendJob``, then ``GetState`` every
  20 ms until the job ended), with the default job loader: parsed and planned in the
  ``JobPlanningProcess`` child.
- ``jobs_planned_in_thread``: the same 10 jobs with a loader that parses on the gRPC thread and
  plans on the backend's planning thread, in this process: what planning off the control
  thread costs when it shares the interpreter (the GIL) with it.

``added_missed_cycles`` is ``jobs`` minus the mean of the idle runs, the issue's bar being 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import grpc
import numpy as np

from testbed.bridge.controller_backend import ControlLoopBackend, JobOutputs, TickerThread
from testbed.bridge.controller_service import start_controller_server
from testbed.bridge.generated import controller_pb2, controller_pb2_grpc
from testbed.control import ControlLoop, JobRunner
from testbed.control import job as job_mode
from testbed.robots import load_robot

DT_S = 0.001
N_JOBS = 10
POLL_S = 0.02
MODEL = load_robot("scara_t6")
JOB_YAML = f"""\
name: sort_module
poses:
  home: {{joints: {[round(float(q), 6) for q in MODEL.home]}}}
  above_pick: {{xyz: [0.45, 0.0125, 0.10], yaw: 0.0}}
  pick: {{xyz: [0.45, 0.0125, 0.018], yaw: 0.0}}
program:
  - MOVJ above_pick VJ=100 PL=3
  - MOVL pick V=1000 PL=0
  - DOUT OT#(1) ON
  - MOVL above_pick V=1000 PL=5
  - MOVJ home VJ=100 PL=0
"""


class _ThreadPlannedJob:
    """The job language planned in this process (parsed on the caller's thread, planned on the planning thread)."""

    def __init__(self, loop: ControlLoop, robot: int, job_yaml: str) -> None:
        self._job = job_mode.parse_job_text(job_yaml, source="job_yaml")
        self.name = self._job.name
        self._loop = loop
        self._robot = robot
        self._runner: JobRunner | None = None

    def plan(self, q_start: np.ndarray) -> object:
        return job_mode.plan_job(self._job, MODEL, q_start).program

    def start(self, t_s: float, plan: object) -> None:
        assert isinstance(plan, job_mode.JobProgram)
        self._runner = JobRunner(self._job, MODEL, self._loop, self._robot)
        self._runner.start_program(t_s, plan)

    def tick(self, t_s: float) -> JobOutputs:
        assert self._runner is not None
        return self._runner.tick(t_s)


def _client(address: str, seconds: float | None) -> dict[str, Any]:
    """The client side (its own process, as a real client would be): poll, or send the jobs one by one."""
    latencies: list[float] = []
    with grpc.insecure_channel(address) as channel:
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        state = controller_pb2.GetStateRequest(robot="scara_t6")
        stub.GetState(state)
        start = time.monotonic()
        if seconds is not None:
            while time.monotonic() - start < seconds:
                stub.GetState(state)
                time.sleep(POLL_S)
        else:
            for _ in range(N_JOBS):
                sent = time.perf_counter()
                stub.SendJob(controller_pb2.SendJobRequest(robot="scara_t6", job_yaml=JOB_YAML))
                latencies.append(time.perf_counter() - sent)
                while stub.GetState(state).job:
                    time.sleep(POLL_S)
        return {"seconds": time.monotonic() - start, "latencies": latencies,
                "final_state": stub.GetState(state).lifecycle_state}


def _run(kind: str, seconds: float | None) -> dict[str, Any]:
    """One run; ``seconds`` None means: until the 10 jobs ended."""
    loop = ControlLoop([MODEL], DT_S)
    loop.reset(np.asarray(MODEL.home, dtype=np.float64)[None])
    loader: Any = None
    if kind == "jobs_planned_in_thread":
        loader = lambda robot, text: _ThreadPlannedJob(loop, robot, text)  # noqa: E731
    with ControlLoopBackend(loop, job_loader=loader) as backend, \
            TickerThread(backend, realtime_priority=True) as ticker, \
            start_controller_server(backend, command_timeout_s=10.0) as server:
        argv = [sys.executable, __file__, "--client", server.address, "" if seconds is None else str(seconds)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        stats = ticker.stats()
    if done.returncode != 0:
        raise RuntimeError(f"benchmark client failed ({done.returncode}):\n{done.stderr}")
    client = json.loads(done.stdout)
    out: dict[str, Any] = {
        "scheduler": ticker.scheduler,
        "seconds": round(client["seconds"], 2),
        "cycles": stats.cycles,
        "missed_cycles": stats.missed_cycles,
        "wake_error_us": {"p50": round(stats.wake_error_us_p50, 2), "p99": round(stats.wake_error_us_p99, 2),
                          "max": round(stats.wake_error_us_max, 2)},
        "final_state": client["final_state"],
    }
    latencies = client["latencies"]
    if latencies:
        out["jobs"] = len(latencies)
        out["send_job_ms"] = {"p50": round(float(np.median(latencies)) * 1e3, 1),
                              "max": round(max(latencies) * 1e3, 1)}
    return out


def main() -> int:
    """Measure and print the JSON figures."""
    jobs = _run("jobs", None)
    seconds = jobs["seconds"]
    idle_before = _run("idle", seconds)
    in_thread = _run("jobs_planned_in_thread", None)
    idle_after = _run("idle", seconds)
    idle_missed = (idle_before["missed_cycles"] + idle_after["missed_cycles"]) / 2
    out = {
        "benchmark": "controller_jobs",
        "cycle_ms": DT_S * 1e3,
        "idle_before": idle_before,
        "jobs": jobs,
        "jobs_planned_in_thread": in_thread,
        "idle_after": idle_after,
        "added_missed_cycles": round(jobs["missed_cycles"] - idle_missed, 1),
        "added_missed_cycles_planned_in_thread": round(in_thread["missed_cycles"] - idle_missed, 1),
        "idle_spread_missed_cycles": abs(idle_before["missed_cycles"] - idle_after["missed_cycles"]),
        "target": {"added_missed_cycles_max": 0},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--client":
        print(json.dumps(_client(sys.argv[2], float(sys.argv[3]) if sys.argv[3] else None)))
        sys.exit(0)
    sys.exit(main())
