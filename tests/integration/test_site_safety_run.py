"""A site that requires reduced speed: a full-speed policy is held to the limit, every intervention audited."""

import json
from pathlib import Path

import numpy as np
import pytest

from testbed.control.kinematics import KinematicChain
from testbed.control.tcp_guard import TcpSpeedGuard
from testbed.eval import runner
from testbed.eval.runner import run_scenario
from testbed.scenario import load
from testbed.sites import verify

REPO = Path(__file__).resolve().parents[2]
TRILATERAL = REPO / "launch" / "trilateral.yaml"
# the JP site (sites[2], where the cell is) tightened to reduced speed: 250 mm/s at the TCP (JIS B 8433-1)
REDUCED_SPEED_SITE = "sites.sites[2].safety:={require_reduced_speed: true}"


@pytest.fixture(autouse=True)
def keys_and_cwd(tmp_path, monkeypatch):
    monkeypatch.setenv("TESTBED_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.chdir(REPO)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


class TickRecorder:
    """Wraps the run's control tick: the set-point's TCP speed at every tick, from the kinematics.

    ``chord_m_s``: distance between the TCP poses of consecutive set-points over the cycle (what the
    robot is told to move); ``monitor``: an independent ``TcpSpeedGuard`` that checks the set-point's
    Jacobian speed every tick (and would protective-stop the robot above the limit).
    """

    def __init__(self, control, models, limit_m_s):
        self.chain = KinematicChain.from_urdf(models[0].urdf_path, models[0].tcp_link)
        self.n = models[0].n_joints
        self.monitor = TcpSpeedGuard(control, models, limits_m_s=[limit_m_s], every_n_ticks=1, hold=False)
        self.control = control
        self.tick = control.tick
        self.dt_s = control.dt_s
        self.prev = None
        self.chord_m_s: list[float] = []
        self.jacobian_m_s: list[float] = []

    def __call__(self, t, measured):
        setpoint = self.tick(t, measured)
        tcp = self.chain.forward(setpoint[0, : self.n])[:3, 3]
        if self.prev is not None and t > 0:  # t == 0: an episode's first tick, after a reset
            self.chord_m_s.append(float(np.linalg.norm(tcp - self.prev)) / self.dt_s)
        self.prev = tcp
        self.monitor.check()
        self.jacobian_m_s.append(float(self.monitor.last_speeds_m_s[0]))
        return setpoint


def test_reduced_speed_site_holds_the_full_speed_expert_to_the_limit(tmp_path, monkeypatch):
    recorders = []
    run_guard = runner._tcp_speed_guard

    def guard_and_record(scenario, control, models):
        guard = run_guard(scenario, control, models)  # the run's own: holds in the loop, checks at 20 Hz
        assert guard is not None and guard.limits_m_s.tolist() == [0.25]
        recorder = TickRecorder(control, models, 0.25)
        control.tick = recorder
        recorders.append(recorder)
        return guard

    monkeypatch.setattr(runner, "_tcp_speed_guard", guard_and_record)
    # three parts: a robot held to 250 mm/s clears them in the episode (six pile up at the stopper)
    overrides = ["episodes:=1", "workload.limit:=3", REDUCED_SPEED_SITE]
    result = run_scenario(load(TRILATERAL, overrides), runs_dir=tmp_path / "runs")

    (recorder,) = recorders
    events = read_jsonl(result.run_dir / "events.jsonl")
    assert not [e for e in events if e["kind"] == "protective_stop"] and result.metrics["safety_stops"] == 0
    # the expert plans at half the joints' catalogue speeds (TCP up to ~2.6 m/s unlimited): held, at every tick
    assert len(recorder.chord_m_s) > 0.9 * result.tallies[0].duration_s / recorder.dt_s
    assert max(recorder.chord_m_s) <= 0.25
    assert max(recorder.jacobian_m_s) <= 0.25
    assert max(recorder.chord_m_s) > 0.2  # held to the limit, not far below it
    assert result.metrics["parts_placed"] == 3

    limited = [e for e in events if e["kind"] == "tcp_speed_limited"]
    assert limited and all(e["robot"] == "arm1" and e["limit_m_s"] == 0.25 for e in limited)
    assert all(e["commanded_bound_m_s"] > 0.25 for e in limited)
    audit = read_jsonl(result.run_dir / "audit.jsonl")
    assert verify(result.run_dir / "audit.jsonl").ok
    records = [r for r in audit if r["kind"] == "safety" and r["event"] == "tcp_speed_limited"]
    assert len(records) == len(limited)
    assert [(round(r["t_s"], 6), r["commanded_bound_m_s"]) for r in records] == [
        (round(e["t"], 6), e["commanded_bound_m_s"]) for e in limited]
