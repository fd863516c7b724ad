import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_cli(tmp_path):
    env = {**os.environ, "TESTBED_KEYS_DIR": str(tmp_path / "keys")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "testbed.cli", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=300, env=env)

    return run


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


def test_sites_check_prints_every_flow_and_its_rule(run_cli):
    done = run_cli("sites", "check", "launch/trilateral.yaml")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "not legal advice" in out
    assert "jp-nagoya-cell <-> us-west-models: rtt 105 ms" in out
    for flow, field, rule in (("workload", "workload.t_s", "kr-data-platform-terms (contract DSA-HANBIT-2025-014)"),
                              ("observations", "observation.state", "jp-industrial-confidential"),
                              ("actions", "action", "us-industrial-confidential")):
        line = next(x for x in out.splitlines() if field in x and x.strip().startswith(flow))
        assert rule in line
    assert "safety at jp-nagoya-cell (JIS B 8433-1" in out
    assert "ok, 6 field(s) in 3 flow(s) may go" in out


def test_a_denied_flow_fails_the_check_with_one_line_naming_field_rule_and_citation(run_cli):
    line = one_error_line(run_cli("sites", "check", "launch/trilateral.yaml", "cell.cameras:=[{name: overhead}]"))
    assert line.startswith("error: observations field observation.images.overhead (personal)")
    assert "denied by rule jp-appi-28-personal-abroad (Act on the Protection of Personal Information (APPI) " \
           "art. 28)" in line


def test_a_launch_without_sites_checks_as_local(run_cli):
    done = run_cli("sites", "check", "launch/factory_cell.yaml")
    assert done.returncode == 0 and "one implicit local site" in done.stdout


def test_sites_verify_names_the_first_broken_line(run_cli, tmp_path):
    from testbed.sites.audit import AuditLog

    run_dir = tmp_path / "run"
    with AuditLog(run_dir / "audit.jsonl") as audit:
        for i in range(3):
            audit.append("flow", bytes=i)
    done = run_cli("sites", "verify", str(run_dir))
    assert done.returncode == 0 and "chain intact" in done.stdout
    path = run_dir / "audit.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1].replace(b'"bytes":1', b'"bytes":5') + b"".join(lines[2:]))
    line = one_error_line(run_cli("sites", "verify", str(run_dir)))
    assert line == f"error: {path}:2: content does not match its hash: the line was edited"


def test_datasets_export_sends_the_kr_log_to_a_us_site(run_cli, tmp_path):
    out = tmp_path / "us"
    done = run_cli("datasets", "export", "datasets/kr_electronics_orders", "--to-site", "us-west-models",
                   "--launch", "launch/trilateral.yaml", "--out", str(out), "--audit", str(tmp_path / "audit.jsonl"))
    assert done.returncode == 0, done.stderr
    assert "pseudonymize: operator_id  (kr-pipa-28-8-personal-abroad)" in done.stdout
    data = (out / "orders.csv").read_bytes()
    assert b"OP-" not in data and b"psn-" in data
    assert not {b"timestamp", b"work_order", b"line_speed_m_min"} & set(data.split(b"\n", 1)[0].split(b","))


def test_datasets_export_refused_by_the_terms_exits_2_with_the_citation(run_cli, tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir()
    source = REPO / "datasets" / "kr_electronics_orders"
    (closed / "orders.csv").write_bytes((source / "orders.csv").read_bytes())
    card = (source / "card.yaml").read_text().replace("  export_allowed_classes:\n  - public\n", "")
    (closed / "card.yaml").write_text(card)
    line = one_error_line(run_cli("datasets", "export", str(closed), "--to-site", "US", "--out", str(tmp_path / "o")))
    assert "denied by rule kr-data-platform-terms (Terms of use of Korean national data platforms" in line
    assert "lets no field leave" in line


def test_datasets_export_with_a_malformed_condition_is_one_line(run_cli, tmp_path):
    line = one_error_line(run_cli("datasets", "export", "datasets/kr_electronics_orders", "--to-site", "US",
                                  "--out", str(tmp_path / "o"), "--condition", "kr-pipa-28-8-personal-abroad=ok",
                                  "--audit", str(tmp_path / "audit.jsonl")))
    assert "expected RULE=KIND:REF" in line
