"""The audit log: ``runs/<run_id>/audit.jsonl``, append-only and hash-chained.

Each line is one JSON object in canonical form (sorted keys, no spaces, UTF-8) with ``seq`` (0, 1, ...),
``prev`` (the previous line's hash; 64 zeros for the first) and ``hash``: SHA-256 of the line's canonical
JSON without ``hash``. Editing, deleting, inserting or reordering a line breaks the chain at that line.
Cutting lines off the end leaves a valid chain, so the writer also keeps a head file beside the log (the last
``seq`` and ``hash``, replaced atomically after every append; ``audit.head`` for ``audit.jsonl``, ``X.head`` for
``X.jsonl``) and ends a finished log with an ``audit_closed`` record; ``verify`` checks both.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from testbed.errors import TestbedError

AUDIT_FILENAME = "audit.jsonl"
HEAD_FILENAME = "audit.head"
GENESIS = "0" * 64
CLOSED = "audit_closed"


class AuditError(TestbedError):
    """An audit log cannot be continued (its chain is broken) or written."""


def head_path(path: str | Path) -> Path:
    """The head file of the log at ``path``: ``audit.head`` for ``audit.jsonl``, ``X.head`` for ``X.jsonl``.

    Each log has its own, so two logs in one directory (a run's and a dataset's export log) never share one.
    """
    path = Path(path)
    return path.with_suffix(".head") if path.suffix not in ("", ".head") else path.with_name(path.name + ".head")


def canonical(record: dict[str, Any]) -> str:
    """The canonical JSON of ``record``: sorted keys, no spaces, UTF-8 kept, no NaN."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 (hex) of ``record``'s canonical JSON without its ``hash`` key."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Verdict:
    """The result of checking an audit log.

    Args:
        ok: the chain is intact, complete as far as ``audit.head`` (or its closing record) tells.
        lines: complete lines read.
        broken_line: the first broken line (1-based), or None.
        reason: why it is broken, or a note on a sound log.
        closed: the log ends with its closing record.
    """

    ok: bool
    lines: int
    broken_line: int | None
    reason: str
    closed: bool = False

    def describe(self, path: str | Path) -> str:
        """One line for the command line."""
        if self.ok:
            return f"{path}: ok, {self.lines} line(s), chain intact ({self.reason})"
        return f"{path}:{self.broken_line}: {self.reason}"


