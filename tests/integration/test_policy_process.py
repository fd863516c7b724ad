"""A ``testbed serve-policy`` child as ``spawn_policy_server`` starts it: its output, its log, its shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from process_helpers import process_ended, wait_for

from testbed.bridge import GrpcActionSource, spawn_policy_server
from testbed.errors import PolicyUnavailable

HOLD = "testbed.bridge.reference:HoldPolicy"
CHATTY_BYTES = 64 * 1024

NOISY_POLICY = '''
import sys
from testbed.bridge.reference import HoldPolicy


class NoisyPolicy(HoldPolicy):
    def __init__(self) -> None:
        print("noisy says hello on stdout")
        print("noisy says hello on stderr", file=sys.stderr)
        super().__init__()
'''

ORCHESTRATOR = """
import sys, time
from pathlib import Path
from testbed.bridge import spawn_policy_server

server = spawn_policy_server("testbed.bridge.reference:HoldPolicy", {"close_message": "hold policy closed"},
                             log_path=Path(sys.argv[1]))
Path(sys.argv[2] + ".tmp").write_text(str(server.pid))
Path(sys.argv[2] + ".tmp").rename(sys.argv[2])  # the test never reads a half-written file
time.sleep(600)
"""


def _act(source: GrpcActionSource, step: int) -> None:
    source.submit({"observation.state": np.full(7, float(step), np.float32)}, step)
    chunk = source.result(10.0)
    assert chunk is not None and chunk.step == step


def test_a_policy_printing_64kb_per_call_keeps_answering(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "policy.log"
    with spawn_policy_server(HOLD, {"print_bytes": str(CHATTY_BYTES)}, log_path=log) as server, \
            GrpcActionSource(server.endpoint, deadline_s=5.0) as source:
        source.reset(0)
        for step in range(20):
            _act(source, step)  # an unread stdout pipe fills at 64 KB: this stalled on the first call
        assert server.exit_status() is None
    assert log.stat().st_size >= 20 * CHATTY_BYTES


def test_stdout_and_stderr_of_the_child_go_to_its_log(tmp_path: Path) -> None:
    (tmp_path / "noisy_policy.py").write_text(textwrap.dedent(NOISY_POLICY))
    log = tmp_path / "policy.log"
    with spawn_policy_server("noisy_policy:NoisyPolicy", env={"PYTHONPATH": str(tmp_path)}, log_path=log) as server:
        assert server.log_path == log
        text = log.read_text()
        assert "noisy says hello on stdout" in text and "noisy says hello on stderr" in text
        assert f"listening on 127.0.0.1:{server.port}" in server.log_tail()


def test_a_temporary_log_is_removed_when_the_server_stops() -> None:
    with spawn_policy_server(HOLD) as server:
        assert server.log_path.is_file()
    assert not server.log_path.exists()


def test_stopping_the_child_closes_every_policy_it_served(tmp_path: Path) -> None:
    log = tmp_path / "policy.log"
    server = spawn_policy_server(HOLD, {"close_message": "hold policy closed"}, log_path=log)
    with server:
        for _ in range(2):  # two client sessions, each with its own instance, plus the default instance
            with GrpcActionSource(server.endpoint) as source:
                source.reset(0)
                _act(source, 0)
    assert server.exit_status() == "exited with code 0"
    assert log.read_text().count("hold policy closed") == 3


def test_a_child_that_fails_to_start_names_its_log(tmp_path: Path) -> None:
    log = tmp_path / "policy.log"
    with pytest.raises(PolicyUnavailable, match=rf"(?s)exited; its output \({log}\) ends:.*cannot import module"):
        spawn_policy_server("no_such_team_module:Policy", log_path=log)
    assert "cannot import module 'no_such_team_module'" in log.read_text()


def test_a_killed_child_says_how_itprocess_ended(tmp_path: Path) -> None:
    with spawn_policy_server(HOLD, log_path=tmp_path / "policy.log") as server:
        server.proc.kill()
        server.proc.wait(10)
        assert server.exit_status() == "killed by SIGKILL"





def test_the_child_stops_and_closes_its_policies_when_its_parent_is_killed(tmp_path: Path) -> None:
    log, pid_file = tmp_path / "policy.log", tmp_path / "child.pid"
    with open(tmp_path / "orchestrator.out", "wb") as out:
        orchestrator = subprocess.Popen([sys.executable, "-c", ORCHESTRATOR, str(log), str(pid_file)],
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    child = 0
    try:
        assert wait_for(pid_file.exists, 60), (tmp_path / "orchestrator.out").read_text()
        child = int(pid_file.read_text())
        orchestrator.kill()  # SIGKILL: the orchestrator cannot clean up after itself
        orchestrator.wait(10)
        assert wait_for(lambda: process_ended(child), 30), "the orphaned policy server kept running"
    finally:
        if orchestrator.poll() is None:
            orchestrator.kill()
            orchestrator.wait(10)
        if child and not process_ended(child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
    text = log.read_text()
    assert f"parent process {orchestrator.pid} is gone; stopping" in text
    assert "hold policy closed" in text
