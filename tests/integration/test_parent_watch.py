"""A policy server (``serve-policy`` or the openpi peer) whose parent dies early does not outlive it.

Real processes: an orchestrator starts the server and is SIGKILLed right after the child
is started, while the child is still importing; the child must be gone within a bound.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from process_helpers import process_ended, wait_for

from testbed.bridge.server import PARENT_PID_ENV

GONE_WITHIN_S = 45.0  # the server stops (or exits at the latest PARENT_GONE_EXIT_S after): well inside this

# Starts the server, then kills itself the moment the child exists: the child is still importing
# then, long before it could look at its parent.
ORCHESTRATOR = """
import os, signal, subprocess, sys
from pathlib import Path

pid_file = Path(sys.argv[2])
_Popen = subprocess.Popen

class DieAfterStart(_Popen):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        pid_file.with_suffix(".tmp").write_text(str(self.pid))
        pid_file.with_suffix(".tmp").rename(pid_file)
        os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[1] == "serve-policy":
    from testbed.bridge import spawn_policy_server
    subprocess.Popen = DieAfterStart
    spawn_policy_server("testbed.bridge.reference:HoldPolicy", log_path=Path(sys.argv[3]))
else:
    from testbed.bridge.openpi_peer import OpenPiServer, openpi_python
    openpi_python()  # built (or found) first: the one child started below is the server
    subprocess.Popen = DieAfterStart
    OpenPiServer("echo").start()
"""





def _orphan(kind: str, tmp_path: Path) -> int:
    """Run the orchestrator for ``kind``; return the pid of the child it started before it was killed."""
    pid_file, log = tmp_path / "child.pid", tmp_path / "policy.log"
    orchestrator = subprocess.run([sys.executable, "-c", ORCHESTRATOR, kind, str(pid_file), str(log)],
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    assert orchestrator.returncode == -signal.SIGKILL, orchestrator.stderr.decode()[-2000:]
    return int(pid_file.read_text())


def _assert_gone(child: int, what: str) -> None:
    try:
        assert wait_for(lambda: process_ended(child), GONE_WITHIN_S), f"the orphaned {what} kept running"
    finally:
        if not process_ended(child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def test_serve_policy_whose_parent_dies_while_it_imports_stops(tmp_path: Path) -> None:
    child = _orphan("serve-policy", tmp_path)
    _assert_gone(child, "policy server")
    assert "is gone; stopping" in (tmp_path / "policy.log").read_text()


def test_openpi_peer_server_whose_parent_dies_stops(tmp_path: Path) -> None:
    child = _orphan("openpi", tmp_path)
    _assert_gone(child, "openpi peer server")


def test_serve_policy_started_for_a_parent_that_is_gone_exits_at_once() -> None:
    # the variable names a process that is not this child's parent (as after re-parenting)
    env = {**os.environ, PARENT_PID_ENV: str(os.getpid() + 1_000_000)}
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "serve-policy", "expert"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = proc.communicate(timeout=GONE_WITHIN_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert b"listening on" not in out
    assert b"is gone; stopping" in err
