import json
from pathlib import Path

import pytest

from testbed.errors import JobError
from testbed.eval.runner import run_scenario
from testbed.scenario import load

SCARA_JOB = Path("launch/scara_job.yaml")


def test_scara_job_sorts_every_module_into_its_bin(tmp_path):
    result = run_scenario(load(SCARA_JOB, ["episodes:=1"]), runs_dir=tmp_path)
    events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    places = [e for e in events if e["kind"] == "place"]
    assert len(places) == 3 and all(e["bin"] == "bin_module" and e["correct"] for e in places)
    kinds = [e["kind"] for e in events]
    # the program ran once per part; the episode ends when the last part is placed, which may be before the
    # last run reaches its end
    assert kinds.count("job_start") == 3 and kinds.count("job_end") >= 2
    assert "move_slowed" not in kinds  # every line of the SCARA job runs at its V
    assert result.metrics["success_rate"] == 1.0 and result.metrics["collisions"] == 0


def test_unreachable_job_pose_is_refused_before_the_run_naming_the_line(tmp_path):
    text = SCARA_JOB.read_text().replace("pick: {xyz: [0.45, 0.0125, 0.018]", "pick: {xyz: [0.95, 0.0125, 0.018]")
    path = tmp_path / "job.yaml"
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "MOVL pick V=300" in row)
    with pytest.raises(JobError, match=rf"^{path}:{line} program\[2\] 'MOVL pick V=300 PL=0': pose 'pick' is "
                                       "unreachable"):
        load(path)


def test_bad_job_parameter_names_the_line(tmp_path):
    text = SCARA_JOB.read_text().replace("VJ=60 PL=3", "VJ=160 PL=3")
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(JobError, match=r"program\[1\] 'MOVJ above_pick VJ=160 PL=3': VJ=160 is out of range"):
        load(path)


def test_a_job_robot_and_a_policy_robot_share_the_cell(tmp_path):
    job = "{name: idle, poses: {}, program: ['TIMER T=0.5']}"
    overrides = ["episodes:=1", "sim.max_episode_s:=20", f"cell.robots[1].job:={job}"]
    result = run_scenario(load("launch/two_robots.yaml", overrides), runs_dir=tmp_path)
    events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "job_end" and e["robot"] == "sia_arm" for e in events)
    assert any(e["kind"] == "place" and e["robot"] == "gp7_arm" for e in events)


def test_replanned_and_cached_programs_give_identical_episodes(tmp_path):
    result = run_scenario(load(SCARA_JOB, ["episodes:=2"]), runs_dir=tmp_path)
    first, second = result.metrics["episode_results"]
    assert {**first, "episode": 1} == second  # episode 1 reuses the plans episode 0 made


def test_job_plans_are_reused_from_the_same_start_pose():
    import numpy as np

    from testbed.control import ControlLoop
    from testbed.control.job import JobRunner
    from testbed.robots import load_robot

    model = load_robot("scara_t6")
    loop = ControlLoop([model], 1 / 240)
    loop.reset(np.asarray(model.home)[None])
    cache = {}
    job = load(SCARA_JOB).jobs[0]
    first = JobRunner(job, model, loop, 0, plan_cache=cache).start(0.0)
    again = JobRunner(job, model, loop, 0, plan_cache=cache).start(0.0)
    assert again is first and len(cache) == 1


# the SIA10F's tool turned down, back and forth 0.5 m sideways: at V=1000 the way back would take joint_3 past
# its acceleration limit (the plan slows it ~1.14x); at V=500 both lines fit
SIDEWAYS = ("{name: sideways, poses: {a: {xyz: [0.4495, -0.25, 0.404], rpy: [3.14159265, 0, 0]}, "
            "b: {xyz: [0.4495, 0.25, 0.404], rpy: [3.14159265, 0, 0]}}, "
            "program: ['MOVL a V=500 PL=0', 'MOVL b V=500 PL=0', 'MOVL a V=1000 PL=0']}")


def test_a_move_the_plan_slowed_is_an_event_with_its_factor_and_speeds(tmp_path):
    overrides = ["episodes:=1", "sim.max_episode_s:=4.5", f"cell.robots[1].job:={SIDEWAYS}"]
    result = run_scenario(load("launch/two_robots.yaml", overrides), runs_dir=tmp_path)
    events = [json.loads(line) for line in (result.run_dir / "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["kind"] == "job_failed"]
    slowed = [e for e in events if e["kind"] == "move_slowed"]
    starts = [e for e in events if e["kind"] == "job_start"]
    # once each time the program runs (twice in 4.5 s), for the V=1000 line only: the lines at V=500 fit
    assert len(starts) == 2 and [e["step"] for e in slowed] == [2, 2]
    for event, start in zip(slowed, starts, strict=True):
        assert event["robot"] == "sia_arm" and event["job"] == "sideways" and event["line"] == "MOVL a V=1000 PL=0"
        assert 1.0 < event["factor"] <= 20.0 and event["speed_m_s"] == 1.0
        assert event["reached_m_s"] == pytest.approx(1.0 / event["factor"], rel=0.01)
        assert start["t"] + 1.0 < event["t"]  # as the line starts, after the lines before it
