"""Every `datasets export` attempt is audited, with or without --audit: beside the dataset by default."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed.cli import main
from testbed.sites.audit import AuditLog, verify
from testbed.sites.export import default_audit_path

REPO = Path(__file__).resolve().parents[2]
KR_ORDERS = REPO / "datasets" / "kr_electronics_orders"


def records(path):
    assert verify(path).ok, verify(path).describe(path)
    return [json.loads(line) for line in path.read_text().splitlines()]


def files_of(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def kr(tmp_path):
    src = tmp_path / "store" / "kr_orders"
    shutil.copytree(KR_ORDERS, src)
    return src


@pytest.fixture
def closed(kr):
    """The KR log with terms that let no field leave."""
    card = (kr / "card.yaml").read_text()
    (kr / "card.yaml").write_text(card.replace("  export_allowed_classes:\n  - public\n", ""))
    return kr


def export(src, out, *extra):
    return main(["datasets", "export", str(src), "--to-site", "us-west:US", "--out", str(out), *extra])


def test_a_refused_export_without_audit_leaves_a_verifiable_record_beside_the_dataset(closed, tmp_path, capsys):
    before = files_of(closed)
    assert export(closed, tmp_path / "out") == 2
    assert "denied by rule kr-data-platform-terms" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    log = tmp_path / "store" / "kr_orders.audit.jsonl"
    assert default_audit_path(closed) == log
    (record,) = records(log)
    assert record["kind"] == "dataset_export_refused"
    assert record["to_site"] == "us-west" and record["to_jurisdiction"] == "US"
    assert record["source"] == str(closed) and record["out"] == str(tmp_path / "out")
    assert "denied by rule kr-data-platform-terms" in record["reason"]
    assert "timestamp" in {r["field"] for r in record["refused"]}
    assert files_of(closed) == before  # the dataset itself is not touched: its digest stays
    assert main(["sites", "verify", str(log)]) == 0
    assert main(["sites", "verify", str(closed)]) == 0  # a dataset directory: its export log
    assert "chain intact" in capsys.readouterr().out


def test_an_allowed_export_without_audit_is_recorded_beside_the_dataset(kr, tmp_path, capsys):
    assert export(kr, tmp_path / "a") == 0
    log = tmp_path / "store" / "kr_orders.audit.jsonl"
    assert f"audited: {log}" in capsys.readouterr().out
    assert export(kr, tmp_path / "b") == 0  # a second export continues the same chain
    first, second = records(log)
    assert (first["kind"], second["kind"]) == ("dataset_export", "dataset_export")
    assert (first["out"], second["out"]) == (str(tmp_path / "a"), str(tmp_path / "b"))
    assert first["dataset_kind"] == "order_log" and first["to_jurisdiction"] == "US"
    assert {f["field"]: f["action"] for f in first["fields"]}["operator_id"] == "pseudonymize"
    assert main(["sites", "verify", str(log)]) == 0


def test_audit_flag_still_chooses_the_file(kr, tmp_path):
    log = tmp_path / "officer" / "exports.jsonl"
    assert export(kr, tmp_path / "out", "--audit", str(log)) == 0
    assert [r["kind"] for r in records(log)] == ["dataset_export"]
    assert not default_audit_path(kr).exists()


def test_an_export_that_fails_is_recorded_too(kr, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert export(kr, tmp_path / "out") == 2
    (record,) = records(default_audit_path(kr))
    assert record["kind"] == "dataset_export_failed"
    assert "DatasetError" in record["error"] and "not an empty directory" in record["error"]
    assert record["out_written"] is False


@pytest.fixture
def read_only(tmp_path):
    """Make a directory unwritable, also for root (whose permission bits are ignored): chmod, else chattr +i."""
    made = []

    def make(path):
        path.chmod(0o555)
        made.append(("chmod", path))
        if os.access(path, os.W_OK):
            done = subprocess.run(["chattr", "+i", str(path)], capture_output=True) if shutil.which("chattr") else None
            if done is None or done.returncode != 0:
                pytest.skip("cannot make a directory read-only here (root without chattr +i)")
            made.append(("chattr", path))
        probe = path / ".probe"
        try:
            probe.write_text("x")
        except OSError:
            return path
        probe.unlink()
        pytest.skip(f"{path} stays writable")

    yield make
    for how, path in reversed(made):
        if how == "chattr":
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o755)


def test_an_unwritable_default_log_refuses_the_export_naming_the_path_and_the_flag(kr, tmp_path, read_only, capsys):
    read_only(tmp_path / "store")
    out = tmp_path / "out"
    assert export(kr, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(default_audit_path(kr)) in err and "--audit FILE" in err and "nothing was exported" in err
    assert not out.exists()
    assert not default_audit_path(kr).exists()
    log = tmp_path / "officer" / "exports.jsonl"
    assert export(kr, out, "--audit", str(log)) == 0  # the flag the message names works
    assert [r["kind"] for r in records(log)] == ["dataset_export"]


def test_two_logs_in_one_directory_keep_their_own_heads(tmp_path):
    for name in ("a.jsonl", "b.jsonl"):
        log = AuditLog(tmp_path / name)
        log.append("flow", name=name)
        log.detach()
    assert verify(tmp_path / "a.jsonl").ok, verify(tmp_path / "a.jsonl").describe(tmp_path / "a.jsonl")
    assert verify(tmp_path / "b.jsonl").ok
    assert sorted(p.name for p in tmp_path.glob("*.head")) == ["a.head", "b.head"]
