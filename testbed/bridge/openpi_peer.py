"""openpi's own websocket server as a test and benchmark peer, in its own virtualenv.

openpi-client pins ``numpy<2``, which clashes with the testbed, so openpi's
packages live in a virtualenv of their own, built from the pinned
``compat/openpi/requirements.txt`` the first time it is needed and kept in the
cache outside the clone (``~/.cache/testbed/venvs/openpi-<key>``, see
:mod:`testbed.venv_cache`) while that file is unchanged. :class:`OpenPiServer` runs
``compat/openpi/serve_policy.py`` (openpi's ``WebsocketPolicyServer`` with a
small test policy) in a child process on loopback.

This module needs a source checkout (it reads ``compat/openpi/``); the runtime
client, :class:`testbed.bridge.openpi_source.OpenPiActionSource`, does not.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from testbed.bridge.lifeline import LIFELINE_ENV, popen_with_lifeline
from testbed.errors import TestbedError
from testbed.venv_cache import VenvBuildError, cached_venv, venv_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPAT_DIR = REPO_ROOT / "compat" / "openpi"
REQUIREMENTS = COMPAT_DIR / "requirements.txt"

# Runs compat/openpi/serve_policy.py as ``python script.py`` would, after starting a thread that
# exits the process once the read end of the lifeline pipe sees end-of-file: the write end is
# only held by the testbed process that started the server, so it ends when that process is
# gone, however it died (the script itself stays free of testbed code).
_BOOTSTRAP = r"""
import os, runpy, sys, threading
fd = int(os.environ.pop("TESTBED_PARENT_PIPE_FD"))
os.set_inheritable(fd, False)
def watch():
    try:
        while os.read(fd, 4096):
            pass
        why = "the testbed process that started it is gone"
    except BaseException as exc:
        why = f"its parent watcher failed ({type(exc).__name__}: {exc})"
    sys.stderr.write(f"openpi peer server: {why}; exiting\n")
    sys.stderr.flush()
    os._exit(3)
