"""Sweeps across real worker processes and a real local Ray instance: one row per episode, same outcomes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from testbed.cli import main
from testbed.errors import ScenarioError
from testbed.eval.journal import OUTCOME_COLUMNS, RESULTS_JSONL, ROW_SCHEMA
from testbed.eval.sweep import parse_episode_id, policies, split_values, variations

REPO = Path(__file__).resolve().parents[2]
# the headline's launch file, with its own policy: the expert served by a policy server per worker
LAUNCH = "launch/factory_cell_randomized.yaml"
SWEEP = ["--sweep", "cell.conveyor.speed=0.1,0.2"]


def run_eval(runs: Path, *flags: str) -> Path:
    """Run `testbed eval` as a process; return its evaluation directory."""
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "eval", LAUNCH, "--episodes", "2",
                           *SWEEP, "--runs-dir", str(runs), *flags], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    return run_dir


def outcomes(run_dir: Path) -> dict[str, tuple]:
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    return {r["episode_id"]: tuple(r[c] for c in OUTCOME_COLUMNS) for r in rows}


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory) -> Path:
    return run_eval(tmp_path_factory.mktemp("w1"), "--workers", "1")


def test_sweep_gives_one_row_per_variation_and_episode(one_worker):
    table = pq.read_table(one_worker / "results.parquet")
    assert table.schema.equals(ROW_SCHEMA)
    rows = table.to_pylist()
    assert [r["episode_id"] for r in rows] == ["v0/default/0000", "v0/default/0001", "v1/default/0000",
                                              "v1/default/0001"]
    assert {r["variation_label"] for r in rows} == {"cell.conveyor.speed=0.1", "cell.conveyor.speed=0.2"}
    assert json.loads(rows[2]["overrides"]) == {"cell.conveyor.speed": "0.2"}
    assert all(r["cpu_s"] > 0 and r["wall_s"] > 0 and r["policy_latency_ms_p50"] is not None for r in rows)
    # each variation really reached the cell: the batches' own run records carry its belt speed
    speeds = {yaml.safe_load((run / "scenario.yaml").read_text())["cell"]["conveyor"]["speed"]
              for run in (one_worker / "workers").glob("factory_cell_randomized-*")}
    assert speeds == {0.1, 0.2}
    plan = json.loads((one_worker / "evaluation.json").read_text())
    assert plan["episode_ids"] == [r["episode_id"] for r in rows] and plan["seeds"] == [0]
    summary = json.loads((one_worker / "summary.json").read_text())
    assert [g["variation_label"] for g in summary["groups"]] == ["cell.conveyor.speed=0.1", "cell.conveyor.speed=0.2"]
    assert (one_worker / "plots" / "success_per_variation.png").stat().st_size > 0


def test_two_workers_give_the_same_outcomes_as_one(one_worker, tmp_path):
    two = run_eval(tmp_path, "--workers", "2")
    assert outcomes(two) == outcomes(one_worker)
    assert len({r["worker"] for r in pq.read_table(two / "results.parquet").to_pylist()}) == 2


def test_ray_local_gives_the_same_outcomes_as_local_workers(one_worker, tmp_path):
    ray_run = run_eval(tmp_path, "--workers", "2", "--ray", "local")
    assert outcomes(ray_run) == outcomes(one_worker)
    assert json.loads((ray_run / "metrics.json").read_text())["evaluation"]["backend"] == "ray"


def test_only_reproduces_a_recorded_row(one_worker, capsys):
    assert main(["eval", str(one_worker), "--only", "v1/default/0001"]) == 0
    assert "matches the recorded row" in capsys.readouterr().out
    (record,) = (one_worker / "reruns").glob("v1_default_0001-*.json")
    assert json.loads(record.read_text())["matches"] is True


def test_only_names_the_columns_that_differ_from_a_tampered_record(one_worker, tmp_path, capsys):
    tampered = tmp_path / one_worker.name
    tampered.mkdir()
    for name in ("evaluation.json", RESULTS_JSONL):
        (tampered / name).write_bytes((one_worker / name).read_bytes())
    lines = (tampered / RESULTS_JSONL).read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    (first,) = [r for r in rows if r["episode_id"] == "v0/default/0000"]
    placed = first["parts_placed"]
    first["parts_placed"] = placed - 1
    (tampered / RESULTS_JSONL).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", str(tampered), "--only", "v0/default/0000"]) == 1
    out = capsys.readouterr().out
    assert f"parts_placed: recorded {placed - 1}, now {placed}" in out and "DIFFERS" in out


def test_per_worker_policy_servers_are_reused_across_batches(tmp_path):
    # the launch file's own policy (serve: expert): 4 batches of one episode on 2 workers, one server each
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "eval", LAUNCH, "--episodes", "2", *SWEEP,
                           "--workers", "2", "--quiet", "--runs-dir", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    assert len(list((run_dir / "workers").glob("factory_cell_randomized-*"))) == 4  # one run record per batch
    assert len(list((run_dir / "workers" / "logs").glob("policy-*.log"))) == 2
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    assert len(rows) == 4


@pytest.mark.parametrize(("argv", "message"), [
    (["--sweep", "cell.conveyor.speed"], r"--sweep 'cell.conveyor.speed': expected key=v1,v2,..."),
    (["--sweep", "cell.conveyor.speed=0.1,,0.2"], r"empty value"),
    (["--sweep", "cell.conveyor.sped=0.1,0.2"], r"--sweep cell.conveyor.sped=0.1: .*sped"),
    (["--sweep", "cell.conveyor.speed=fast"], r"--sweep cell.conveyor.speed=fast: .*speed"),
    (["--sweep", "episodes=1,2"], r"episodes cannot be swept \(use --episodes N\)"),
    (["--policy", "expert"], r"--policy 'expert': expected NAME=ENDPOINT"),
    (["--policy", "a=http://x:1"], r"unknown endpoint 'http://x:1'"),
    (["--policy", "a=builtin:"], r"builtin: needs a target"),
    (["--policy", "a=builtin:expert", "--policy", "a=serve:expert"], r"the name 'a' is given more than once"),
    (["--policy", "a=grpc://h:1", "--policy-arg", "a.x=1"], r"policy 'a' is a remote endpoint"),
    (["--policy-arg", "b.x=1"], r"no --policy named 'b'"),
    # endpoints and targets are checked by the run's own parsers before a run directory exists
    (["--policy", "a=grpc://"], r"--policy 'a=grpc://': policy endpoint 'grpc://': expected grpc://host:port"),
    (["--policy", "a=grpc://h:port"], r"--policy 'a=grpc://h:port': policy endpoint 'grpc://h:port': bad port"),
    (["--policy", "a=ws://h"], r"--policy 'a=ws://h': policy.endpoint: expected ws://host:port"),
    (["--policy", "a=builtin:nosuch"], r"--policy 'a=builtin:nosuch': builtin:nosuch is not a policy the testbed "
                                       r"can build \(.*expected pkg.module:Class, 'expert' or 'bc:PATH'\)"),
    (["--policy", "a=serve:testbed.nosuch:Cls"], r"serve:testbed.nosuch:Cls is not a policy .*cannot import module"),
    (["--policy", "my.bc=builtin:expert", "--policy-arg", "my.xy.robot=gp7"],
     r"no --policy named 'my' or 'my.xy' \(given: my.bc\)"),
    (["--policy", "a=builtin:expert", "--policy-arg", "a.=1"], r"--policy-arg 'a.=1': expected NAME.key=value"),
    (["--episodes", "0"], r"--episodes: expected a positive number of episodes, got 0"),
    (["--policy-servers", "some"], r"--policy-servers: expected per-worker or shared, got 'some'"),
])
def test_bad_flags_are_one_clear_line_and_exit_2(tmp_path, capsys, argv, message):
    assert main(["eval", LAUNCH, *argv, "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    import re
    assert re.search(message, err), err
    assert not any(tmp_path.iterdir())  # nothing ran, nothing recorded


@pytest.mark.parametrize(("argv", "message"), [
    (["--only", "v0/default/0000"], r"--only: give the evaluation directory first"),
    (["EVAL", "--only", "v0-default-0"], r"--only 'v0-default-0': expected an episode id VARIATION/POLICY/EPISODE"),
    (["EVAL", "--only", "v9/default/0000"], r"--only v9/default/0000: not an episode of .*v0/default"),
    (["EVAL", "--only", "v0/default/0099"], r"episodes 0..1"),
    (["--resume", "NOT_EVAL"], r"not an evaluation directory \(no evaluation.json\)"),
])
def test_bad_only_and_resume_are_one_clear_line(one_worker, tmp_path, capsys, argv, message):
    argv = [str(one_worker) if a == "EVAL" else str(tmp_path) if a == "NOT_EVAL" else a for a in argv]
    assert main(["eval", *argv]) == 2
    import re
    assert re.search(message, capsys.readouterr().err)


def test_sweeps_cross_in_flag_order_and_values_read_like_overrides():
    swept = variations(["cell.conveyor.speed=0.1,0.2", "seed:=3,4"])
    assert [v.id for v in swept] == ["v0", "v1", "v2", "v3"]
    assert swept[1].label == "cell.conveyor.speed=0.1, seed=4"
    assert swept[1].overrides() == ["cell.conveyor.speed:=0.1", "seed:=4"]
    assert split_values("[1, 2],{a: 1},'x,y'") == ["[1, 2]", "{a: 1}", "'x,y'"]
    assert variations([])[0].label == "base"
    with pytest.raises(ScenarioError, match="already swept"):
        variations(["seed=1,2", "seed=3"])


def test_policies_become_launch_file_overrides():
    (bc, remote) = policies(["bc=serve:testbed.policies.bc:BCPolicy.load", "far=ws://h:8000"], ["bc.path=m.npz"])
    assert bc.overrides() == ["policy.builtin:=null", "policy.endpoint:=null", "policy.protocol:=testbed",
                              'policy.serve:="testbed.policies.bc:BCPolicy.load"', 'policy.args:={"path": "m.npz"}']
    assert "policy.protocol:=openpi" in remote.overrides()
    assert policies([])[0].name == "default" and policies([])[0].overrides() == []
    assert parse_episode_id("v12/bc/0007") == ("v12", "bc", 7)


def test_shared_policy_server_gives_the_same_outcomes_as_per_worker_servers(one_worker, tmp_path):
    shared = run_eval(tmp_path, "--workers", "2", "--policy-servers", "shared")
    assert outcomes(shared) == outcomes(one_worker)
    assert len(list((shared / "logs").glob("policy-default-*.log"))) == 1  # one server, started by the evaluation
    assert not (shared / "workers" / "logs").exists()  # no worker started one of its own


def test_resuming_a_finished_evaluation_runs_nothing_and_keeps_its_results(one_worker, tmp_path, capsys):
    copy = tmp_path / one_worker.name
    shutil.copytree(one_worker, copy)
    assert main(["eval", "--resume", str(copy), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "4/4 episode(s) journaled" in out and "0 episode(s) run" in out
    assert outcomes(copy) == outcomes(one_worker)
    assert len((copy / RESULTS_JSONL).read_text().splitlines()) == 4


def test_policy_args_go_to_the_longest_policy_name_they_start_with():
    # policy names may hold dots: my.bc.robot is the argument robot of my.bc, not bc.robot of a policy my
    (mine, my_bc) = policies(["my=builtin:expert", "my.bc=builtin:expert"], ["my.bc.robot=sia10f", "my.robot=gp7"])
    assert mine.args == {"robot": "gp7"} and my_bc.args == {"robot": "sia10f"}
    (only,) = policies(["my.bc=builtin:expert"], ["my.bc.robot=sia10f"])
    assert only.args == {"robot": "sia10f"}
