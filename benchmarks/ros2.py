"""The default cell's real-time factor with the run's ROS 2 node publishing at 50 Hz, against the same run without it.

Prints one JSON object. Three variants run in turn, round after round, so the machine's load hits
them alike: ``without_ros2``; ``ros2_50hz`` (the node publishes joint states, /tf, /clock, TCP poses,
set-points, parts, events and diagnostics, nobody listens); ``ros2_50hz_subscribed`` (a separate
rclpy process subscribes to joint states, /tf, /clock and events, as RViz would). Ratios are per
round (same round, same load), then the median. Discovery stays on this host, on a domain of its own.
Bar: ``ratio`` >= 0.9.

On a shared machine other processes' load moves wall-clock figures a lot from one run to the next, so
the script also reports the run loop thread's own CPU time per simulated second (``thread_time`` around
each episode), which that load does not move: ``cpu_ratio`` is its without/with ratio.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import testbed.eval.runner as runner
from testbed.eval.runner import run_scenario
from testbed.scenario import load

LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "factory_cell.yaml"
EPISODES = 2
ROUNDS = 5
_EPISODE_CPU_S: list[float] = []
DOMAIN = 90 + os.getpid() % 10

SUBSCRIBER = """
import sys, threading, time, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage
rclpy.init()
node = rclpy.create_node("bench_subscriber")
counts = {"joint_states": 0, "tf": 0, "clock": 0, "events": 0}
def count(key):
    def cb(_msg):
        counts[key] += 1
    return cb
reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
node.create_subscription(JointState, "/cell/arm1/joint_states", count("joint_states"), reliable)
node.create_subscription(TFMessage, "/tf", count("tf"), reliable)
best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
node.create_subscription(Clock, "/clock", count("clock"), best_effort)
node.create_subscription(String, "/cell/events", count("events"), reliable)
print("ready", flush=True)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()  # closed stdin: stop
deadline = time.monotonic() + float(sys.argv[1])
while not stop.is_set() and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.05)
print(counts, flush=True)
"""


def _timed_episode(*args: object, **kwargs: object) -> None:
    started = time.thread_time()
    try:
        _RUN_EPISODE(*args, **kwargs)
    finally:
        _EPISODE_CPU_S.append(time.thread_time() - started)


_RUN_EPISODE = runner._run_episode
runner._run_episode = _timed_episode  # the run loop thread's own CPU time, per episode


def run_rtf(ros2: bool) -> tuple[float, float]:
    """(sim_rtf, run loop thread CPU ms per simulated second) of one run."""
    overrides = [f"episodes:={EPISODES}"]
    if ros2:
        overrides += ["ros2.enabled:=true", f"ros2.domain_id:={DOMAIN}", "ros2.rate_hz:=50"]
    _EPISODE_CPU_S.clear()
    with tempfile.TemporaryDirectory() as runs:
        metrics = run_scenario(load(LAUNCH, overrides), runs_dir=Path(runs)).metrics
    if metrics["success_rate"] < 1.0:
        raise SystemExit(f"benchmarks/ros2.py: a run failed its episodes ({metrics['success_rate']}); figures void")
    return float(metrics["sim_rtf"]), sum(_EPISODE_CPU_S) / metrics["sim_s"] * 1e3


def with_subscriber() -> tuple[tuple[float, float], float]:
    """sim_rtf of a ROS 2 run while another process subscribes; and joint states it received per wall second."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN))
    proc = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("benchmarks/ros2.py: the subscriber process did not start")
        started = time.perf_counter()
        figures = run_rtf(True)
        wall = time.perf_counter() - started
    finally:
        out, _ = proc.communicate(timeout=30)  # closes its stdin: it prints its counts and ends
    received = out.strip().splitlines()[-1] if out.strip() else "{}"
    counts = json.loads(received.replace("'", '"')) if received.startswith("{") else {}
    return figures, counts.get("joint_states", 0) / wall


def _summary(figures: list[tuple[float, float]]) -> dict[str, object]:
    rtf = [f[0] for f in figures]
    cpu = [f[1] for f in figures]
    return {"sim_rtf": round(statistics.median(rtf), 2), "all": [round(x, 2) for x in rtf],
            "loop_cpu_ms_per_sim_s": round(statistics.median(cpu), 2)}


def main() -> None:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    without: list[tuple[float, float]] = []
    plain: list[tuple[float, float]] = []
    subscribed: list[tuple[float, float]] = []
    rates = []
    for _ in range(ROUNDS):
        without.append(run_rtf(False))
        plain.append(run_rtf(True))
        figures, rate = with_subscriber()
        subscribed.append(figures)
        rates.append(rate)

    def ratio(runs: list[tuple[float, float]], k: int, inverse: bool = False) -> float:
        pairs = [(r[k], w[k]) for r, w in zip(runs, without, strict=True)]
        return round(statistics.median([w / r if inverse else r / w for r, w in pairs]), 3)

    print(json.dumps({
        "episodes": EPISODES,
        "rounds": ROUNDS,
        "without_ros2": _summary(without),
        "ros2_50hz": _summary(plain),
        "ros2_50hz_subscribed": {**_summary(subscribed),
                                 "joint_states_received_per_wall_s": round(statistics.median(rates), 1)},
        "ratio": ratio(plain, 0),
        "ratio_subscribed": ratio(subscribed, 0),
        "cpu_ratio": ratio(plain, 1, inverse=True),
        "cpu_ratio_subscribed": ratio(subscribed, 1, inverse=True),
        "targets": {"ratio_min": 0.9},
    }))


if __name__ == "__main__":
    main()
