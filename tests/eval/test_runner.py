import json
import re

import pytest

from testbed.errors import PolicyUnavailable, ScenarioError, SpecMismatch
from testbed.eval.runner import run_scenario
from testbed.scenario import load

FIELDS = ("run_id", "scenario", "episodes", "success_rate", "parts_placed", "cycle_time_s", "collisions",
          "safety_stops", "policy_latency_ms", "sim_rtf", "control")
TIMINGS = ("run_id", "sim_rtf", "policy_latency_ms", "physics_us_per_step", "physics_rtf_ceiling")
LOCAL_POLICY = ("policy.serve:=null", "policy.builtin:=expert")


def one_of_each(tmp_path, *extra):
    parts = "[{t: 0.0, type: capacitor}, {t: 3.0, type: connector}, {t: 6.0, type: module}]"
    return load("launch/factory_cell.yaml", ["episodes:=1", "workload.random:=null", f"workload.parts:={parts}",
                                              *extra])


def read_events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_expert_puts_each_part_in_the_bin_for_its_type(tmp_path):
    result = run_scenario(one_of_each(tmp_path), runs_dir=tmp_path)
    places = [e for e in read_events(result.run_dir) if e["kind"] == "place"]
    assert sorted((e["part_type"], e["bin"]) for e in places) == [
        ("capacitor", "bin_capacitor"), ("connector", "bin_connector"), ("module", "bin_module")]
    assert all(e["correct"] for e in places)
    assert result.metrics["success_rate"] == 1.0 and result.metrics["parts_placed"] == 3


def test_run_record_has_the_promised_files_and_fields(tmp_path):
    result = run_scenario(one_of_each(tmp_path), runs_dir=tmp_path)
    files = {f.name for f in result.run_dir.iterdir()}
    assert {"scenario.yaml", "events.jsonl", "metrics.json", "joint_states.parquet"} <= files
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert all(field in metrics for field in FIELDS)
    assert set(metrics["cycle_time_s"]) == {"mean", "p50", "p95"}
    assert set(metrics["policy_latency_ms"]) == {"p50", "p99"}
    assert {"cycle_ms", "robots", "jitter_us_p99", "missed_cycles"} <= set(metrics["control"])
    kinds = [e["kind"] for e in read_events(result.run_dir)]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert {"episode_start", "pick", "place", "episode_end"} <= set(kinds)
    for event in read_events(result.run_dir):
        assert {"t", "wall", "episode", "kind", "robot"} <= set(event)


def test_same_seed_gives_identical_metrics(tmp_path):
    runs = [run_scenario(load("launch/factory_cell.yaml", ["episodes:=2", "seed:=3"]), runs_dir=tmp_path / str(i))
            for i in range(2)]
    first, second = ({k: v for k, v in r.metrics.items() if k not in TIMINGS} for r in runs)
    assert first == second
    assert runs[0].run_id != runs[1].run_id


def test_restored_episode_equals_a_fresh_world(tmp_path):
    both = run_scenario(load("launch/factory_cell.yaml", ["episodes:=2", "seed:=5"]), runs_dir=tmp_path / "a")
    again = run_scenario(load("launch/factory_cell.yaml", ["episodes:=1", "seed:=5"]), runs_dir=tmp_path / "b")
    assert both.metrics["episode_results"][0] == again.metrics["episode_results"][0]


def test_an_episode_after_others_equals_it_run_alone(tmp_path):
    # parts resolved in an episode may sleep from then on: the pooled bodies must not carry that into the next
    loaded = load("launch/factory_cell.yaml", ["episodes:=5", *LOCAL_POLICY])
    after = run_scenario(loaded, runs_dir=tmp_path / "a")
    alone = run_scenario(loaded, runs_dir=tmp_path / "b", episodes=[4])
    assert after.metrics["parts_placed"] == 15
    assert after.metrics["episode_results"][4] == alone.metrics["episode_results"][0]


def test_metrics_report_the_physics_time_of_the_same_episodes(tmp_path):
    m = run_scenario(one_of_each(tmp_path, *LOCAL_POLICY), runs_dir=tmp_path).metrics
    assert m["physics_us_per_step"] > 0
    assert m["physics_rtf_ceiling"] == pytest.approx(1e6 / (m["physics_us_per_step"] * 240), rel=1e-3)
    assert m["physics_rtf_ceiling"] > m["sim_rtf"]  # stepSimulation is a part of the episode loop's wall time


