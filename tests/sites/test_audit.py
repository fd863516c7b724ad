import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.sites.audit import AuditError, AuditLog, verify


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as audit:
        audit.append("audit_open", run_id="r1")
        for i in range(4):
            audit.append("flow", flow="observations", bytes=100 * i, messages=i)
    return path


def lines(path):
    return path.read_bytes().splitlines(keepends=True)


def write(path, parts):
    path.write_bytes(b"".join(parts))


def test_an_untouched_log_verifies(log):
    verdict = verify(log)
    assert verdict.ok and verdict.closed and verdict.lines == 6
    records = [json.loads(line) for line in lines(log)]
    assert [r["seq"] for r in records] == list(range(6))
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))


def test_an_edited_line_is_named(log):
    parts = lines(log)
    parts[2] = parts[2].replace(b'"bytes":100', b'"bytes":999')
    write(log, parts)
    verdict = verify(log)
    assert (verdict.ok, verdict.broken_line) == (False, 3) and "edited" in verdict.reason


def test_an_edit_with_a_recomputed_hash_breaks_the_next_line(log):
    from testbed.sites.audit import canonical, record_hash

    parts = lines(log)
    record = json.loads(parts[2])
    record["bytes"] = 999
    record["hash"] = record_hash(record)
    parts[2] = (canonical(record) + "\n").encode()
    write(log, parts)
    assert verify(log).broken_line == 4


def test_a_deleted_line_is_named(log):
    parts = lines(log)
    del parts[3]
    write(log, parts)
    verdict = verify(log)
    assert verdict.broken_line == 4 and "deleted, inserted or reordered" in verdict.reason


def test_reordered_lines_are_named(log):
    parts = lines(log)
    parts[1], parts[2] = parts[2], parts[1]
    write(log, parts)
    assert verify(log).broken_line == 2


def test_truncating_the_last_line_is_detected(log):
    write(log, lines(log)[:-1])
    verdict = verify(log)
    assert not verdict.ok and verdict.broken_line == 6 and "cut from the end" in verdict.reason


def test_truncating_the_last_line_of_an_open_log_is_detected(tmp_path):
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    for i in range(3):
        audit.append("flow", n=i)
    assert verify(path).ok and not verify(path).closed
    write(path, lines(path)[:-1])
    verdict = verify(path)
    assert verdict.broken_line == 3 and "audit.head says the log has 3 line(s)" in verdict.reason


def test_a_partially_written_last_line_is_named(log):
    data = log.read_bytes()
    log.write_bytes(data[:-20])
    verdict = verify(log)
    assert verdict.broken_line == 6 and "partially written" in verdict.reason


def test_a_rewritten_but_equal_line_is_named(log):
    parts = lines(log)
    parts[1] = json.dumps(json.loads(parts[1]), indent=None).encode() + b"\n"  # spaces after separators
    write(log, parts)
    verdict = verify(log)
    assert verdict.broken_line == 2 and "canonical" in verdict.reason


def test_a_line_appended_after_closing_is_named(log):
    with open(log, "ab") as f:
        f.write(lines(log)[1])
    assert verify(log).broken_line == 7


def test_without_its_head_file_an_open_log_cannot_prove_its_end(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append("flow", n=1)
    (tmp_path / "audit.head").unlink()
    verdict = verify(path)
    assert not verdict.ok and "cut from the end" in verdict.reason


def test_a_log_is_continued_where_it_ended(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append("flow", n=1)
    again = AuditLog(path)
    assert again.append("flow", n=2)["seq"] == 1
    again.close()
    assert verify(path).ok and verify(tmp_path).lines == 3


def test_a_broken_or_closed_log_is_never_continued(log):
    with pytest.raises(AuditError, match="closed"):
        AuditLog(log)
    write(log, lines(log)[:-1])
    with pytest.raises(AuditError, match="cannot continue"):
        AuditLog(log)


def test_the_log_owns_seq_prev_and_hash(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(AuditError, match="seq"):
        audit.append("flow", seq=7)
    with pytest.raises(AuditError, match="not plain JSON"):
        audit.append("flow", value=float("nan"))
    assert (tmp_path / "audit.jsonl").read_bytes() == b""  # a refused record writes nothing


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_changed_byte_is_detected(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    with AuditLog(path) as audit:
        for i in range(3):
            audit.append("flow", flow="actions", bytes=i, fields=["action"])
    raw = bytearray(path.read_bytes())
    at = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
    raw[at] = new
    path.write_bytes(bytes(raw))
    assert not verify(path).ok


def test_a_log_from_before_per_log_heads_verifies_by_the_shared_head_only_where_it_matches(tmp_path):
    path = tmp_path / "exports.jsonl"
    AuditLog(path).append("flow", n=1)
    AuditLog(path).append("flow", n=2)
    (tmp_path / "exports.head").rename(tmp_path / "audit.head")  # where such a log kept its end
    assert verify(path).ok
    write(path, lines(path)[:1])  # its last line cut: the shared head no longer names this log's end
    verdict = verify(path)
    assert not verdict.ok and "no exports.head" in verdict.reason