class AuditLog:
    """Append-only writer of a hash-chained audit log.

    Opening an existing log checks its chain and continues it; a broken log is never continued.

    Args:
        path: the ``audit.jsonl`` file (a run directory's, normally).

    Raises:
        AuditError: the existing log is broken or already closed, or it cannot be read or created (names the
            path and the system's reason).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.head_path = head_path(self.path)
        self._seq = 0
        self._prev = GENESIS
        try:
            if self.path.exists() and self.path.stat().st_size > 0:
                verdict = verify(self.path)
                if not verdict.ok:
                    raise AuditError(f"cannot continue {verdict.describe(self.path)}")
                if verdict.closed:
                    raise AuditError(f"{self.path}: the log is closed; a new run writes a new log")
                last = json.loads(self.path.read_bytes().splitlines()[-1])
                self._seq, self._prev = last["seq"] + 1, last["hash"]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the run, closed by close()
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot open the audit log for appending ({exc.strerror or exc})") from exc
        # the head file is replaced through a temporary beside it: find out now, not after the first record
        if not os.access(self.head_path.parent, os.W_OK):
            self._file.close()
            raise AuditError(f"{self.path}: cannot write its head file in {self.head_path.parent} (not writable)")

    @property
    def closed(self) -> bool:
        """True once ``close`` has run."""
        return self._file.closed

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one record and return it (with ``seq``, ``prev`` and ``hash``).

        Args:
            kind: what it records, e.g. ``rule_decision``, ``flow``, ``safety``.
            fields: JSON-ready values; ``kind``, ``seq``, ``prev`` and ``hash`` are the log's own.

        Raises:
            AuditError: the log is closed, or a value cannot be written as JSON.
        """
        if self._file.closed:
            raise AuditError(f"{self.path}: the log is closed")
        reserved = {"kind", "seq", "prev", "hash"} & fields.keys()
        if reserved:
            raise AuditError(f"{self.path}: {', '.join(sorted(reserved))} are set by the log, not the caller")
        record = {"kind": kind, "seq": self._seq, "prev": self._prev, **fields}
        try:
            record["hash"] = record_hash(record)
            line = canonical(record) + "\n"
        except (TypeError, ValueError) as exc:
            raise AuditError(f"{self.path}: record {kind!r} is not plain JSON ({exc})") from exc
        self._file.write(line.encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._write_head(record)
        self._seq, self._prev = self._seq + 1, record["hash"]
        return record

    def close(self, **fields: Any) -> None:
        """End the log with an ``audit_closed`` record (idempotent)."""
        if self._file.closed:
            return
        self.append(CLOSED, lines=self._seq + 1, **fields)
        self._file.close()

    def detach(self) -> None:
        """Close the file without a closing record: a log kept across processes (a site's export log) is
        continued by the next ``AuditLog`` on it; ``audit.head`` still guards its end."""
        if not self._file.closed:
            self._file.close()

    def _write_head(self, record: dict[str, Any]) -> None:
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        tmp.write_text(canonical({"seq": record["seq"], "hash": record["hash"]}) + "\n", encoding="utf-8")
        os.replace(tmp, self.head_path)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verify(path: str | Path) -> Verdict:
    """Recompute an audit log's chain and name the first broken line.

    Args:
        path: ``audit.jsonl``, or a run directory holding one.

    Returns:
        the verdict; ``broken_line`` is 1-based.
    """
    path = Path(path)
    if path.is_dir():
        path = path / AUDIT_FILENAME
    if not path.is_file():
        return Verdict(False, 0, 1, f"no audit log at {path}")
    data = path.read_bytes()
    lines = data.split(b"\n")
    partial = lines.pop()  # after the last newline: empty when the file ends with a complete line
    prev = GENESIS
    count = 0
    last: dict[str, Any] | None = None
    for number, raw in enumerate(lines, start=1):
        problem = _check_line(raw, number - 1, prev)
        if problem is not None:
            return Verdict(False, number - 1, number, problem)
        last = json.loads(raw)
        prev, count = last["hash"], number
        if last["kind"] == CLOSED and number != len(lines):
            return Verdict(False, count, number + 1, "a line follows the closing record (appended after the log "
                                                     "was closed)")
    if partial:
        return Verdict(False, count, count + 1, "partially written (no line end): the writer stopped mid-line, or "
                                                "the line was cut")
    closed = last is not None and last["kind"] == CLOSED
    if closed and last is not None and last.get("lines") != count:
        return Verdict(False, count, count, f"the closing record counts {last.get('lines')} line(s), the log has "
                                            f"{count}")
    head_file = head_path(path)
    head = _read_head(head_file)
    if head is None and head_file.name != HEAD_FILENAME:
        # a log written before each log had a head file of its own kept its end in the directory's audit.head:
        # taken only where it names exactly this log's last line
        shared = _read_head(path.with_name(HEAD_FILENAME))
        if shared is not None and shared == (count - 1, prev):
            head = shared
    if head is None:
        if closed:
            return Verdict(True, count, None, "closed; no head file", closed=True)
        return Verdict(False, count, count + 1, f"no {head_file.name} and no closing record: lines may have been cut "
                                                "from the end")
    head_seq, head_hash = head
    if head_seq >= count:
        return Verdict(False, count, count + 1, f"missing: {head_file.name} says the log has {head_seq + 1} line(s) "
                                                f"ending in hash {head_hash[:12]}..., the file has {count} (cut from "
                                                "the end)")
    if head_seq != count - 1 or head_hash != prev:
        return Verdict(False, count, head_seq + 1, f"{head_file.name} says line {head_seq + 1} has hash "
                                                   f"{head_hash[:12]}..., the log does not match it")
    return Verdict(True, count, None, "closed" if closed else "open (the run has not closed it yet)", closed=closed)


def _check_line(raw: bytes, seq: int, prev: str) -> str | None:
    try:
        text = raw.decode("utf-8")
        record = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "not a JSON object (edited or corrupted)"
    if not isinstance(record, dict) or not {"kind", "seq", "prev", "hash"} <= record.keys():
        return "not an audit record (kind, seq, prev and hash required)"
    if record["seq"] != seq:
        return f"seq is {record['seq']!r}, expected {seq}: lines were deleted, inserted or reordered"
    if record["prev"] != prev:
        return "prev does not match the previous line's hash: lines were deleted, inserted or reordered"
    if record_hash(record) != record["hash"]:
        return "content does not match its hash: the line was edited"
    if canonical(record) != text:
        return "not in canonical form: the line was re-written"
    return None


def _read_head(path: Path) -> tuple[int, str] | None:
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
        return int(head["seq"]), str(head["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