def test_different_seeds_give_different_workloads(tmp_path):
    a = run_scenario(load("launch/factory_cell.yaml", ["episodes:=1", "seed:=1"]), runs_dir=tmp_path / "a")
    b = run_scenario(load("launch/factory_cell.yaml", ["episodes:=1", "seed:=2"]), runs_dir=tmp_path / "b")
    arrivals = [[(e["t"], e["part_type"]) for e in read_events(r.run_dir) if e["kind"] == "part_arrival"]
                for r in (a, b)]
    assert arrivals[0] != arrivals[1]


def test_policy_spec_mismatch_fails_before_any_episode(tmp_path):
    scenario = load("launch/factory_cell.yaml", ["episodes:=1", "policy.args:={robot: sia10f}"])
    with pytest.raises(SpecMismatch, match=r"policy 'expert-sia10f' for robot 'arm1' \(gp7, 6 joints\): "
                       r"observation 'observation.state' declared float32\[8\], the cell provides float32\[7\]"):
        run_scenario(scenario, runs_dir=tmp_path)
    (run_dir,) = tmp_path.iterdir()
    assert not (run_dir / "metrics.json").exists()
    events = read_events(run_dir)
    assert [e["kind"] for e in events] == ["run_aborted"]
    assert events[0]["reason"].startswith("SpecMismatch: policy 'expert-sia10f' for robot 'arm1'")


def test_episode_is_cut_at_max_episode_s(tmp_path):
    result = run_scenario(one_of_each(tmp_path, "sim.max_episode_s:=4"), runs_dir=tmp_path)
    episode = result.metrics["episode_results"][0]
    assert episode["end_reason"] == "max_episode_s reached" and not episode["success"]
    assert episode["duration_s"] == pytest.approx(4.0, abs=0.01)


def test_realtime_mode_reports_wake_up_error_and_missed_cycles(tmp_path):
    parts = "[{t: 0.0, type: module}]"
    scenario = load("launch/factory_cell.yaml", ["episodes:=1", "sim.realtime:=true", "sim.max_episode_s:=1.5",
                                                  "workload.random:=null", f"workload.parts:={parts}"])
    result = run_scenario(scenario, runs_dir=tmp_path)
    control = result.metrics["control"]
    assert control["mode"] == "realtime"
    assert control["jitter_us_p99"] is not None and control["jitter_us_p99"] >= 0
    assert control["jitter_us_max"] >= control["jitter_us_p99"] >= control["jitter_us_p50"]
    assert isinstance(control["missed_cycles"], int)
    assert result.metrics["episode_results"][0]["duration_s"] == pytest.approx(1.5, abs=0.01)


def test_live_subscribers_get_the_same_events_as_the_file(tmp_path):
    seen = {}

    def hook(stream):
        seen["sub"] = stream.subscribe(maxlen=100000)
        seen["stream"] = stream

    result = run_scenario(one_of_each(tmp_path), runs_dir=tmp_path, events_hook=hook)
    live = []
    while (event := seen["sub"].get(timeout_s=0)) is not None:
        live.append(event)
    assert live == read_events(result.run_dir)
    snapshot = seen["stream"].snapshot()
    assert set(snapshot["robots"]["arm1"]) == {"joint_pos", "setpoint", "state", "suction"}
    assert len(snapshot["robots"]["arm1"]["joint_pos"]) == 6


def test_no_state_snapshot_is_built_while_nobody_subscribes(tmp_path):
    streams = []
    run_scenario(one_of_each(tmp_path), runs_dir=tmp_path, events_hook=streams.append)
    assert not streams[0].state_wanted
    assert streams[0].snapshot() == {}


def test_a_slow_subscriber_loses_the_oldest_events_not_the_run(tmp_path):
    subs = []
    result = run_scenario(one_of_each(tmp_path), runs_dir=tmp_path,
                          events_hook=lambda stream: subs.append(stream.subscribe(maxlen=3)))
    kept = [subs[0].get(timeout_s=0) for _ in range(3)]
    assert [e["kind"] for e in kept] == [e["kind"] for e in read_events(result.run_dir)[-3:]]
    assert subs[0].dropped == len(read_events(result.run_dir)) - 3


