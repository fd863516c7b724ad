"""Start ``testbed serve-policy`` as a child process and find its port.

The lead's launch files use it for ``policy: {serve: expert}``: the policy runs in
its own process, reached over gRPC exactly like a remote one.

The child's stdout and stderr both go straight to a log file, never to a pipe: a
model that prints can never fill a pipe nobody reads and stall its own answers.
The ``listening on HOST:PORT`` line is found by reading that file. The child stops
by itself when this process is gone, however it died: it inherits the read end of a pipe
whose write end only this process holds (see ``testbed.bridge.server.watch_parent``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from testbed.bridge.handles import ServerHandle
from testbed.bridge.lifeline import popen_with_lifeline
from testbed.bridge.server import PARENT_PID_ENV
from testbed.errors import PolicyUnavailable

TOKEN_ENV = "TESTBED_POLICY_TOKEN"
LISTENING = "listening on "
_POLL_S = 0.01
_MAX_LINE = 4096


class PolicyServerProcess(ServerHandle):
    """A running ``testbed serve-policy`` child; ``endpoint`` is ``grpc://HOST:PORT``.

    Use as a context manager or call ``stop()``/``close()``: SIGTERM (the child then
    closes its policies), SIGKILL if it has not exited after ``grace_s``. Everything the
    child prints is in ``log_path``; a temporary log (no path given) is deleted on stop.

    Args:
        proc: the child.
        address: ``HOST:PORT`` the child announced.
        log_path: the file holding the child's stdout and stderr.
        temporary_log: delete ``log_path`` when stopping.
        grace_s: default time the child gets to exit after SIGTERM.
        lifeline_fd: the write end of the pipe whose end-of-file tells the child this process is gone;
            closed when stopping.
    """

    def __init__(self, proc: subprocess.Popen[bytes], address: str, log_path: Path, *, log_start: int = 0,
                 temporary_log: bool = False, grace_s: float = 5.0, lifeline_fd: int | None = None) -> None:
        host, _, port = address.rpartition(":")
        super().__init__(host, int(port), grace_s=grace_s)
        self.proc = proc
        self.log_path = log_path
        self._log_start = log_start
        self._temporary_log = temporary_log
        self._lifeline_fd = lifeline_fd

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def exit_status(self) -> str | None:
        """How the child ended (``exited with code 1``, ``killed by SIGKILL``), or None while it runs.

        Never blocks: it only asks the OS whether the child has ended.
        """
        code = self.proc.poll()
        return None if code is None else describe_exit(code)

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The last ``max_bytes`` of what this child printed (stdout and stderr)."""
        return _read_tail(self.log_path, self._log_start, max_bytes)

    def _shutdown(self, grace_s: float) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(grace_s)
        if self._lifeline_fd is not None:
            os.close(self._lifeline_fd)
            self._lifeline_fd = None
        if self._temporary_log:
            self.log_path.unlink(missing_ok=True)


def spawn_policy_server(
    target: str,
    args: Mapping[str, str] | None = None,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    extra_argv: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    startup_timeout_s: float = 30.0,
    log_path: Path | None = None,
) -> PolicyServerProcess:
    """Start ``python -m testbed.cli serve-policy TARGET`` and wait for its ``listening on`` line.

    Args:
        target: as for ``testbed serve-policy`` (``expert``, ``bc:PATH``, ``pkg.mod:Class``).
        args: constructor keyword arguments (``--arg key=value``).
        token: bearer token the server requires (passed through an environment variable).
        host: bind address.
        port: port, 0 for a free one.
        extra_argv: more ``serve-policy`` flags (e.g. TLS files).
        env: environment overrides for the child (e.g. PYTHONPATH).
        startup_timeout_s: how long to wait for the port.
        log_path: file that receives the child's stdout and stderr (appended to; parent folders are
            created); None for a temporary file deleted when the server is stopped.

    Raises:
        PolicyUnavailable: the child exited or did not announce its port in time (with the end of its log).
    """
    argv = [sys.executable, "-m", "testbed.cli", "serve-policy", target, "--host", host, "--port", str(port)]
    for key, value in (args or {}).items():
        argv += ["--arg", f"{key}={value}"]
    # unbuffered: what a policy printed just before it crashed is in the log
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", PARENT_PID_ENV: str(os.getpid())}
    if token:
        argv += ["--token-env", TOKEN_ENV]
        child_env[TOKEN_ENV] = token
    argv += list(extra_argv)
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="serve-policy-", suffix=".log")
        os.close(fd)
        path, temporary = Path(name), True
    else:
        path, temporary = Path(log_path), False
        path.parent.mkdir(parents=True, exist_ok=True)
    # the child stops by itself once this process is gone: see testbed.bridge.lifeline
    with open(path, "ab") as log:
        start = log.tell()
        proc, lifeline_write = popen_with_lifeline(argv, child_env, stdin=subprocess.DEVNULL, stdout=log,
                                                   stderr=subprocess.STDOUT)
    try:
        address = _wait_for_address(proc, path, start, startup_timeout_s)
    except BaseException:  # e.g. Ctrl-C while the model loads: no child is left behind
        PolicyServerProcess(proc, "?:0", path, temporary_log=temporary, lifeline_fd=lifeline_write).stop(1.0)
        raise
    if address is None:
        why = "exited" if proc.poll() is not None else f"did not announce a port in {startup_timeout_s:.0f} s"
        # leaves the log in place: read it now
        PolicyServerProcess(proc, "?:0", path, lifeline_fd=lifeline_write).stop(1.0)
        tail = _read_tail(path, start)
        if temporary:
            path.unlink(missing_ok=True)
        where = "" if temporary else f" ({path})"
        raise PolicyUnavailable(f"serve-policy {target!r} {why}; its output{where} ends:\n{tail}")
    return PolicyServerProcess(proc, address, path, log_start=start, temporary_log=temporary,
                               lifeline_fd=lifeline_write)


def _read_tail(path: Path, start: int, max_bytes: int = 4000) -> str:
    """The last ``max_bytes`` of ``path`` from offset ``start`` on ("" if it is gone)."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(start, size - max_bytes))
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _wait_for_address(proc: subprocess.Popen[bytes], path: Path, start: int, timeout_s: float) -> str | None:
    """Read the log from ``start`` until a ``listening on`` line appears; None if the child exits or time runs out."""
    # other libraries may print first (pybullet announces its build time): skip such lines
    end = time.monotonic() + timeout_s
    pending = b""
    in_long_line = False  # the announcement is short: a line longer than _MAX_LINE is not it
    with open(path, "rb") as log:
        log.seek(start)
        while True:
            exited = proc.poll() is not None  # read once more after an exit: the line may have come just before
            *lines, pending = (pending + log.read()).split(b"\n")
            for line in lines:
                if in_long_line:
                    in_long_line = False
                    continue
                text = line.decode(errors="replace").strip()
                if text.startswith(LISTENING):
                    return text[len(LISTENING):]
            if len(pending) > _MAX_LINE:
                pending, in_long_line = b"", True
            if exited or time.monotonic() >= end:
                return None
            time.sleep(_POLL_S)


def describe_exit(code: int) -> str:
    """How a child process ended, from its return code: ``killed by SIGKILL`` or ``exited with code 1``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