threading.Thread(target=watch, name="parent-watcher", daemon=True).start()
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
"""
assert LIFELINE_ENV in _BOOTSTRAP


class OpenPiEnvError(TestbedError):
    """The openpi peer environment cannot be built or its server does not start."""


def openpi_venv_dir() -> Path:
    """Where the openpi virtualenv for the current ``compat/openpi/requirements.txt`` lives (built or not)."""
    return venv_dir("openpi", REQUIREMENTS)


def openpi_python() -> Path:
    """Path of the openpi virtualenv's python, building the virtualenv if it is missing or incomplete.

    Safe to call from several processes at once: one builds, the others wait for it.

    Raises:
        OpenPiEnvError: ``compat/openpi/requirements.txt`` is missing (no source checkout), or the
            build failed; the message names the pip command and the end of its output.
    """
    if not REQUIREMENTS.is_file():
        raise OpenPiEnvError(f"{REQUIREMENTS}: missing; the openpi peer needs a source checkout of the testbed")
    try:
        return cached_venv("openpi", REQUIREMENTS)
    except VenvBuildError as exc:
        raise OpenPiEnvError(f"building the openpi environment from {REQUIREMENTS} failed: {exc}") from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class OpenPiServer:
    """openpi's ``WebsocketPolicyServer`` with a test policy, in a child process on loopback.

    Args:
        policy: ``echo`` (state row + row index, as float64), ``hold`` (the
            state row repeated, float32), ``zeros``,
            ``nan``, ``wrong_shape`` (one column too many) or ``raise``.
        chunk: rows per reply.
        action_dim: columns per reply.
        state_key: the server-side key ``echo`` reads.
        action_key: the key the chunk is returned under.
        expect: server-side key -> (dtype, shape) the policy insists on;
            anything else makes it raise, which openpi reports as a text frame.
        metadata: the metadata frame.
        sleep_s: delay before each reply.
        hang_on: the request (1-based, counted over the server's life) before whose reply the
            whole server hangs for ``hang_s`` (openpi runs the policy on its event loop); 0 for none.
        hang_s: how long that request hangs.

    Use as a context manager; ``endpoint`` is ``ws://127.0.0.1:<port>``.
    """

    def __init__(
        self,
        policy: str = "echo",
        *,
        chunk: int = 10,
        action_dim: int = 7,
        state_key: str = "observation/state",
        action_key: str = "actions",
        expect: Mapping[str, tuple[str, Sequence[int]]] | None = None,
        metadata: Mapping[str, Any] | None = None,
        sleep_s: float = 0.0,
        hang_on: int = 0,
        hang_s: float = 0.0,
    ) -> None:
        self._args = [
            "--policy", policy, "--chunk", str(chunk), "--action-dim", str(action_dim),
            "--state-key", state_key, "--action-key", action_key, "--sleep-s", str(sleep_s),
            "--hang-on", str(hang_on), "--hang-s", str(hang_s),
            "--metadata", json.dumps(dict(metadata or {})),
        ]
        for key, (dtype, shape) in (expect or {}).items():
            self._args += ["--expect", f"{key}={dtype}:{','.join(str(int(d)) for d in shape)}"]
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lifeline: int | None = None  # write end of the pipe the child watches
        self.port = 0

    @property
    def endpoint(self) -> str:
        """``ws://127.0.0.1:<port>`` of the running server."""
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> str:
        """Start the server (building the virtualenv if needed); return its endpoint once healthy.

        Raises:
            OpenPiEnvError: the environment cannot be built or the server never became healthy.
        """
        python = openpi_python()
        script = COMPAT_DIR / "serve_policy.py"
        last_error = ""
        for _ in range(3):  # another process may take the free port before the server binds it
            port = self.port or free_port()
            # A file, not a pipe: a server logging tracebacks must never block on a full pipe.
            log = tempfile.TemporaryFile()  # noqa: SIM115 - kept open while the server runs, closed in stop()
            try:
                proc, lifeline_write = popen_with_lifeline(
                    [str(python), "-c", _BOOTSTRAP, str(script), "--port", str(port), *self._args],
                    {**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL, stderr=log)
            except BaseException:
                log.close()
                raise
            healthy = False  # and so on Ctrl-C while it starts: no server is left behind
            try:
                healthy = self._wait_healthy(proc, port, timeout_s)
            finally:
                if not healthy:
                    proc.kill()
                    proc.wait(timeout=10)
                    os.close(lifeline_write)
            if healthy:
                self._close_log()
                self._close_lifeline()
                self._proc, self._log, self._lifeline, self.port = proc, log, lifeline_write, port
                return self.endpoint
            log.seek(0)
            last_error = log.read().decode(errors="replace").strip()[-2000:]
            log.close()
        raise OpenPiEnvError(f"openpi server ({script}) did not become healthy: {last_error}")

    @staticmethod
    def _wait_healthy(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> bool:
        """Poll openpi's ``/healthz`` route until it answers 200 or the process exits."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if proc.poll() is not None:
                return False
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
                try:
                    conn.request("GET", "/healthz")
                    if conn.getresponse().status == 200:
                        return True
                finally:
                    conn.close()
            time.sleep(0.05)
        return False

    def log(self) -> str:
        """What the server process wrote to stderr so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Kill the server process at once (SIGKILL), as a crash would."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None
        self._close_lifeline()

    def stop(self) -> None:
        """Terminate the server process and wait for it."""
        if self._proc is None:
            self._close_log()
            self._close_lifeline()
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None
        self._close_log()
        self._close_lifeline()

    def __enter__(self) -> OpenPiServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def openpi_roundtrip(data: bytes) -> bytes:
    """Decode ``data`` with openpi-client's ``msgpack_numpy`` and re-encode it, in the openpi venv.

    Raises:
        OpenPiEnvError: openpi's decoder rejected ``data``.
    """
    done = subprocess.run(
        [str(openpi_python()), str(COMPAT_DIR / "codec_roundtrip.py")],
        input=data, capture_output=True, timeout=60,
    )
    if done.returncode != 0:
        raise OpenPiEnvError(f"openpi msgpack_numpy rejected the frame: {done.stderr.decode()[-1000:]}")
    return done.stdout