def test_record_true_keeps_the_episodes_as_a_lerobot_dataset(tmp_path):
    from testbed.data.lerobot import read_dataset, validate_dataset

    result = run_scenario(one_of_each(tmp_path, "record:=true", "sim.max_episode_s:=5"), runs_dir=tmp_path)
    dataset = read_dataset(result.run_dir / "dataset")
    assert dataset.num_episodes == 1
    assert dataset.num_frames == 5 * 20  # 5 s at the expert's 20 Hz
    assert validate_dataset(result.run_dir / "dataset") == []
    frames = dataset.episode(0)
    assert frames["observation.state"].shape == (100, 7) and frames["action"].shape == (100, 7)


def test_two_robot_models_share_one_vectorized_loop(tmp_path):
    import pyarrow.parquet as pq

    result = run_scenario(load("launch/two_robots.yaml", ["episodes:=1"]), runs_dir=tmp_path)
    assert result.metrics["control"]["robots"] == 2
    places = [e for e in read_events(result.run_dir) if e["kind"] == "place"]
    assert {e["robot"] for e in places} == {"gp7_arm", "sia_arm"}
    assert all(e["correct"] for e in places)
    assert result.metrics["success_rate"] == 1.0
    trace = pq.read_table(result.run_dir / "joint_states.parquet").to_pydict()
    widths = {robot: len(pos) for robot, pos in zip(trace["robot"], trace["position"], strict=True)}
    assert widths == {"gp7_arm": 6, "sia_arm": 7}


def test_overlapping_chunks_are_merged_by_the_configured_rule(tmp_path):
    import numpy as np
    import pyarrow.parquet as pq

    commands = {}
    for rule in ("latest", "average"):
        result = run_scenario(one_of_each(tmp_path, f"policy.merge:={rule}", "sim.max_episode_s:=6"),
                              runs_dir=tmp_path / rule)
        commands[rule] = np.asarray(pq.read_table(result.run_dir / "joint_states.parquet").column("command")
                                    .to_pylist())
        assert result.metrics["collisions"] == 0
    assert commands["latest"].shape == commands["average"].shape
    assert not np.allclose(commands["latest"], commands["average"])  # averaging smooths the replanned rows


def test_reduced_speed_mode_holds_a_full_speed_policy_to_the_limit(tmp_path):
    import numpy as np
    import pyarrow.parquet as pq

    from testbed.control.kinematics import KinematicChain
    from testbed.robots import load_robot

    overrides = ["cell.robots[0].controller.reduced_speed:=true", "sim.max_episode_s:=120"]
    result = run_scenario(one_of_each(tmp_path, *overrides), runs_dir=tmp_path)
    events = read_events(result.run_dir)
    assert not [e for e in events if e["kind"] == "protective_stop"] and result.metrics["safety_stops"] == 0
    limited = [e for e in events if e["kind"] == "tcp_speed_limited"]
    assert limited and all(e["limit_m_s"] == 0.25 and e["commanded_bound_m_s"] > 0.25 for e in limited)
    assert result.metrics["success_rate"] == 1.0
    # the set-points' TCP, sampled at 20 Hz: never faster than the limit on average over a sample
    model = load_robot("gp7")
    chain = KinematicChain.from_urdf(model.urdf_path, model.tcp_link)
    table = pq.read_table(result.run_dir / "joint_states.parquet").to_pydict()
    xyz = np.array([chain.forward(np.asarray(q))[:3, 3] for q in table["command"]])
    speeds = np.linalg.norm(np.diff(xyz, axis=0), axis=1) / np.diff(np.asarray(table["t_s"]))
    assert 0.15 < speeds.max() <= 0.25


def test_reduced_speed_cell_runs_with_a_policy_that_respects_it(tmp_path):
    import numpy as np
    import pyarrow.parquet as pq

    overrides = ["cell.robots[0].controller.reduced_speed:=true", "policy.args:={tcp_speed_m_s: '0.22'}",
                 "sim.max_episode_s:=120"]
    result = run_scenario(one_of_each(tmp_path, *overrides), runs_dir=tmp_path)
    assert result.metrics["success_rate"] == 1.0 and result.metrics["safety_stops"] == 0
    table = pq.read_table(result.run_dir / "joint_states.parquet").to_pydict()
    xyz = np.asarray(table["tcp_pose_world"])[:, :3]
    speeds = np.linalg.norm(np.diff(xyz, axis=0), axis=1) / np.diff(np.asarray(table["t_s"]))
    assert speeds.max() < 0.25  # the measured TCP, sampled at 20 Hz, stayed under the collaborative limit


def test_a_policy_asking_for_the_overhead_camera_gets_live_frames(tmp_path):
    import numpy as np

    from testbed.data.lerobot import read_dataset

    overrides = ["episodes:=1", "sim.max_episode_s:=3", "record:=true", "policy:={builtin: "
                 "'testbed.bridge.reference:HoldPolicy', args: {image: '96'}}"]
    result = run_scenario(load("launch/factory_cell.yaml", overrides), runs_dir=tmp_path)
    frames = read_dataset(result.run_dir / "dataset").episode(0)["observation.images.overhead"]
    assert frames.shape == (30, 96, 96, 3) and frames.dtype == np.uint8
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).sum() > 0  # parts moved on the belt


def test_a_failed_run_keeps_the_episodes_it_recorded(tmp_path):
    from testbed.data.lerobot import read_dataset
    from testbed.data.record import lerobot_recorder
    from testbed.errors import DatasetError

    class DiskFull:
        """A recorder that fails part-way through the second episode."""

        def __init__(self, inner):
            self.inner, self.frames = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def add_frame(self, frame, timestamp_s):
            self.frames += 1
            if self.frames == 150:
                raise DatasetError("disk full")
            self.inner.add_frame(frame, timestamp_s)

    make = lerobot_recorder(tmp_path / "dataset")
    loaded = load("launch/factory_cell.yaml", ["episodes:=2", "sim.max_episode_s:=6", *LOCAL_POLICY])
    with pytest.raises(DatasetError, match="disk full"):
        run_scenario(loaded, runs_dir=tmp_path / "runs", make_recorder=lambda spec, model: DiskFull(make(spec, model)))
    dataset = read_dataset(tmp_path / "dataset")
    assert dataset.num_episodes == 1 and dataset.num_frames == 120  # episode 0 whole, episode 1 dropped
    (run_dir,) = (tmp_path / "runs").iterdir()
    events = read_events(run_dir)
    assert events[-1]["kind"] == "run_aborted" and events[-1]["reason"] == "DatasetError: disk full"
    assert (run_dir / "joint_states.parquet").is_file()


def test_a_policy_that_crashes_stops_the_robot_and_the_run_goes_on(tmp_path):
    overrides = ["episodes:=2", "sim.max_episode_s:=3", "policy:={builtin: 'testbed.bridge.reference:HoldPolicy', "
                 "args: {fault: raise}}"]
    result = run_scenario(load("launch/factory_cell.yaml", overrides), runs_dir=tmp_path)
    timeouts = [e for e in read_events(result.run_dir) if e["kind"] == "policy_timeout"]
    assert timeouts and "raised" in timeouts[0]["reason"]
    assert [e["end_reason"] for e in result.metrics["episode_results"]] == ["protective_stop"] * 2


def test_each_robot_runs_at_its_own_speed_scale(tmp_path):
    import numpy as np
    import pyarrow.parquet as pq

    from testbed.robots import load_robot

    overrides = ["episodes:=1", "sim.max_episode_s:=15", "cell.robots[1].controller.speed_scale:=0.3", *LOCAL_POLICY]
    result = run_scenario(load("launch/two_robots.yaml", overrides), runs_dir=tmp_path)
    trace = pq.read_table(result.run_dir / "joint_states.parquet").to_pydict()
    fastest = {}
    for robot in ("gp7_arm", "sia_arm"):
        rows = [i for i, name in enumerate(trace["robot"]) if name == robot]
        commands = np.array([trace["command"][i] for i in rows])
        times = np.array([trace["t_s"][i] for i in rows])
        fastest[robot] = (np.abs(np.diff(commands, axis=0)) / np.diff(times)[:, None]).max(axis=0)
    assert np.all(fastest["sia_arm"] <= load_robot("sia10f").velocity * 0.3 * (1 + 1e-6))
    assert np.any(fastest["gp7_arm"] > load_robot("gp7").velocity * 0.3)


FAILURES_WHILE_OPENING = {
    "unknown policy target": (["policy.serve:=no_such_module:Policy"], PolicyUnavailable,
                              "serve-policy 'no_such_module:Policy' exited"),
    "unreachable endpoint": (["policy.serve:=null", "policy.endpoint:=grpc://127.0.0.1:9", "policy.deadline_s:=0.5",
                              "policy.reconnect_s:=0.5"], PolicyUnavailable, "grpc://127.0.0.1:9"),
    "token variable unset": (["policy.serve:=null", "policy.endpoint:=grpc://127.0.0.1:9",
                              "policy.token_env:=TESTBED_TEST_UNSET_TOKEN"], ScenarioError,
                             "TESTBED_TEST_UNSET_TOKEN"),
}


@pytest.mark.parametrize("case", sorted(FAILURES_WHILE_OPENING))
def test_a_launch_that_fails_while_opening_its_drivers_ends_with_run_aborted(tmp_path, case):
    overrides, error, text = FAILURES_WHILE_OPENING[case]
    with pytest.raises(error, match=re.escape(text)):
        run_scenario(load("launch/factory_cell.yaml", ["episodes:=1", *overrides]), runs_dir=tmp_path)
    (run_dir,) = tmp_path.iterdir()
    events = read_events(run_dir)
    assert events[-1]["kind"] == "run_aborted"
    assert events[-1]["reason"].startswith(error.__name__) and text in events[-1]["reason"]
    assert (run_dir / "scenario.yaml").is_file() and not (run_dir / "metrics.json").exists()


def test_an_interrupted_run_ends_with_run_aborted_and_keeps_its_episodes(tmp_path):
    def interrupt_after_first_episode(stream):
        emit = stream.emit

        def emit_then_interrupt(kind, *args, **kwargs):
            emit(kind, *args, **kwargs)
            if kind == "episode_end":
                raise KeyboardInterrupt

        stream.emit = emit_then_interrupt

    with pytest.raises(KeyboardInterrupt):
        run_scenario(one_of_each(tmp_path, "episodes:=2", *LOCAL_POLICY), runs_dir=tmp_path,
                     events_hook=interrupt_after_first_episode)
    (run_dir,) = tmp_path.iterdir()
    kinds = [e["kind"] for e in read_events(run_dir)]
    assert kinds.count("episode_end") == 1 and kinds[-1] == "run_aborted"
    assert read_events(run_dir)[-1]["reason"] == "interrupted (KeyboardInterrupt)"


def test_runs_dir_that_is_a_file_is_refused_before_anything_is_written(tmp_path):
    not_a_dir = tmp_path / "runs"
    not_a_dir.write_text("")
    with pytest.raises(ScenarioError, match=r"--runs-dir .*runs: is a file, expected a directory"):
        run_scenario(one_of_each(tmp_path), runs_dir=not_a_dir)



def test_episode_subset_outside_the_scenario_is_refused(tmp_path):
    with pytest.raises(ScenarioError, match=r"episodes \[5\] are outside 0..1"):
        run_scenario(load("launch/factory_cell.yaml", ["episodes:=2", *LOCAL_POLICY]), runs_dir=tmp_path,
                     episodes=[5])


def _outcome_events(run_dir):
    """The run's events without what depends on the wall clock (timestamps, latencies)."""
    drop = ("wall", "latenc", "elapsed")
    return [{k: v for k, v in e.items() if not any(d in k for d in drop)} for e in read_events(run_dir)
            if e["kind"] not in ("run_start", "run_end")]


@pytest.mark.parametrize(("launch", "control_hz"), [("launch/factory_cell.yaml", "20"),
                                                   ("launch/factory_cell_randomized.yaml", "20"),
                                                   ("launch/factory_cell.yaml", "7")])
def test_calling_drivers_only_when_due_and_sending_only_changed_commands_changes_nothing(tmp_path, monkeypatch,
                                                                                           launch, control_hz):
    """The loop skips a policy driver until its ``next_step`` and sends motor commands only when the control
    loop's ``setpoint_version`` moved; a loop that calls every driver and sends every command each step (as the
    loop did before) gives the very same events. The randomized cell has parts caught moving; at 7 Hz a policy
    period (34.3 physics steps) is not a whole number of steps."""
    from testbed.control import ControlLoop
    from testbed.eval.drivers import PolicyDriver

    overrides = ["episodes:=2", *LOCAL_POLICY, f"policy.args.control_hz:='{control_hz}'"]
    lean = run_scenario(load(launch, overrides), runs_dir=tmp_path / "lean")
    monkeypatch.setattr(PolicyDriver, "_next_due", lambda self, ep, step, t: step + 1)
    counter = iter(range(1, 1 << 62))
    monkeypatch.setattr(ControlLoop, "setpoint_version", property(lambda self: next(counter)))
    every = run_scenario(load(launch, overrides), runs_dir=tmp_path / "every")
    assert [e["success"] for e in lean.metrics["episode_results"]] == [True, True]
    assert _outcome_events(lean.run_dir) == _outcome_events(every.run_dir)
